"""The chain engine against an in-memory backend and a clock that moves only when slept on,
on the engine's own fixture pipeline (tests/fixtures/chainpipe)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from kernelgen.backends.base import GpuQuota
from kernelgen.backoff import Backoff
from kernelgen.errors import KernelFailedError, KernelgenError, QuotaError
from kernelgen.run.progress import PlainReporter
from kernelgen.run.scheduler import ChainOptions
from kernelgen.run.steps import Steps
from kernelgen.spec.matrix import Cell
from kernelgen.spec.pipeline import Via
from kernelgen.spec.project import Project
from tests.fakes import (
    CHAINPIPE,
    FakeBackend,
    FakeClock,
    declared_outputs,
    open_workspace,
    run_chain,
)

HOURS = 3600.0
SEED_DURATIONS = {1: 6 * HOURS, 2: 0.5 * HOURS, 3: 60.0, 4: 8 * HOURS, 5: 120.0}


OPTIONS = ChainOptions(backoff=Backoff(initial=10, maximum=60), stage_timeout=24 * HOURS)
PROJECT = Project.load(project_dir=CHAINPIPE)
STAGES = [1, 2, 3, 4, 5]


def chain_run(backend: FakeBackend, clock: FakeClock, workdir: Path, **kwargs):  # type: ignore[no-untyped-def]
    kwargs.setdefault("options", OPTIONS)
    project = kwargs.pop("project", PROJECT)
    stages = kwargs.pop("stages", STAGES)
    return run_chain(project, backend, workdir, clock, stages, **kwargs)


def test_full_chain_runs_in_dependency_order_and_feeds_the_threshold(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS, dataset_delay=30.0)
    result = chain_run(backend, clock, tmp_path, submit=True)

    assert result.stages == dict.fromkeys(range(1, 6), "complete")
    first_push = {stage: at for at, stage in reversed(backend.pushes)}
    assert first_push[1] == 0.0 and first_push[4] == 0.0  # the two long stages start together
    assert first_push[2] >= SEED_DURATIONS[1]
    assert first_push[3] >= first_push[2] + SEED_DURATIONS[2]
    assert first_push[5] >= max(first_push[3] + SEED_DURATIONS[3], SEED_DURATIONS[4])
    published = {ref: files for _, ref, files in backend.published}
    assert set(published["alice/stage2"]) == {"train_scores.csv", "test_scores.csv"}
    assert set(published["alice/stage1"]) == {"model.json", "split.csv"}
    stage5 = backend.runs["alice/chain-pipe-stage5-submit"][-1]
    assert stage5.params["threshold"] == 0.5
    assert "threshold = 0.5  # from stage 3, version 1" in stage5.notebook.replace("\\n", "\n")
    assert result.submission == tmp_path / "outputs" / "stage5" / "submission.csv"
    assert result.submission.read_text() == "threshold=0.5\n"
    assert backend.submissions == [("chain-comp", "alice/chain-pipe-stage5-submit", 1, "submission.csv")]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["stages"]["5"]["status"] == "complete"
    assert state["datasets"]["stage4"]["status"] == "ready"


def test_rerun_pushes_nothing_when_nothing_changed(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS)
    chain_run(backend, clock, tmp_path)
    pushes, publishes = len(backend.pushes), len(backend.published)
    result = chain_run(backend, clock, tmp_path)
    assert result.stages == dict.fromkeys(range(1, 6), "unchanged")
    assert (len(backend.pushes), len(backend.published)) == (pushes, publishes)


def test_changing_one_parameter_reruns_only_that_stage_and_its_dependents(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS)
    chain_run(backend, clock, tmp_path)
    before = len(backend.pushes)
    result = chain_run(backend, clock, tmp_path, sets=["stage4.epochs=30"])
    again = [stage for _, stage in backend.pushes[before:]]
    assert sorted(again) == [4, 5]
    assert result.stages[1] == result.stages[2] == result.stages[3] == "unchanged"


def test_a_failing_stage_stops_its_branch_and_a_rerun_picks_up(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS, fail={2})
    with pytest.raises(KernelFailedError) as caught:
        chain_run(backend, clock, tmp_path)
    assert caught.value.stage == 2
    assert "ValueError: boom" in caught.value.log_tail
    assert (tmp_path / "outputs" / "stage2" / "chain-pipe-stage2-score.log").is_file()
    pushed = [stage for _, stage in backend.pushes]
    assert 3 not in pushed and 5 not in pushed
    assert 4 in pushed  # the independent branch finished
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["stages"]["4"]["status"] == "complete"

    backend.fail.clear()
    before = len(backend.pushes)
    result = chain_run(backend, clock, tmp_path)
    assert sorted(stage for _, stage in backend.pushes[before:]) == [2, 3, 5]
    assert result.stages[1] == result.stages[4] == "unchanged"


class _Crash(Exception):
    pass


def test_a_crash_after_push_resumes_polling_without_pushing_again(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS)
    original = backend.status

    def crash(kernel: str):
        raise _Crash

    backend.status = crash  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        chain_run(backend, clock, tmp_path)
    assert sorted(stage for _, stage in backend.pushes) == [1, 4]
    backend.status = original  # type: ignore[method-assign]
    result = chain_run(backend, clock, tmp_path)
    assert result.stages == dict.fromkeys(range(1, 6), "complete")
    assert sorted(stage for _, stage in backend.pushes) == [1, 2, 3, 4, 5]


def test_a_stuck_kernel_times_out_and_a_rerun_resumes_it(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS, stuck={4})
    options = ChainOptions(backoff=Backoff(initial=10, maximum=60), stage_timeout=10 * HOURS)
    with pytest.raises(KernelFailedError) as caught:
        chain_run(backend, clock, tmp_path, options=options)
    assert caught.value.stage == 4
    assert "still running" in str(caught.value)
    assert backend.status_calls[4] <= 10 * HOURS / 60 + 20  # backoff keeps polling bounded
    backend.stuck.clear()
    before = len(backend.pushes)
    result = chain_run(backend, clock, tmp_path, options=options)
    assert [stage for _, stage in backend.pushes[before:]] == [5]
    assert result.stages[4] == "complete"


def test_later_stages_alone_need_earlier_ones_complete(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock)
    with pytest.raises(Exception, match="stage 2 needs stage 1"):
        chain_run(backend, clock, tmp_path, stages=[2, 3])


def test_each_run_records_its_push_and_the_poll_that_saw_it_end(tmp_path: Path) -> None:
    clock = FakeClock()
    chain_run(FakeBackend(clock, durations=SEED_DURATIONS), clock, tmp_path)
    stages = json.loads((tmp_path / "state.json").read_text())["stages"]
    assert stages["1"]["started"] == stages["4"]["started"] == "1970-01-01T00:00:00+00:00"
    for number, duration in SEED_DURATIONS.items():
        record = stages[str(number)]
        started, ended = (datetime.fromisoformat(record[k]).timestamp() for k in ("started", "ended"))
        assert duration <= ended - started <= duration + 60  # at most one polling interval late
    assert stages["5"]["sources"] == {
        "threshold": "from stage 3, version 1",
        "class_thresholds": "from stage 3, version 1",
    }


def test_stage_3s_list_of_gates_reaches_stages_5_and_6(tmp_path: Path) -> None:
    gates = [0.8, 0.85, 0.9, 0.7]
    clock = FakeClock()
    outputs = declared_outputs(PROJECT.pipeline, {"threshold": 1.0, "class_thresholds": gates})
    backend = FakeBackend(clock, durations=SEED_DURATIONS, outputs=outputs)
    chain_run(backend, clock, tmp_path)
    params = json.loads((tmp_path / "state.json").read_text())["stages"]["5"]["params"]
    assert (params["threshold"], params["class_thresholds"]) == (1.0, gates)
    # Stage 6 (not run here) takes the same values.
    with open_workspace(PROJECT, backend, tmp_path, clock) as ws:
        chained = {p.name: p.value for p in Steps(ws, username="alice").chained_params(6, required=True)}
    assert chained == {"threshold": 1.0, "class_thresholds": gates}
    notebook = json.loads((tmp_path / "kernels" / "stage5" / "stage5.ipynb").read_text())
    text = "".join("".join(cell["source"]) for cell in notebook["cells"])
    assert "class_thresholds = [0.8, 0.85, 0.9, 0.7]  # from stage 3, version 1" in text
    assert "class_thresholds=tuple(class_thresholds)," in text


def test_a_chain_run_keeps_the_state_it_started_from(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS)
    chain_run(backend, clock, tmp_path)
    assert not (tmp_path / "state.previous.json").exists()
    first = (tmp_path / "state.json").read_text()
    chain_run(backend, clock, tmp_path, sets=["stage4.epochs=30"])
    assert (tmp_path / "state.previous.json").read_text() == first
    assert (tmp_path / "state.json").read_text() != first


def test_a_stuck_stage_is_given_up_after_its_session_limit_and_an_hour_of_queueing(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, stuck={4})
    with pytest.raises(KernelFailedError, match="still running after 45000 s") as caught:
        chain_run(backend, clock, tmp_path, stages=[4], options=ChainOptions(backoff=Backoff(initial=10, maximum=600)))
    assert caught.value.stage == 4
    assert 45000 < clock.now <= 45000 + 600


class Lines:
    """A reporter keeping the chain's messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def update(self, rows) -> None:  # type: ignore[no-untyped-def]
        return None

    def message(self, text: str) -> None:
        self.lines.append(text)

    def close(self) -> None:
        return None


def test_run_times_are_recorded_and_become_the_next_estimate(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS)
    chain_run(backend, clock, tmp_path)
    stages = json.loads((tmp_path / "state.json").read_text())["stages"]
    for number in (1, 2, 4):
        assert abs(stages[str(number)]["run_seconds"] - SEED_DURATIONS[number]) <= 70
        assert stages[str(number)]["run_profile"] == "full"

    backend.gpu_quota = GpuQuota(used=0, reserved=0, allowed=30)
    reporter = Lines()
    chain_run(backend, clock, tmp_path, sets=["stage4.epochs=30"], reporter=reporter)
    assert reporter.lines[0] == "GPU quota: 0.00 h used, 0.00 h reserved, 30.00 h allowed, 30.00 h left"
    hours = stages["4"]["run_seconds"] / 3600
    assert reporter.lines[1] == f"GPU hours this run needs: about {hours:.2f} h (stage 4: {hours:.2f} h (last run))"


def test_not_enough_quota_refuses_before_any_push_unless_ignored(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS, gpu_quota=GpuQuota(used=28, reserved=0, allowed=30))
    reporter = Lines()
    with pytest.raises(QuotaError, match=r"need about 7\.75 h but 2\.00 h of this week's GPU quota are left"):
        chain_run(backend, clock, tmp_path, reporter=reporter)
    assert backend.pushes == []
    assert reporter.lines == [
        "GPU quota: 28.00 h used, 0.00 h reserved, 30.00 h allowed, 2.00 h left",
        "GPU hours this run needs: about 7.75 h (stage 1: 3.50 h (declared); stage 2: 0.25 h (declared); "
        "stage 4: 4.00 h (declared))",
    ]
    result = chain_run(backend, clock, tmp_path, reporter=reporter, options=replace(OPTIONS, ignore_quota=True))
    assert result.stages == dict.fromkeys(range(1, 6), "complete")
    assert "more than the 2.00 h left; going ahead as --ignore-quota asks" in reporter.lines


def test_only_gpu_stages_that_will_run_are_counted(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS)
    chain_run(backend, clock, tmp_path)
    backend.gpu_quota = GpuQuota(used=30, reserved=0, allowed=30)
    assert chain_run(backend, clock, tmp_path).stages == dict.fromkeys(range(1, 6), "unchanged")
    reporter = Lines()
    result = chain_run(backend, clock, tmp_path, reporter=reporter, sets=["stage5.threshold=0.5"])
    assert result.stages[5] == "complete"  # a CPU stage needs no GPU quota
    assert not any(line.startswith("GPU") for line in reporter.lines)


def test_plain_output_shows_each_running_stages_latest_log_line_once_per_poll_at_most(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, durations=SEED_DURATIONS)
    out = io.StringIO()
    chain_run(backend, clock, tmp_path, reporter=PlainReporter(out), stages=[1, 4])
    lines = out.getvalue().splitlines()
    stage4 = [line for line in lines if line.startswith("stage 4 v1: running")]
    assert stage4[0] == "stage 4 v1: running [0:10]"  # nothing printed yet
    steps = [int(line.rsplit(" - stage 4 step ", 1)[1]) for line in stage4[1:]]
    assert steps == list(range(1, 10))  # the last step is printed as the run completes, not while it runs
    assert len(stage4) <= backend.status_calls[4]
    assert any(line.startswith("stage 4 v1: complete [") and " - " not in line for line in lines)


def test_datasets_read_through_kernels_skip_the_upload_and_the_processing_wait(tmp_path: Path) -> None:
    datasets = dict(PROJECT.pipeline.datasets)
    for slug in ("stage1", "stage4"):
        datasets[slug] = replace(datasets[slug], via=Via.KERNEL)
    wired = replace(PROJECT, pipeline=replace(PROJECT.pipeline, datasets=datasets))

    def makespan(project: Project, folder: Path) -> tuple[float, FakeBackend]:
        clock = FakeClock()
        backend = FakeBackend(clock, durations=SEED_DURATIONS, dataset_delay=600.0)
        options = ChainOptions(backoff=Backoff(initial=10, maximum=60))
        result = chain_run(backend, clock, folder, project=project, options=options)
        assert result.stages == dict.fromkeys(range(1, 6), "complete")
        return clock.now, backend

    clock = FakeClock()
    with open_workspace(wired, FakeBackend(clock), tmp_path / "early", clock) as ws:
        early = Steps(ws, username="alice")
        with pytest.raises(KernelgenError, match="reads stage1 from stage 1's kernel output, which has no complete run"):
            early.render(Cell(2))
    through_datasets, _ = makespan(PROJECT, tmp_path / "datasets")
    through_kernels, backend = makespan(wired, tmp_path / "kernels")
    assert [ref for _, ref, _ in backend.published] == ["alice/stage2"]
    assert through_kernels <= through_datasets - 600
    stage5 = backend.runs["alice/chain-pipe-stage5-submit"][-1]
    assert "'stage4': 'chain-pipe-stage4-segment'" in stage5.notebook
    with (
        open_workspace(wired, backend, tmp_path / "kernels", clock) as ws,
        pytest.raises(KernelgenError, match='read from stage 1\'s kernel output \\(via = "kernel"\\)'),
    ):
        Steps(ws, username="alice").publish("stage1")
