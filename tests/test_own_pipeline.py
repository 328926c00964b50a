"""A pipeline of one's own: another folder, another package name, no ML framework.

`tests/fixtures/tinypipe` is a two-stage project whose library modules both define
`_check` and `COLUMNS`. The end-to-end test drives the `kernelgen` command in a child
process where torch, TensorFlow, Keras and smp cannot be imported, from the project's
own folder, through render, run, push (official client against the stand-in) and the
local chain.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernelgen.backends.base import RunStatus
from kernelgen.backends.execute import execute_notebook
from kernelgen.cli import main
from tests.kaggle_standin import (
    ExecutedKernel,
    KaggleStandIn,
    KernelScript,
    PushedKernel,
    use_standin,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tinypipe"
HEAVY = ("torch", "tensorflow", "keras", "segmentation_models_pytorch")
USER = "tiny-user"
KEY = "tiny-secret-key-0123456789"

BLOCKER = f"""
import sys


class _BlockFrameworks:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError(f"{{name}} is not installed here (blocked by the test)")
        return None


sys.meta_path.insert(0, _BlockFrameworks())
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    project = tmp_path / "my-project"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def kernelgen_without_frameworks(tmp_path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m kernelgen ARGS` in `cwd`, in a process where the ML frameworks do not import."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    return subprocess.run(
        [sys.executable, "-m", "kernelgen", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def notebook_executor(competition: Path):
    def execute(pushed: PushedKernel) -> ExecutedKernel:
        root = pushed.scratch_dir / "root"
        (root / "input").mkdir(parents=True)
        for slug in pushed.competition_sources:
            (root / "input" / slug).symlink_to(competition, target_is_directory=True)
        result = execute_notebook(pushed.text.encode(), root, working=root / "working", packages=("tinypipe",))
        return ExecutedKernel(RunStatus.COMPLETE if result.ok else RunStatus.ERROR, root / "working", result.log, result.error)

    return execute


@pytest.fixture
def kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleStandIn]:
    with KaggleStandIn(
        tmp_path / "server",
        executor=notebook_executor(tmp_path / "data" / "input" / "tiny-numbers"),
        credentials={USER: KEY},
        kernel_script=KernelScript(running_polls=0),
    ) as server:
        use_standin(monkeypatch, server, username=USER, key=KEY)
        yield server
        assert server.count("CONNECT") == 0


def test_the_blocker_blocks(tmp_path: Path, tiny: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\n")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    done = subprocess.run(
        [sys.executable, str(probe)], env={**os.environ, "PYTHONPATH": str(blocker)}, capture_output=True, text=True
    )
    assert done.returncode != 0 and "blocked by the test" in done.stderr


@pytest.mark.slow
def test_render_run_push_and_chain_from_the_project_folder(tmp_path: Path, tiny: Path, kaggle: KaggleStandIn) -> None:
    def ok(*args: str) -> str:
        done = kernelgen_without_frameworks(tmp_path, tiny, *args)
        assert done.returncode == 0, f"kernelgen {' '.join(args)}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    out = ok("render", "--all", "--out", "build", "--user", "me")
    assert "stage 1: " in out and "me/tiny-pipe-measure" in out
    notebook = json.loads((tiny / "build" / "stage2" / "stage2.ipynb").read_text())
    sources = ["".join(c["source"]) for c in notebook["cells"]]
    assert any(s.startswith("%%writefile {KERNEL_MODULES}/tinypipe/lib/table.py") for s in sources)
    assert any(s.startswith("%%writefile {KERNEL_MODULES}/tinypipe/lib/output.py") for s in sources)

    ok("synth", "--out", str(tmp_path / "data"), "--set", "rows=4")
    ok("run", "--stage", "1", "--root", str(tmp_path / "data"))
    stats = json.loads((tmp_path / "data" / "working" / "stats.json").read_text())
    assert stats["mean"] == 2.5 and stats["columns"] == ["id", "value"]
    ok("run", "--stage", "1", "--root", str(tmp_path / "data"), "--notebook", "--set", "scale=3")
    stats = json.loads((tmp_path / "data" / "working" / "stats.json").read_text())
    assert stats["mean"] == 7.5 and stats["heavy_modules"] == []

    pushed = ok("push", "--stage", "1", "--wait", "--workdir", "remote")
    assert f"stage 1: pushed {USER}/tiny-pipe-measure version 1" in pushed
    assert json.loads((tiny / "remote" / "outputs" / "stage1" / "stats.json").read_text())["mean"] == 2.5

    out = ok("chain", "--local", "--workdir", "work")
    submission = tiny / "work" / "outputs" / "stage2" / "submission.csv"
    assert out.strip().splitlines()[-2:] == [f"report: {tiny / 'work' / 'report.html'}", f"submission: {submission}"]
    sections = re.findall(r'<section id="([\w-]+)">', (tiny / "work" / "report.html").read_text())
    assert sections == ["stages", "panel-changes", "panel-runs", "panel-parameters"]  # the tool's panels; tinypipe has no hook
    # the smoke profile doubles: mean 2 * 3 = 6 over the 5 generated rows
    assert submission.read_text().splitlines() == ["id,prediction", "r1,-5.0", "r2,-4.0", "r3,-3.0", "r4,-2.0", "r5,-1.0"]
    stage2 = json.loads((tiny / "work" / "kernels" / "stage2" / "stage2.ipynb").read_text())
    assert "offset = 6.0  # from stage 1, version 1" in "".join(stage2["cells"][2]["source"])


def test_a_pipeline_without_local_data_says_what_to_set(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tiny / "kernel-metadata" / "pipeline.toml").unlink()
    monkeypatch.chdir(tiny)
    result = CliRunner().invoke(main, ["chain", "--local", "--workdir", "work"])
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("kernelgen: error: ") and len(message.splitlines()) == 1
    assert 'set data = "<folder>" in kernelgen.toml' in message and "[local] generator" in message
    assert not (tiny / "work" / "state.json").exists()
    assert not (tiny / "work" / "local-store").exists()


def test_a_configured_data_folder_replaces_the_generator(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tiny / "kernel-metadata" / "pipeline.toml").unlink()
    (tmp_path / "numbers").mkdir()
    (tiny / "kernelgen.toml").write_text(f'data = "{tmp_path / "numbers"}"\n')
    monkeypatch.chdir(tiny)
    from kernelgen.run.localdata import local_competition_data
    from kernelgen.spec.project import Project

    project = Project.load()
    assert local_competition_data(project.pipeline, project.config.data, tmp_path / "work" / "data") == {
        "tiny-numbers": tmp_path / "numbers"
    }


def test_the_project_is_found_by_option_config_or_folder(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runner = CliRunner()
    by_option = runner.invoke(main, ["render", "--stage", "1", "--out", "a", "--user", "me", "--project", str(tiny)])
    assert by_option.exit_code == 0, by_option.output
    assert "me/tiny-pipe-measure" in by_option.output
    (elsewhere / "kernelgen.toml").write_text(f'pipeline = "{tiny}"\nusername = "me"\n')
    by_config = runner.invoke(main, ["render", "--stage", "2", "--out", "b"])
    assert by_config.exit_code == 0, by_config.output
    assert "me/tiny-pipe-submit" in by_config.output
    (elsewhere / "kernelgen.toml").unlink()
    bundled = runner.invoke(main, ["render", "--stage", "5", "--out", "c", "--user", "me"])
    assert bundled.exit_code == 0 and "me/severstal-stage5-submission" in bundled.output
    missing = runner.invoke(main, ["render", "--stage", "1", "--out", "d", "--project", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "no kernel-metadata/ folder there" in missing.output


def test_a_bad_parameter_fails_at_render_and_writes_nothing(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny)
    result = CliRunner().invoke(main, ["render", "--all", "--out", "build", "--user", "me", "--set", "stage1.scale=0"])
    assert result.exit_code == 1
    assert result.output.strip() == "kernelgen: error: stage 1: scale must be at least 1, got 0"
    assert not (tiny / "build").exists()


@pytest.mark.slow
def test_a_local_chain_reads_a_dataset_from_the_producing_kernels_output(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = tiny / "kernel-metadata" / "datasets.toml"
    datasets.write_text(datasets.read_text() + 'via = "kernel"\n')
    monkeypatch.chdir(tiny)
    result = CliRunner().invoke(main, ["chain", "--local", "--workdir", "work"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "dataset tiny-stats: read from kernel local/tiny-pipe-measure/1 (nothing uploaded)" in result.output
    submission = tiny / "work" / "outputs" / "stage2" / "submission.csv"
    assert submission.read_text().splitlines()[:2] == ["id,prediction", "r1,-5.0"]
    meta = json.loads((tiny / "work" / "kernels" / "stage2" / "kernel-metadata.json").read_text())
    assert (meta["dataset_sources"], meta["kernel_sources"]) == ([], ["local/tiny-pipe-measure/1"])
    store = tiny / "work" / "local-store"
    assert not (store / "datasets").exists()
    mount = store / "kernels/local/tiny-pipe-submit/1/root/input/notebooks/local/tiny-pipe-measure"
    assert (mount / "stats.json").is_file()


@pytest.mark.parametrize("broken", ["tinypipe/measure.py", "tinypipe/lib/table.py"])
@pytest.mark.parametrize("command", [["render", "--stage", "1", "--out", "build", "--user", "me"], ["run", "--stage", "1", "--root", "data"]])
def test_a_syntax_error_anywhere_in_the_project_is_one_line(
    tiny: Path, monkeypatch: pytest.MonkeyPatch, broken: str, command: list[str]
) -> None:
    path = tiny / broken
    lines = path.read_text().splitlines()
    lines.insert(3, "def oops(:")
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tiny)
    if command[0] == "run":
        assert CliRunner().invoke(main, ["synth", "--out", "data"]).exit_code == 0
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"kernelgen: error: {path}:4: syntax error: invalid syntax"]
    assert not (tiny / "build").exists() and not (tiny / "data" / "working").exists()
