"""Running stages here: notebooks in a fresh kernel, module runs, and atomic promotion of outputs.

The end-to-end tests run a real stage twice on the same hand-made inputs, once
as the imported module and once as its rendered notebook in a kernel where
`kernelgen` and `stages` cannot be imported, and require identical output files.
Each notebook execution starts a kernel (a few seconds on 2 cores).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kernelgen.backends import execute, local
from kernelgen.backends.base import RunStatus
from kernelgen.backends.execute import (
    ExecutionResult,
    check_jupyter_kernel,
    execute_notebook,
    kernel_env,
)
from kernelgen.backends.local import LocalBackend
from kernelgen.build.kernel import RenderedKernel
from kernelgen.build.validate import kernel_slug
from kernelgen.errors import ConfigError, StageRunError
from kernelgen.files import log_tail
from kernelgen.run.local import run_module, run_notebook, run_stage
from kernelgen.spec.config import Config
from kernelgen.spec.pipeline import load_pipeline
from kernelgen.spec.project import Project

COMPETITION = "severstal-steel-defect-detection"


def notebook_bytes(*sources: str) -> bytes:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nbformat.writes(notebook).encode("utf-8")


def project() -> Project:
    return Project(pipeline=load_pipeline(), config=Config())


def snapshot(folder: Path, *, skip: str = "") -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != skip
    }


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".working-"))


# --- execute_notebook ---------------------------------------------------------------------


@pytest.mark.slow
def test_execute_notebook_outputs_log_and_files(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    (root / "input" / "data").mkdir(parents=True)
    (root / "input" / "data" / "n.txt").write_text("21")
    working = tmp_path / "scratch"
    source = notebook_bytes(
        "import os\nfrom pathlib import Path\n"
        "root = Path(os.environ['KERNELGEN_ROOT'])\nprint('root', root)",
        "n = int((root / 'input' / 'data' / 'n.txt').read_text())\nprint('twice', 2 * n)",
        "Path('out.txt').write_text(os.environ['KERNELGEN_WORKING'])\n"
        "import sys\nprint('to stderr', file=sys.stderr)",
    )
    result = execute_notebook(source, root, working=working, timeout=60)
    assert result.ok, result.error
    assert result.error == ""
    assert f"root {root}\n" in result.log
    assert "twice 42\n" in result.log
    assert "to stderr\n" in result.log
    assert (working / "out.txt").read_text() == str(working)
    assert log_tail(result.log, 1) == "to stderr"


@pytest.mark.slow
def test_each_cells_output_reaches_the_live_log_as_soon_as_it_has_run(tmp_path: Path) -> None:
    live = tmp_path / "live.log"
    source = notebook_bytes(
        "print('first cell')",
        f"print('while the second runs:', open({str(live)!r}).read().strip())",
    )
    result = execute_notebook(source, tmp_path / "kaggle", timeout=60, live_log=live)
    assert result.ok, result.error
    assert "while the second runs: first cell\n" in result.log
    assert live.read_text() == "first cell\nwhile the second runs: first cell\n"


@pytest.mark.slow
def test_execute_notebook_guard_and_error_cell(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    source = notebook_bytes(
        "import json\n"
        "for name in ('kernelgen', 'stages', 'stages.lib.rle', 'kernelgen.cli', 'kernelgen.runtime'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "        print('imported', name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        print('blocked', name, '|', exc)",
        "print('before the error')\n1 / 0",
        "print('never reached')",
    )
    result = execute_notebook(source, root, timeout=60, packages=("stages",))
    assert not result.ok
    assert result.error == "ZeroDivisionError: division by zero"
    assert "imported" not in result.log
    for name in ("kernelgen", "stages", "stages.lib.rle", "kernelgen.cli", "kernelgen.runtime"):
        assert f"blocked {name} |" in result.log
    assert "(a kernel imports only the modules it writes)" in result.log
    assert "before the error\n" in result.log
    assert "ZeroDivisionError" in result.log
    assert "never reached" not in result.log
    assert (root / "working").is_dir()


@pytest.mark.slow
def test_the_guard_lets_through_what_the_kernel_writes(tmp_path: Path) -> None:
    """A package the kernel writes to a folder it adds to sys.path imports; the project's copy does not."""
    source = notebook_bytes(
        "import pathlib, sys, tempfile\n"
        "folder = tempfile.mkdtemp()\n"
        "pathlib.Path(folder, 'stages').mkdir()\n"
        "pathlib.Path(folder, 'stages', '__init__.py').write_text('WHERE = \"kernel\"')\n"
        "sys.path.insert(0, folder)\n"
        "import stages\n"
        "print('loaded from', stages.WHERE)",
    )
    result = execute_notebook(source, tmp_path / "kaggle", timeout=60, packages=("stages",))
    assert result.ok, result.log
    assert "loaded from kernel" in result.log


def test_the_guard_is_what_blocks_the_project(tmp_path: Path) -> None:
    """Without the guard, the kernel's interpreter could import both packages (editable install)."""
    env = kernel_env(tmp_path)
    assert "PYTHONPATH" not in env
    assert env["KERNELGEN_ROOT"] == str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "import kernelgen, stages.lib.rle; print('ok')"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.skip(
            "kernelgen is not installed in this interpreter, so only the guard test applies"
        )
    assert done.stdout.strip() == "ok"


def test_kernel_env_names_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("PYTHONSTARTUP", "/startup.py")
    env = kernel_env(tmp_path / "root", tmp_path / "w")
    assert "PYTHONPATH" not in env and "PYTHONSTARTUP" not in env
    assert env["KERNELGEN_WORKING"] == str(tmp_path / "w")
    assert env["MPLBACKEND"] == "Agg"


def test_kernel_env_drops_an_inherited_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KERNELGEN_WORKING left in the caller's shell must not redirect a kernel's outputs."""
    monkeypatch.setenv("KERNELGEN_WORKING", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("KERNELGEN_ROOT", str(tmp_path / "other-root"))
    env = kernel_env(tmp_path / "root")
    assert env["KERNELGEN_ROOT"] == str(tmp_path / "root")
    assert "KERNELGEN_WORKING" not in env


# --- the Jupyter kernel a notebook runs in ------------------------------------------------
# Another interpreter (an environment pinned to Kaggle's image, see
# scripts/kaggle_image_check.py) runs notebooks through its own kernelspec. These tests
# check that the name reaches nbclient without starting any kernel.


def test_execute_notebook_starts_the_named_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names: list[str] = []

    class RecordingClient:
        """Stands in for nbclient's NotebookClient: records the kernel name, runs nothing."""

        def __init__(self, notebook, **kwargs) -> None:  # type: ignore[no-untyped-def]
            names.append(kwargs["kernel_name"])

        def execute(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
            return None

    monkeypatch.setattr(execute, "NotebookClient", RecordingClient)
    assert execute_notebook(notebook_bytes("1"), tmp_path, kernel_name="pinned").ok
    assert execute_notebook(notebook_bytes("1"), tmp_path).ok
    assert names == ["pinned", "python3"]


def test_notebook_runs_pass_the_kernel_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kernelgen run --notebook` and the local backend (`chain --local`) both name it."""
    names: list[str] = []

    def fake_execute(notebook: bytes, root: Path, **kwargs) -> ExecutionResult:  # type: ignore[no-untyped-def]
        names.append(kwargs["kernel_name"])
        return ExecutionResult(True, "")

    monkeypatch.setattr("kernelgen.run.local.execute_notebook", fake_execute)
    monkeypatch.setattr(local, "execute_notebook", fake_execute)
    run_stage(project(), 5, tmp_path / "root", notebook=True, jupyter_kernel="pinned")

    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "kernel-metadata.json").write_text('{"id": "u/k", "code_file": "k.ipynb"}')
    (folder / "k.ipynb").write_bytes(notebook_bytes("1"))
    backend = LocalBackend(tmp_path / "store", {}, jupyter_kernel="pinned-too")
    backend.push(folder)
    backend.close()
    assert backend.status("u/k").status is RunStatus.COMPLETE
    assert names == ["pinned", "pinned-too"]


def test_check_jupyter_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "share" / "jupyter" / "kernels" / "pinned"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        '{"argv": ["/pinned/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"], '
        '"display_name": "pinned", "language": "python"}'
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    check_jupyter_kernel("pinned")
    with pytest.raises(ConfigError, match="no Jupyter kernel named 'nowhere'"):
        check_jupyter_kernel("nowhere")


# --- stage inputs -------------------------------------------------------------------------

SUBMISSION = (
    "ImageId,EncodedPixels,ClassId\n"
    "a.jpg,1 10,1\na.jpg,,2\na.jpg,100 5 200 5,3\na.jpg,,4\n"
    "b.jpg,5 5,1\nb.jpg,,2\nb.jpg,,3\nb.jpg,409599 2,4\n"
    "c.jpg,,1\nc.jpg,300 4,2\nc.jpg,,3\nc.jpg,,4\n"
)
TEST_SCORES = "ImageId,allMissing\na.jpg,0.99\nb.jpg,0.10\nc.jpg,0.5\n"
TRAIN_CSV = (
    "ImageId,ClassId,EncodedPixels\n"
    "t1.jpg,1,1 10\nt1.jpg,3,50 20\nt2.jpg,3,7 3\nt4.jpg,4,1000 50\nt6.jpg,2,5 5\n"
)
TRAIN_SCORES = (
    "ImageId,allMissing,validation\n"
    "t1.jpg,0.05,1\nt2.jpg,0.40,1\nt3.jpg,0.95,1\nt4.jpg,0.30,0\nt5.jpg,0.70,1\nt6.jpg,0.85,1\nt7.jpg,0.99,0\n"
)


def stage5_root(folder: Path) -> Path:
    (folder / "input" / "stage4").mkdir(parents=True)
    (folder / "input" / "stage2").mkdir(parents=True)
    (folder / "input" / "stage4" / "submission.csv").write_text(SUBMISSION)
    (folder / "input" / "stage2" / "test_missing_count.csv").write_text(TEST_SCORES)
    return folder


def stage3_root(folder: Path) -> Path:
    (folder / "input" / "stage2").mkdir(parents=True)
    (folder / "input" / COMPETITION).mkdir(parents=True)
    (folder / "input" / "stage2" / "train_missing_count.csv").write_text(TRAIN_SCORES)
    (folder / "input" / COMPETITION / "train.csv").write_text(TRAIN_CSV)
    return folder


# --- run_module and promotion -------------------------------------------------------------


def test_run_module_replaces_working(tmp_path: Path) -> None:
    root = stage5_root(tmp_path / "kaggle")
    (root / "working").mkdir()
    (root / "working" / "stale.txt").write_text("from an earlier run")
    spec = load_pipeline().stage(5)
    working = run_module(load_pipeline(), spec, project().params(5), root)
    assert working == root / "working"
    assert sorted(p.name for p in working.iterdir()) == ["submission.csv"]
    lines = (working / "submission.csv").read_text().splitlines()
    assert lines[0] == "ImageId,EncodedPixels,ClassId"
    assert lines[1:5] == ["a.jpg,,1", "a.jpg,,2", "a.jpg,,3", "a.jpg,,4"]
    assert lines[5] == "b.jpg,5 5,1"
    assert leftovers(root) == []


def test_failing_module_run_leaves_working_untouched(tmp_path: Path) -> None:
    root = stage5_root(tmp_path / "kaggle")
    (root / "input" / "stage2" / "test_missing_count.csv").unlink()
    (root / "working").mkdir()
    (root / "working" / "submission.csv").write_text("previous")
    with pytest.raises(StageRunError) as info:
        run_module(load_pipeline(), load_pipeline().stage(5), project().params(5), root)
    assert info.value.stage == 5
    assert str(info.value).startswith("stage 5 failed: ")
    assert "test_missing_count.csv" in str(info.value)
    assert snapshot(root / "working") == {"submission.csv": b"previous"}
    assert leftovers(root) == []


def test_unexpected_errors_keep_their_type_and_clean_up(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    (root / "working").mkdir(parents=True)
    (root / "working" / "keep.txt").write_text("kept")
    kernel = RenderedKernel(stage=9, kernel_id="u/k", code_file="k.ipynb", files={}, params=())
    with pytest.raises(KeyError):
        run_notebook(kernel, root)
    assert snapshot(root / "working") == {"keep.txt": b"kept"}
    assert leftovers(root) == []


@pytest.mark.slow
def test_failing_notebook_run_leaves_working_untouched(tmp_path: Path) -> None:
    root = stage5_root(tmp_path / "kaggle")
    (root / "input" / "stage4" / "submission.csv").write_text(
        "ImageId,EncodedPixels,ClassId\na.jpg,1 -4,1\n"
    )
    (root / "working").mkdir()
    (root / "working" / "submission.csv").write_text("previous")
    with pytest.raises(StageRunError) as info:
        run_stage(project(), 5, root, notebook=True, timeout=120)
    assert info.value.stage == 5
    assert str(info.value).startswith("stage 5 failed: InputError: ")
    assert "submission.csv" in str(info.value)
    assert "InputError" in info.value.log_tail
    assert snapshot(root / "working") == {"submission.csv": b"previous"}
    assert leftovers(root) == []


# --- module run and notebook run agree ----------------------------------------------------


def compare_runs(
    stage: int, make_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, bytes]:
    monkeypatch.chdir(tmp_path)
    by_module = make_root(tmp_path / "module")
    by_notebook = make_root(tmp_path / "notebook")
    module_out = run_stage(Project.load(), stage, by_module)
    notebook_out = run_stage(Project.load(), stage, by_notebook, notebook=True, timeout=300)
    slug = kernel_slug(load_pipeline().stage(stage).title)
    log = notebook_out / f"{slug}.log"
    assert log.is_file()
    files = snapshot(module_out)
    assert files, "the module run wrote nothing"
    assert snapshot(notebook_out, skip=log.name) == files
    assert leftovers(by_module) == [] and leftovers(by_notebook) == []
    return files | {"<log>": log.read_bytes()}


@pytest.mark.slow
def test_stage5_module_and_notebook_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = compare_runs(5, stage5_root, tmp_path, monkeypatch)
    assert set(files) == {"submission.csv", "<log>"}
    text = files["submission.csv"].decode()
    assert text.startswith("ImageId,EncodedPixels,ClassId\na.jpg,,1\n")
    assert "b.jpg,409599 2,4" in text and "c.jpg,300 4,2" in text
    assert b"blanked 1 of 3 test images" in files["<log>"]


@pytest.mark.slow
def test_stage3_module_and_notebook_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = compare_runs(3, stage3_root, tmp_path, monkeypatch)
    assert {"threshold_sweep.csv", "threshold.json"} <= set(files)
    assert any(name.endswith(".png") for name in files)
    assert (
        files["threshold_sweep.csv"]
        .decode()
        .startswith("threshold,tp,fp,tn,fn,accuracy,recall,precision,f1\n")
    )
    assert b"5 held-out train images, 3 with defects" in files["<log>"]
