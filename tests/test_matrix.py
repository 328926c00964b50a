"""A matrix stage: one kernel per cell (fold, seed, ...), and a stage that blends them.

`tests/fixtures/foldpipe` fits a mean on three folds (`[matrix] fold = [0, 1, 2]`) and
blends the fold models it is given through `Layout.cells`. It runs here from its own
folder with the ML frameworks unimportable, and on Kaggle through the official client
against the stand-in.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kernelgen.backends.kaggle import KaggleBackend
from kernelgen.backoff import Backoff
from kernelgen.cli import main
from kernelgen.run.ledger import LEDGER_FILE, read_runs
from kernelgen.run.localdata import generate_data
from kernelgen.run.scheduler import ChainOptions
from kernelgen.spec.project import Project
from tests.fakes import FakeClock, run_chain
from tests.kaggle_standin import KaggleStandIn, KernelScript, PushedKernel, use_standin
from tests.test_own_pipeline import kernelgen_without_frameworks
from tests.test_remote_chain import notebook_executor
from tests.test_workspace import invoke, kernelgen_process, one_error_line, wait_for

FIXTURE = Path(__file__).parent / "fixtures" / "foldpipe"
USER = "fold-user"
KEY = "fold-secret-key-0123456789"
CELLS = [f"{USER}/fold-pipe-fit-fold-{k}" for k in range(3)]
BLEND = f"{USER}/fold-pipe-blend"


@pytest.fixture
def folds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = tmp_path / "fold-project"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(project)
    return project


def blended(work: Path) -> dict[str, object]:
    return json.loads((work / "outputs" / "stage2" / "blend.json").read_text())


@pytest.mark.slow
def test_a_local_chain_runs_every_cell_blends_them_all_and_a_rerun_redoes_nothing(tmp_path: Path, folds: Path) -> None:
    first = kernelgen_without_frameworks(tmp_path, folds, "chain", "--local", "--workdir", "work")
    assert first.returncode == 0, first.stderr
    for k in range(3):
        assert f"stage 1 fold-{k}: pushed local/fold-pipe-fit-fold-{k} version 1" in first.stdout
        model = json.loads((folds / "work" / "outputs" / "stage1" / f"fold-{k}" / "model.json").read_text())
        assert model["fold"] == k and model["heavy_modules"] == []
    summary = blended(folds / "work")
    assert summary["folds"] == [0, 1, 2] and summary["heavy_modules"] == []
    means = [json.loads((folds / "work" / "outputs" / "stage1" / f"fold-{k}" / "model.json").read_text())["mean"] for k in range(3)]
    assert summary["blend"] == pytest.approx(sum(means) / 3)
    assert len(set(means)) == 3  # each fold held out other rows
    report = (folds / "work" / "report.html").read_text()
    assert [f'data-cell="fold-{k}" data-status="complete"' in report for k in range(3)] == [True] * 3
    assert "stage 1: complete (3 cells: fold-0 complete, fold-1 complete, fold-2 complete)" in report

    again = kernelgen_without_frameworks(tmp_path, folds, "chain", "--local", "--workdir", "work")
    assert again.returncode == 0, again.stderr
    assert "pushed" not in again.stdout
    for label in ("stage 1 fold-0", "stage 1 fold-1", "stage 1 fold-2", "stage 2"):
        assert f"{label}: unchanged since version 1, skipped" in again.stdout

    two = kernelgen_without_frameworks(tmp_path, folds, "chain", "--local", "--workdir", "work", "--matrix", "stage1.fold=0,1")
    assert two.returncode == 0, two.stderr
    assert [line for line in two.stdout.splitlines() if ": pushed " in line] == [
        line for line in two.stdout.splitlines() if line.startswith("stage 2: pushed local/fold-pipe-blend version 2")
    ]
    assert blended(folds / "work")["folds"] == [0, 1]
    assert blended(folds / "work")["blend"] == pytest.approx(sum(means[:2]) / 2)

    runs = read_runs(folds / "work" / LEDGER_FILE)
    assert [sorted(run.stages) for run in runs] == [["1/fold-0", "1/fold-1", "1/fold-2", "2"]] * 2 + [["1/fold-0", "1/fold-1", "2"]]
    assert runs[0].metrics["stage1.held_out_error"] == pytest.approx(
        sum(runs[0].metrics[f"stage1.fold-{k}.held_out_error"] for k in range(3)) / 3
    )
    status = CliRunner().invoke(main, ["status", "--local", "--json", "--workdir", "work"])
    assert status.exit_code == 0, status.output
    assert [(row["stage"], row.get("cell", "")) for row in json.loads(status.output)] == [(1, "fold-0"), (1, "fold-1"), (2, "")]


def test_render_writes_a_kernel_per_cell_with_its_values_in_the_parameters_cell(folds: Path) -> None:
    result = CliRunner().invoke(main, ["render", "--all", "--out", "out", "--user", USER])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (folds / "out").iterdir()) == ["stage1-fold-0", "stage1-fold-1", "stage1-fold-2", "stage2"]
    for k in range(3):
        meta = json.loads((folds / "out" / f"stage1-fold-{k}" / "kernel-metadata.json").read_text())
        assert meta["id"] == CELLS[k] and meta["title"] == f"Fold Pipe Fit fold-{k}"
        notebook = json.loads((folds / "out" / f"stage1-fold-{k}" / meta["code_file"]).read_text())
        (parameters,) = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
        lines = "".join(parameters["source"]).splitlines()
        assert f"fold = {k}  # matrix" in lines and "n_folds = 3  # default" in lines
    blend = json.loads((folds / "out" / "stage2" / "kernel-metadata.json").read_text())
    assert blend["dataset_sources"] == [f"{USER}/fold-models"]
    one = CliRunner().invoke(main, ["render", "--stage", "1", "--out", "one", "--user", USER, "--matrix", "stage1.fold=2"])
    assert one.exit_code == 0, one.output
    assert [p.name for p in (folds / "one").iterdir()] == ["stage1-fold-2"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["render", "--all", "--out", "out", "--user", USER, "--matrix", "stage1.depth=1,2"], "depth"),
        (["render", "--all", "--out", "out", "--user", USER, "--matrix", "stage1.fold="], "stage1.fold"),
        (["render", "--all", "--out", "out", "--user", USER, "--matrix", "stage1.fold=5"], "fold must be in 0..2"),
        (["render", "--all", "--out", "out", "--user", USER, "--matrix", "stage9.fold=1"], "stage9"),
        (["push", "--stage", "1", "--local", "--workdir", "out", "--cell", "fold=7"], "fold=7"),
        (["run", "--stage", "1", "--root", "."], "--cell"),
    ],
)
def test_a_bad_matrix_or_cell_is_one_line_and_writes_nothing(folds: Path, args: list[str], needle: str) -> None:
    before = sorted(folds.rglob("*"))
    line = one_error_line(CliRunner().invoke(main, args))
    assert needle in line
    assert sorted(folds.rglob("*")) == before


def test_an_empty_matrix_in_the_metadata_is_refused_in_one_line(folds: Path) -> None:
    toml = folds / "kernel-metadata" / "stage1.toml"
    toml.write_text(toml.read_text().replace("fold = [0, 1, 2]", "fold = []"))
    line = one_error_line(CliRunner().invoke(main, ["render", "--all", "--out", "out", "--user", USER]))
    assert "matrix.fold must be a non-empty list" in line and "stage1.toml" in line
    assert not (folds / "out").exists()


@pytest.fixture
def kaggle(tmp_path: Path, folds: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleStandIn]:
    generate_data(Project.load(project_dir=folds).pipeline, tmp_path / "data")
    competition = (tmp_path / "data" / "input" / "fold-numbers").resolve()
    with KaggleStandIn(
        tmp_path / "server",
        executor=notebook_executor(competition, packages=("foldpipe",)),
        credentials={USER: KEY},
        kernel_script=KernelScript(running_polls=2),
    ) as server:
        use_standin(monkeypatch, server, username=USER, key=KEY)
        yield server
        assert server.count("CONNECT") == 0


def versions(server: KaggleStandIn) -> list[int]:
    return [len(server.kernel_versions(ref)) for ref in (*CELLS, BLEND)]


@pytest.mark.slow
def test_through_the_official_client_each_cell_is_a_kernel_and_jobs_caps_those_running(
    tmp_path: Path, folds: Path, kaggle: KaggleStandIn
) -> None:
    """Three cells and `--jobs 2`: never more than two kernels pushed and not yet ended."""
    peak: list[int] = []
    guard = threading.Lock()
    run_notebook = kaggle.executor

    def counting(pushed: PushedKernel):  # type: ignore[no-untyped-def]
        with guard:
            peak.append(sum(1 for k in kaggle.kernels.values() for v in k.versions if not v.finished))
        return run_notebook(pushed)

    kaggle.executor = counting
    clock = FakeClock()
    backend = KaggleBackend(sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
    options = ChainOptions(jobs=2, backoff=Backoff(10, 1.5, 60), stage_timeout=3600)
    result = run_chain(Project.load(project_dir=folds), backend, tmp_path / "work", clock, [1, 2], username=USER, options=options)

    assert result.stages == {1: "complete", 2: "complete"}
    assert versions(kaggle) == [1, 1, 1, 1]
    for k, ref in enumerate(CELLS):
        (version,) = kaggle.kernel_versions(ref)
        assert f"fold = {k}  # matrix" in version.pushed.text
    assert max(peak) == 2
    # the official client uploads each cell's folder as a zip; the blend read all three
    dataset = kaggle.dataset_dir(f"{USER}/fold-models")
    assert sorted(p.name for p in dataset.iterdir() if p.suffix == ".zip") == ["fold-0.zip", "fold-1.zip", "fold-2.zip"]
    assert blended(tmp_path / "work")["folds"] == [0, 1, 2]


@pytest.mark.slow
def test_a_chain_killed_with_sigkill_and_started_again_pushes_no_cell_twice(folds: Path, kaggle: KaggleStandIn) -> None:
    for ref in CELLS[:2]:
        kaggle.script_kernel(ref, KernelScript(stuck=True))
    first = kernelgen_process("chain", "--workdir", "work", "--jobs", "3")
    try:
        wait_for(lambda: versions(kaggle)[:3] == [1, 1, 1], first, "the push of every cell")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    for ref in CELLS[:2]:
        kaggle.kernel_versions(ref)[0].script = KernelScript(running_polls=0)
    again: Result = invoke("chain", "--workdir", "work", clock=FakeClock())
    assert again.exit_code == 0, again.output
    assert "stage 1 fold-0: resuming version 1" in again.output
    assert versions(kaggle) == [1, 1, 1, 1]
    assert blended(folds / "work")["folds"] == [0, 1, 2]


def test_a_profile_may_declare_a_matrix_and_the_command_line_replaces_it(folds: Path) -> None:
    toml = folds / "kernel-metadata" / "stage1.toml"
    toml.write_text(toml.read_text() + "\n[profiles.pair.matrix]\nfold = [1, 2]\n")
    paired = CliRunner().invoke(main, ["render", "--stage", "1", "--out", "pair", "--user", USER, "--profile", "pair"])
    assert paired.exit_code == 0, paired.output
    assert sorted(p.name for p in (folds / "pair").iterdir()) == ["stage1-fold-1", "stage1-fold-2"]
    chosen = CliRunner().invoke(
        main, ["render", "--stage", "1", "--out", "cli", "--user", USER, "--profile", "pair", "--matrix", "stage1.fold=0"]
    )
    assert chosen.exit_code == 0, chosen.output
    assert [p.name for p in (folds / "cli").iterdir()] == ["stage1-fold-0"]
