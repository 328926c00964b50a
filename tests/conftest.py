"""Shared fixtures: no test ever sees real Kaggle credentials or the user's HOME."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LocalChain:
    """A finished `kernelgen chain --local` of the bundled pipeline: its work folder, what it
    printed, and a copy of the report it wrote (a later run in the folder rewrites that)."""

    workdir: Path
    output: str
    report: Path


@pytest.fixture(scope="session")
def local_chain(tmp_path_factory: pytest.TempPathFactory) -> LocalChain:
    """One local chain (a minute or two on 2 cores) shared by every test of the session that needs one."""
    from click.testing import CliRunner

    from kernelgen.cli import main

    root = tmp_path_factory.mktemp("local-chain")
    home = tmp_path_factory.mktemp("local-chain-home")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("KAGGLE_") or name in ("KERNELGEN_ROOT", "KERNELGEN_WORKING"):
                patch.delenv(name)
        patch.setenv("HOME", str(home))
        patch.setenv("MPLBACKEND", "Agg")
        patch.chdir(root)
        work = root / "work"
        result = CliRunner().invoke(main, ["chain", "--local", "--workdir", str(work)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = root / "report-of-the-first-run.html"
    shutil.copyfile(work / "report.html", report)
    return LocalChain(work, result.output, report)
