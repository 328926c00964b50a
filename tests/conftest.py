"""Shared fixtures: no test ever sees real Kaggle credentials or the user's HOME."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Under pytest-xdist each of the workers gets one core's worth of threads: two workers
# sharing two cores with a full thread pool each would only fight over them. Set before
# PyTorch or TensorFlow load; kernels started by the tests inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_name, "1")

# PyTorch must load before TensorFlow in one process: the other order crashes when
# torchvision pulls in triton (both bring their own LLVM). Stage 1 tests import
# TensorFlow and stage 4 tests PyTorch, so load PyTorch's side first.
import torchvision  # noqa: F401


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    home = tmp_path_factory.mktemp("home")
    tmp = tmp_path_factory.mktemp("tmpdir")
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name in ("KERNELGEN_ROOT", "KERNELGEN_WORKING"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
