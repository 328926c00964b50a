"""Shared fixtures: no test ever sees real Kaggle credentials or the user's HOME."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Under pytest-xdist each worker gets one thread: workers sharing two cores with a full
# thread pool each would only fight over them. Set before PyTorch or TensorFlow load;
# kernels started by the tests inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_name, "1")

# PyTorch must load before TensorFlow in one process: the other order crashes when
# torchvision pulls in triton (both bring their own LLVM). Stage 1 tests import
# TensorFlow and stage 4 tests PyTorch, so load PyTorch's side first. An environment
# without them (scripts/kaggle_image_check.py --no-ml) runs only the tests that need neither.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401


# Test files that share a module or session fixture must run on one worker, so the fixture
# runs once. They are also the suite's long poles, so they are spread over the workers by
# what they cost: seconds of one core for the whole unit, measured with
# `pytest --durations=0` on the 2-core CI machine. Longest first onto the least loaded
# worker ("lane"); every other test is handed out as workers come free.
SHARED_FIXTURE_UNITS: dict[str, tuple[tuple[str, ...], float]] = {
    "stage4": (("test_stage4.py",), 185.0),
    "stage1": (("test_stage1.py",), 155.0),
    "stage1-class": (("test_stage1_learning.py",), 130.0),
    "local-chain": (("test_local_chain.py", "test_report_browser.py"), 120.0),
    "synth": (("test_synth.py",), 10.0),
}


def lanes(workers: int) -> dict[str, int]:
    """Each shared-fixture unit's worker: longest first onto the least loaded one."""
    load = [0.0] * workers
    chosen = {}
    for name, (_, seconds) in sorted(SHARED_FIXTURE_UNITS.items(), key=lambda kv: -kv[1][1]):
        lane = min(range(workers), key=lambda index: (load[index], index))
        load[lane] += seconds
        chosen[name] = lane
    return chosen


@pytest.hookimpl(tryfirst=True)  # before xdist's worker turns groups into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist's `loadgroup`, put each shared-fixture unit in its worker's group."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return
    lane_of = {
        file: lane
        for name, lane in lanes(workers).items()
        for file in SHARED_FIXTURE_UNITS[name][0]
    }
    for item in items:
        lane = lane_of.get(item.path.name)
        if lane is not None:
            item.add_marker(pytest.mark.xdist_group(f"lane{lane}"))


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a pytest whose test ids pytest-xdist cannot group: the shared-fixture units'
    tests would be spread over the workers, each training its own model."""
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "dist", "no") != "loadgroup":
        return
    major, minor = (int(part) for part in pytest.__version__.split(".")[:2])
    if (major, minor) >= (9, 2):
        raise pytest.UsageError(
            f"pytest {pytest.__version__}: pytest-xdist's --dist loadgroup cannot group this "
            "pytest's tests; install the pytest that pyproject.toml's dev extra names (<9.2)"
        )


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


@contextlib.contextmanager
def isolated_for_the_scope(tmp_path_factory: pytest.TempPathFactory, cwd: Path) -> Iterator[None]:
    """What `_isolated_environment` gives a test, for a module or session fixture: no
    Kaggle variables, a HOME of its own, and `cwd` as the current folder."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("KAGGLE_") or name in ("KERNELGEN_ROOT", "KERNELGEN_WORKING"):
                patch.delenv(name)
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        patch.setenv("MPLBACKEND", "Agg")
        patch.chdir(cwd)
        yield


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
    with isolated_for_the_scope(tmp_path_factory, root):
        work = root / "work"
        result = CliRunner().invoke(main, ["chain", "--local", "--workdir", str(work)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = root / "report-of-the-first-run.html"
    shutil.copyfile(work / "report.html", report)
    return LocalChain(work, result.output, report)
