"""The ledger: every chain run and `push --wait` remembered in the work folder's SQLite file,
listed and compared by `kernelgen runs`, shown in the report, migrated forward, and never
a reason for a run to fail."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kernelgen.backoff import Backoff
from kernelgen.cli import main
from kernelgen.run.ledger import (
    LEDGER_FILE,
    MIGRATIONS,
    SCHEMA_VERSION,
    Ledger,
    StageEntry,
    migrate,
    read_runs,
)
from kernelgen.run.recording import RunRecorder
from kernelgen.run.scheduler import Chain, ChainOptions
from kernelgen.run.steps import Steps
from kernelgen.run.workspace import BackendKind, Workspace
from kernelgen.spec.project import Project
from tests.conftest import isolated_for_the_scope
from tests.fakes import CHAINPIPE, FakeBackend, FakeClock, open_workspace

HOURS = 3600.0
DURATIONS = {1: 6 * HOURS, 2: 0.5 * HOURS, 3: 60.0, 4: 8 * HOURS, 5: 120.0}


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(CHAINPIPE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(folder)
    return folder


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def two_runs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two local chains on one work folder, the second with stage 4's epochs changed; made
    once for the tests that only read them."""
    folder = tmp_path_factory.mktemp("two-runs") / "project"
    shutil.copytree(CHAINPIPE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    with isolated_for_the_scope(tmp_path_factory, folder):
        for extra in ([], ["--set", "stage4.epochs=5"]):
            done = invoke("chain", "--local", "--workdir", "work", *extra)
            assert done.exit_code == 0, done.output
    return folder


@pytest.fixture
def two_runs(two_runs_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(two_runs_folder)
    return two_runs_folder / "work"


@pytest.mark.slow
def test_two_local_chains_are_listed_with_parameters_and_metrics(two_runs: Path) -> None:
    listed = invoke("runs", "--json", "--workdir", "work")
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.output)
    assert [run["id"] for run in runs] == [2, 1]  # newest first
    second, first = runs
    assert (first["params"]["stage4.epochs"], second["params"]["stage4.epochs"]) == (3, 5)
    assert second["sources"]["stage4.epochs"] == "--set"
    assert first["metrics"]["stage4.val_score"] == pytest.approx(0.75)
    assert second["metrics"]["stage4.val_score"] == pytest.approx(1 - 1 / 6)
    assert first["stages"] == dict.fromkeys("12345", "complete")
    assert second["stages"] == {"1": "unchanged", "2": "unchanged", "3": "unchanged", "4": "complete", "5": "complete"}
    for run in runs:
        assert {"id", "started", "params", "metrics", "gpu_hours", "public_score"} <= set(run)
        assert (run["backend"], run["profile"], run["outcome"], run["public_score"]) == ("local", "smoke", "complete", None)
        assert run["gpu_hours"] == 0.0  # local runs draw no GPU time
    assert "dataset:local/stage2/1" in first["inputs"]["stage3"]
    assert "competition:chain-comp" in first["inputs"]["stage1"]

    assert json.loads(invoke("runs", "--json", "--last", "1", "--workdir", "work").output)[0]["id"] == 2
    table = invoke("runs", "--workdir", "work")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert re.fullmatch(r"run 2  \S+ \S+  chain  local  smoke  complete  GPU 0\.00 h", lines[0])
    assert lines[1:4] == [
        "  stages: 1, 2, 3 unchanged; 4, 5 complete",
        "  changed: stage4.epochs 3 -> 5",
        "  metrics: stage4.val_score 0.8333",
    ]
    assert lines[4].startswith("run 1 ") and "changed" not in lines[5]

    diff = invoke("runs", "diff", "1", "2", "--workdir", "work")
    assert diff.exit_code == 0, diff.output
    lines = [" ".join(line.replace("│", " ").split()) for line in diff.output.splitlines()]
    assert "parameter stage4.epochs 3 5" in lines
    assert any(line.startswith("metric stage4.val_score 0.75 0.8333") for line in lines)
    assert not any("stage1.epochs" in line for line in lines)


@pytest.mark.slow
def test_the_report_shows_the_runs(two_runs: Path) -> None:
    html = (two_runs / "report.html").read_text()
    section = html[html.index('<section id="panel-runs">'):]
    section = section[: section.index("</section>")]
    rows = re.findall(r'<tr><td class="num">(\d+)</td>', section)
    assert rows == ["2", "1"]
    assert 'alt="Metrics across runs: stage4.val_score"' in section
    assert "No run has both stage4.val_score and a public score yet." in section


def test_unknown_runs_and_an_absent_ledger(project_dir: Path) -> None:
    (project_dir / "work").mkdir()
    assert json.loads(invoke("runs", "--json", "--workdir", "work").output) == []
    refused = invoke("runs", "diff", "1", "2", "--workdir", "work")
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines() == [
        f"kernelgen: error: no run 1 in {project_dir / 'work' / LEDGER_FILE} (runs: none)"
    ]


def test_an_older_ledger_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    old = sqlite3.connect(path)
    migrate(old, path, upto=1)
    old.execute("INSERT INTO runs (started, command, backend, profile) VALUES ('2026-01-01T00:00:00+00:00', 'chain', 'kaggle', 'full')")
    old.execute("INSERT INTO metrics VALUES (1, 'stage4.val_dice', 0.61)")
    old.commit()
    old.close()
    assert [run.metrics for run in read_runs(path)] == [{"stage4.val_dice": 0.61}]  # readable as it is

    ledger = Ledger.open(path)
    assert ledger._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    ledger.start(started="2026-01-02T00:00:00+00:00", command="chain", backend="kaggle", profile="full",
                 git_commit=None, git_dirty=None)
    ledger.stage(StageEntry(stage=4, phase="complete", metrics={"stage4.val_dice": 0.66}))
    ledger.close()
    runs = read_runs(path)
    assert [(run.id, run.metrics) for run in runs] == [(1, {"stage4.val_dice": 0.61}), (2, {"stage4.val_dice": 0.66})]
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "submissions" in tables


def test_a_ledger_of_schema_2_gets_a_row_per_cell_and_keeps_its_stage_rows(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    old = sqlite3.connect(path)
    migrate(old, path, upto=2)
    old.execute("INSERT INTO runs (started, command, backend, profile) VALUES ('2026-01-01T00:00:00+00:00', 'chain', 'local', 'smoke')")
    old.execute("INSERT INTO stages VALUES (1, 4, 'complete', 'alice/seg', 3, 'NvidiaTeslaT4', 'latest', 60.0, 0.02)")
    old.execute("INSERT INTO params VALUES (1, 4, 'epochs', '2', 'profile')")
    old.commit()
    old.close()

    ledger = Ledger.open(path)
    ledger.start(started="2026-01-02T00:00:00+00:00", command="chain", backend="local", profile="smoke",
                 git_commit=None, git_dirty=None)
    for fold in (0, 1):
        ledger.stage(StageEntry(stage=4, phase="complete", cell=f"fold-{fold}", params={"fold": (fold, "matrix")}))
    ledger.close()
    first, second = read_runs(path)
    assert first.stages == {"4": "complete"} and first.params == {"stage4.epochs": 2}
    assert second.stages == {"4/fold-0": "complete", "4/fold-1": "complete"}
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(stages)")]
    assert "cell" in columns


def test_a_ledger_newer_than_this_kernelgen_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(Exception, match="newer than this kernelgen"):
        Ledger.open(path)


@pytest.mark.slow
def test_a_corrupt_ledger_is_one_line_and_the_run_still_completes(project_dir: Path) -> None:
    work = project_dir / "work"
    work.mkdir()
    (work / LEDGER_FILE).write_bytes(b"this is not a database" * 100)
    done = invoke("chain", "--local", "--workdir", "work")
    assert done.exit_code == 0, done.output
    assert done.output.strip().splitlines()[-1] == f"submission: {work / 'outputs' / 'stage5' / 'submission.csv'}"
    assert done.stderr.strip().splitlines() == [
        f"kernelgen: the ledger was not written: {work / LEDGER_FILE}: not a readable ledger (file is not a database)"
    ]
    listed = invoke("runs", "--workdir", "work")
    assert listed.exit_code == 1
    assert listed.stderr.strip().splitlines() == [
        f"kernelgen: error: {work / LEDGER_FILE}: not a readable ledger (file is not a database)"
    ]


class _Crash(Exception):
    pass


def test_a_crash_mid_run_leaves_the_rows_written_so_far(tmp_path: Path) -> None:
    project = Project.load(project_dir=CHAINPIPE)
    clock = FakeClock()
    backend = FakeBackend(clock, durations=DURATIONS)
    original = backend.status

    def status(kernel: str):  # type: ignore[no-untyped-def]
        if "stage2" in kernel:
            raise _Crash
        return original(kernel)

    backend.status = status  # type: ignore[method-assign]
    warnings: list[str] = []
    with open_workspace(project, backend, tmp_path, clock) as ws, pytest.raises(_Crash):
        steps = Steps(ws, username="alice")
        recorder = RunRecorder(steps, "chain", warnings.append)
        Chain(steps, options=ChainOptions(backoff=Backoff(10, 1.5, 60)), recorder=recorder).run([1, 2, 3, 4, 5])
    (run,) = read_runs(tmp_path / LEDGER_FILE)
    assert run.ended is None and run.outcome is None
    assert run.stages == {"1": "complete"}
    assert run.params == {"stage1.epochs": 45}
    assert run.gpu_hours == pytest.approx(DURATIONS[1] / 3600, abs=0.02)  # a GPU stage's polled run time
    assert warnings == []


@pytest.mark.slow
def test_push_wait_is_a_run_and_reads_work_beside_a_holder(project_dir: Path) -> None:
    pushed = invoke("push", "--stage", "1", "--local", "--wait", "--workdir", "work")
    assert pushed.exit_code == 0, pushed.output
    with Workspace.open(Project.load(), project_dir / "work", backend=BackendKind.LOCAL, command="chain"):
        listed = invoke("runs", "--json", "--workdir", "work")
    assert listed.exit_code == 0, listed.output
    (run,) = json.loads(listed.output)
    assert (run["command"], run["stages"], run["outcome"]) == ("push", {"1": "complete"}, "complete")


def test_metrics_that_are_not_numbers_are_left_out_with_a_warning(tmp_path: Path) -> None:
    from kernelgen.run.ledger import read_metrics

    (tmp_path / "metrics.json").write_text(json.dumps({"auc": 0.8, "name": "x", "flag": True, "nan": float("nan")}))
    warnings: list[str] = []
    assert read_metrics(tmp_path, 1, warnings.append) == {"stage1.auc": 0.8}
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "'name' is not a finite number; left out",
        "'flag' is not a finite number; left out",
        "'nan' is not a finite number; left out",
    ]
    (tmp_path / "metrics.json").write_text("[1, 2]")
    assert read_metrics(tmp_path, 1, warnings.append) == {}
    assert warnings[-1].endswith("not a JSON object of names to numbers; its metrics are not recorded")
