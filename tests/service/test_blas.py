"""The BLAS thread policy: every core while one request computes, one thread each while several do."""

import subprocess
import sys

from threadpoolctl import threadpool_info

from service.blas import BlasPolicy


def blas_threads() -> int:
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_threads_follow_the_number_of_computing_requests():
    policy = BlasPolicy()
    full = blas_threads()
    with policy.computing():
        assert blas_threads() == full
        with policy.computing():
            assert blas_threads() == 1
            with policy.computing():
                assert blas_threads() == 1
        assert blas_threads() == full
    assert blas_threads() == full


def test_a_fixed_count_holds_whatever_computes():
    policy = BlasPolicy()
    full = blas_threads()
    try:
        policy.fix(1)
        with policy.computing():
            assert blas_threads() == 1
    finally:
        policy.fix(None)
    assert blas_threads() == full


def test_the_service_policy_finds_the_blas_whatever_is_imported_first():
    """`gradserve serve` imports service.cli first: its policy must still see numpy's BLAS (a
    controller made before numpy is loaded finds none, and then never limits it)."""
    code = "import service.cli; from service.blas import POLICY; print(POLICY.describe())"
    described = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               timeout=60).stdout
    assert "none found" not in described and " kernels, " in described


def test_the_description_names_the_kernels_and_what_chose_them(monkeypatch):
    policy = BlasPolicy()
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    assert f"{blas_threads()} threads)" in policy.describe()
    assert "OPENBLAS_CORETYPE" not in policy.describe()
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # OpenBLAS read it as it loaded; describe() reads it now
    if any(info["internal_api"] == "openblas" for info in threadpool_info()):
        assert policy.describe().endswith(
            "the kernels set by OPENBLAS_CORETYPE=Haswell (unset, OpenBLAS picks this CPU's)")
