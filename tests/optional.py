"""Optional parts the tests need (torch, onnx, onnxruntime, scikit-learn): a test that cannot
import one fails, naming the command that installs it, rather than skipping."""

import importlib
from types import ModuleType

import pytest

DEV = "pip install -e '.[dev,ray]' (scripts/test.sh does)"


def need(module: str, install: str = DEV) -> ModuleType:
    """Gives the imported module, or fails the test with how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"this test needs {module} ({exc}): {install}", pytrace=False)
