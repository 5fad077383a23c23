"""The BLAS thread policy: every core while one request computes, one thread each while several do."""

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
