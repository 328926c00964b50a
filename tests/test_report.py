"""`kernelgen report` on work folders the chain leaves (of the engine's fixture pipeline,
tests/fixtures/chainpipe): whole, changed, failed, empty; and of a two-stage pipeline
with and without matplotlib."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernelgen.backends.base import RunStatus
from kernelgen.backoff import Backoff
from kernelgen.cli import main
from kernelgen.clock import format_elapsed, timestamp
from kernelgen.errors import KernelFailedError, MetadataError
from kernelgen.report import build_report, write_report
from kernelgen.report.panel import Figure, Note, Panel, Table
from kernelgen.run.scheduler import ChainOptions
from kernelgen.run.state import PREVIOUS_STATE_FILE, STATE_FILE, ChainState, Phase, StageRecord
from kernelgen.spec.pipeline import load_pipeline
from kernelgen.spec.project import Project
from tests.fakes import CHAINPIPE, FakeBackend, FakeClock
from tests.fakes import run_chain as chain_run

HOURS = 3600.0
DURATIONS = {1: 6 * HOURS, 2: 0.5 * HOURS, 3: 60.0, 4: 8 * HOURS, 5: 120.0}
OPTIONS = ChainOptions(backoff=Backoff(initial=10, maximum=60), stage_timeout=24 * HOURS)
PROJECT = Project.load(project_dir=CHAINPIPE)
TINY = Path(__file__).parent / "fixtures" / "tinypipe"


def run_chain(workdir: Path, clock: FakeClock, backend: FakeBackend, sets: list[str] | None = None):
    return chain_run(PROJECT, backend, workdir, clock, [1, 2, 3, 4, 5], sets=sets or [], options=OPTIONS)


def panel(report, key: str) -> Panel:
    return next(p for p in report.panels if p.key == key)


def stage_rows(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-stage="(\d+)" data-status="(\w+)">', html))


def test_the_chain_records_when_each_run_started_and_ended(tmp_path: Path) -> None:
    clock = FakeClock()
    run_chain(tmp_path, clock, FakeBackend(clock, durations=DURATIONS))
    state = ChainState.load(tmp_path / STATE_FILE, "fake")
    facts = build_report(PROJECT, tmp_path).folder.stages
    for number, duration in DURATIONS.items():
        record = state.stages[number]
        assert record.started and record.ended
        # the end is the poll that saw the run finish: at most one polling interval late
        assert duration <= facts[number].seconds <= duration + OPTIONS.backoff.maximum
    assert state.stages[1].started == state.stages[4].started == timestamp(0.0)
    # stages 1, 2 and 4 run on a GPU: their GPU time is the polled run time, queueing left
    # out; 3 and 5 do not and cost no GPU time
    assert state.stages[1].run_seconds is not None
    assert state.stages[1].run_seconds <= facts[1].seconds
    assert facts[1].gpu_hours == pytest.approx(state.stages[1].run_seconds / 3600)
    assert facts[3].gpu_hours == facts[5].gpu_hours == 0.0
    assert state.stages[5].sources["threshold"] == "from stage 3, version 1"
    assert state.stages[4].sources["epochs"] == "default"


def test_a_rerun_keeps_the_previous_state_and_the_report_names_what_changed(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=DURATIONS)
    run_chain(tmp_path, clock, backend)
    first = json.loads((tmp_path / "state.json").read_text())
    run_chain(tmp_path, clock, backend, sets=["stage4.epochs=30"])
    assert json.loads((tmp_path / PREVIOUS_STATE_FILE).read_text()) == first

    report = build_report(PROJECT, tmp_path)
    phases = {n: f.phase for n, f in report.folder.stages.items()}
    assert phases == {1: Phase.UNCHANGED, 2: Phase.UNCHANGED, 3: Phase.UNCHANGED, 4: Phase.COMPLETE, 5: Phase.COMPLETE}
    changes = panel(report, "changes")
    assert changes.intro == "Stages run again: 4, 5."
    what, params = (b for b in changes.blocks if isinstance(b, Table))
    assert ("stage 4", "rerun: version 1 -> 2") in what.rows
    assert ("stage 1", "unchanged (version 1)") in what.rows
    before_epochs = first["stages"]["4"]["params"]["epochs"]
    assert params.rows == (("stage 4", "epochs", str(before_epochs), "30", "--set"),)

    # the figures count what this run ran: stage 4 (a GPU stage) and stage 5 (not one)
    assert any("the stages the latest run ran (4, 5)" in n.text for n in report.notes)
    facts, summary = report.folder.stages, dict(report.summary.items)
    assert facts[4].started is not None and facts[5].ended is not None
    assert summary["wall time"] == format_elapsed((facts[5].ended - facts[4].started).total_seconds())
    assert summary["GPU hours"] == f"{facts[4].seconds / 3600:.2f} h"

    html = write_report(PROJECT, tmp_path).read_text()
    assert stage_rows(html) == {"1": "unchanged", "2": "unchanged", "3": "unchanged", "4": "complete", "5": "complete"}


def test_a_run_with_no_change_says_so(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=DURATIONS)
    run_chain(tmp_path, clock, backend)
    run_chain(tmp_path, clock, backend)
    changes = panel(build_report(PROJECT, tmp_path), "changes")
    assert changes.intro == "No stage ran again."
    assert any(isinstance(b, Note) and b.text == "No parameter changed." for b in changes.blocks)


def test_a_failed_stage_is_reported_with_its_log_and_what_it_blocked(tmp_path: Path) -> None:
    clock = FakeClock()
    with pytest.raises(KernelFailedError):
        run_chain(tmp_path, clock, FakeBackend(clock, durations=DURATIONS, fail={2}))
    report = build_report(PROJECT, tmp_path)
    stages = report.folder.stages
    assert stages[2].phase is Phase.ERROR and "ValueError: boom" in stages[2].log_tail
    assert stages[3].phase is stages[5].phase is Phase.BLOCKED
    assert stages[4].phase is Phase.COMPLETE
    assert "stage 2: it ended in error: Traceback: ValueError: boom" in report.problems
    html = write_report(PROJECT, tmp_path).read_text()
    assert stage_rows(html) == {"1": "complete", "2": "error", "3": "blocked", "4": "complete", "5": "blocked"}
    assert "stage 2 last line" in html


def test_a_folder_without_state_gives_a_report_that_says_so(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["report", "--workdir", str(tmp_path), "--out", str(tmp_path / "r" / "page.html")])
    assert result.exit_code == 0, result.output
    assert result.output == f"report: {tmp_path / 'r' / 'page.html'}\n"
    html = (tmp_path / "r" / "page.html").read_text()
    assert f"no state.json in {tmp_path}" in html
    assert stage_rows(html) == dict.fromkeys("12345", "waiting")


def test_a_missing_work_folder_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", "--workdir", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.output == f"kernelgen: error: work folder {tmp_path / 'nope'} does not exist\n"


def test_an_unreadable_state_is_named_in_the_report(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    html = write_report(PROJECT, tmp_path).read_text()
    assert "state.json cannot be read" in html


# -- a pipeline that is not Severstal -------------------------------------------------------
def tiny_work_folder(tmp_path: Path) -> tuple[Path, Path]:
    """The tiny pipeline and a work folder as a local chain leaves it, with a history.csv."""
    project = tmp_path / "tiny"
    shutil.copytree(TINY, project, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    state = ChainState.load(work / STATE_FILE, "local")
    for number, (start, end) in {1: (0.0, 75.0), 2: (90.0, 100.0)}.items():
        record = state.stage(number)
        record.mark_pushed(key=f"k{number}", kernel=f"local/tiny-{number}", version=1, url="", at=timestamp(start))
        record.mark_status(RunStatus.COMPLETE, "", at=timestamp(end))
    state.stages[1].params, state.stages[1].sources = {"scale": 2}, {"scale": "profile smoke"}
    state.stages[2].params, state.stages[2].sources = {"offset": 6.0}, {"offset": "from stage 1, version 1"}
    state.save()
    for number in (1, 2):
        (work / "outputs" / f"stage{number}").mkdir(parents=True)
    (work / "outputs" / "stage1" / "stats.json").write_text('{"mean": 6.0}')
    (work / "outputs" / "stage1" / "history.csv").write_text(
        "epoch,loss,val_loss,accuracy,lr\n1,0.9,1.0,0.5,0.01\n2,0.5,0.7,0.7,0.01\n3,0.3,0.6,0.8,0.001\n"
    )
    (work / "outputs" / "stage2" / "submission.csv").write_text("id,prediction\nr1,-5.0\n")
    return project, work


def test_the_tiny_pipeline_gets_the_generic_panels(tmp_path: Path) -> None:
    project_dir, work = tiny_work_folder(tmp_path)
    project = Project.load(project_dir=project_dir)
    report = build_report(project, work)
    assert [p.key for p in report.panels] == ["changes", "curves", "parameters"]
    assert report.problems == ()
    assert dict(report.summary.items) == {
        "stages done": "2 of 2",
        "wall time": "1:40",
        "GPU hours": "0.00 h",
        "backend": "local",
        "submission": "submission.csv",
    }
    curves = panel(report, "curves").blocks
    assert len(curves) == 1 and isinstance(curves[0], Figure) and curves[0].mime == "image/png"
    assert curves[0].alt == "Stage 1: Tiny Pipe Measure. loss: loss, val_loss; metrics: accuracy; learning rate: lr"
    params = [b for b in panel(report, "parameters").blocks if isinstance(b, Table)]
    assert params[1].rows == (("offset", "6.0", "from stage 1, version 1"),)
    html = write_report(project, work).read_text()
    assert stage_rows(html) == {"1": "complete", "2": "complete"}
    assert "<td class=\"num\">1:15</td>" in html  # stage 1 ran 75 seconds


def test_without_matplotlib_the_tool_shows_tables_and_says_why(tmp_path: Path) -> None:
    project_dir, work = tiny_work_folder(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n\n\nclass _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ImportError('matplotlib is blocked by the test')\n\n\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "kernelgen", "report", "--workdir", str(work)],
        cwd=project_dir,
        env={**os.environ, "PYTHONPATH": str(blocker)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    html = (work / "report.html").read_text()
    assert "matplotlib is not installed here" in html
    assert "<img" not in html
    assert "<caption>Stage 1: Tiny Pipe Measure</caption>" in html  # the curves as a table
    assert "<td class=\"num\">1:15</td>" in html


def test_a_hook_that_cannot_load_or_fails_costs_only_its_panels(tmp_path: Path) -> None:
    project_dir, work = tiny_work_folder(tmp_path)
    toml = project_dir / "kernel-metadata" / "pipeline.toml"
    original = toml.read_text()
    toml.write_text(original + '\n[report]\npanels = "tinypipe.absent:panels"\n')
    report = build_report(Project.load(project_dir=project_dir), work)
    assert [p.key for p in report.panels] == ["changes", "curves", "parameters"]
    assert any("report.panels 'tinypipe.absent:panels'" in p and "cannot be loaded" in p for p in report.problems)

    (project_dir / "tinypipe" / "panels.py").write_text("def panels(context):\n    raise RuntimeError('no luck')\n")
    toml.write_text(original + '\n[report]\npanels = "tinypipe.panels:panels"\n')
    report = build_report(Project.load(project_dir=project_dir), work)
    assert "report.panels 'tinypipe.panels:panels' failed: RuntimeError: no luck" in report.problems


def test_a_hook_adds_panels_of_plain_values(tmp_path: Path) -> None:
    project_dir, work = tiny_work_folder(tmp_path)
    (project_dir / "tinypipe" / "panels.py").write_text(
        "from kernelgen.report.panel import Note, Panel, Table\n\n\n"
        "def panels(context):\n"
        "    mean = (context.outputs(1) / 'stats.json').read_text()\n"
        "    return [Panel('stats', 'Stage 1 <stats>', (Table.of(('json',), [(mean,)]), Note('scale ' + str(context.params(1)['scale']))))]\n"
    )
    toml = project_dir / "kernel-metadata" / "pipeline.toml"
    toml.write_text(toml.read_text() + '\n[report]\npanels = "tinypipe.panels:panels"\n')
    project = Project.load(project_dir=project_dir)
    assert [p.key for p in build_report(project, work).panels] == ["changes", "curves", "stats", "parameters"]
    html = write_report(project, work).read_text()
    assert '<section id="panel-stats">' in html and "Stage 1 &lt;stats&gt;" in html
    assert "<td>{&#34;mean&#34;: 6.0}</td>" in html and "scale 2" in html


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[report]\npanels = "nocolon"\n', "report.panels must read 'package.module:function'"),
        ('[report]\npages = "a.b:c"\n', "[report] takes only 'panels'"),
        ('[reports]\npanels = "a.b:c"\n', "unknown key 'reports' (known: chain, local, report)"),
    ],
)
def test_a_bad_report_hook_declaration_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    project = tmp_path / "tiny"
    shutil.copytree(TINY, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "kernel-metadata" / "pipeline.toml").write_text(text)
    with pytest.raises(MetadataError, match=re.escape(message)):
        load_pipeline(project)


def test_records_of_older_states_load_without_times(tmp_path: Path) -> None:
    old = {"kernel": "a/b", "key": "k", "message": "", "outputs": "", "params": {"x": 1}, "status": "complete", "url": "", "version": 1}
    record = StageRecord.from_json(old)
    assert (record.started, record.ended, record.sources) == ("", "", {})
    assert record.mark_status(RunStatus.COMPLETE, "", at=timestamp(5.0))  # first seen finished: the end is set
    assert not record.mark_status(RunStatus.COMPLETE, "", at=timestamp(9.0))
    assert record.ended == timestamp(5.0)


@pytest.mark.slow
def test_a_chain_that_fails_still_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "tiny"
    shutil.copytree(TINY, project, ignore=shutil.ignore_patterns("__pycache__"))
    numbers = tmp_path / "numbers"
    numbers.mkdir()
    (numbers / "numbers.csv").write_text("name,amount\nr1,1\n")
    (project / "kernelgen.toml").write_text(f'data = "{numbers}"\n')
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["chain", "--local", "--workdir", "work"])
    assert result.exit_code == 1
    page = project / "work" / "report.html"
    assert f"report: {page}" in result.output.splitlines()
    html = page.read_text()
    assert stage_rows(html) == {"1": "error", "2": "blocked"}
    assert "columns must be id, value" in html  # the failing stage's log tail
