"""Shared fixtures: no test ever sees real Kaggle credentials or the user's HOME."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# PyTorch must load before TensorFlow in one process: the other order crashes when
# torchvision pulls in triton (both bring their own LLVM). Stage 1 tests import
# TensorFlow and stage 4 tests PyTorch, so load PyTorch's side first. An environment
# without them (scripts/kaggle_image_check.py --no-ml) runs only the tests that need neither.
with contextlib.suppress(ImportError):
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
