"""Where the C parts live (built by `make native`) and how Python loads them."""
from __future__ import annotations

import ctypes
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NATIVE = REPO / "build" / "native"


def native_path(name: str) -> Path:
    """Path of a built C part; a clear error if it has not been built."""
    path = NATIVE / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make native` (or `make setup`) in {REPO}")
    return path


def load_library(name: str) -> ctypes.CDLL:
    return ctypes.CDLL(str(native_path(name)))
