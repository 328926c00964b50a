"""The chain on the Kaggle backend: the official client against the local stand-in server.

One run executes every kernel of tests/fixtures/tinypipe as a real notebook; the others
run tests/fixtures/chainpipe with a quick executor that leaves well-formed outputs, with
faults injected.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kernelgen.backends.base import RunStatus
from kernelgen.backends.execute import execute_notebook
from kernelgen.backends.kaggle import KaggleBackend
from kernelgen.backoff import Backoff
from kernelgen.build.wheels import wheel_houses
from kernelgen.errors import KernelFailedError, QuotaError
from kernelgen.run.localdata import generate_data
from kernelgen.run.progress import PlainReporter
from kernelgen.run.scheduler import ChainOptions
from kernelgen.spec.pipeline import Via
from kernelgen.spec.project import Project
from tests.fakes import CHAINPIPE, FakeClock, quick_executor, run_chain
from tests.kaggle_standin import (
    DatasetScript,
    ExecutedKernel,
    Fault,
    KaggleStandIn,
    KernelScript,
    PushedKernel,
    QuotaFigures,
    use_standin,
)

USER = "chain-user"
KEY = "k3y-planted-0123456789abcdef"
STAGES = [1, 2, 3, 4, 5]
TINYPIPE = Path(__file__).parent / "fixtures" / "tinypipe"
PROJECT = Project.load(project_dir=CHAINPIPE)


def notebook_executor(competition: Path, packages: tuple[str, ...] = ()):
    """Runs the pushed notebook here, in a Kaggle-shaped root built from its sources."""

    def execute(pushed: PushedKernel) -> ExecutedKernel:
        root = pushed.scratch_dir / "root"
        inputs = root / "input"
        inputs.mkdir(parents=True)
        for slug in pushed.competition_sources:
            (inputs / slug).symlink_to(competition, target_is_directory=True)
        for ref in pushed.dataset_sources:
            (inputs / ref.split("/")[1]).symlink_to(pushed.dataset_dir(ref), target_is_directory=True)
        for ref in pushed.kernel_sources:
            owner, slug = ref.split("/")[:2]
            (inputs / "notebooks" / owner).mkdir(parents=True, exist_ok=True)
            (inputs / "notebooks" / owner / slug).symlink_to(pushed.kernel_dir(ref), target_is_directory=True)
        result = execute_notebook(pushed.text.encode(), root, working=root / "working", packages=packages)
        status = RunStatus.COMPLETE if result.ok else RunStatus.ERROR
        return ExecutedKernel(status, root / "working", result.log, result.error)

    return execute


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[KaggleStandIn]:
    with KaggleStandIn(
        tmp_path / "server",
        executor=quick_executor(set()),
        credentials={USER: KEY},
        clock=clock,
        kernel_script=KernelScript(queued_polls=1, running_polls=2),
    ) as server:
        use_standin(monkeypatch, server, username=USER, key=KEY)
        yield server
        assert server.count("CONNECT") == 0, "a request tried to leave for the real Kaggle"


def chain(clock: FakeClock, workdir: Path, stages: list[int] = STAGES, **options):  # type: ignore[no-untyped-def]
    """One chain run through the official client; the KaggleBackend is made per run, as a
    command makes it."""
    backend = KaggleBackend(sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
    options.setdefault("options", ChainOptions(backoff=Backoff(10, 1.5, 60), stage_timeout=3600))
    project = options.pop("project", None) or PROJECT
    return run_chain(project, backend, workdir, clock, stages, username=USER, **options)


def read_through_kernels(project: Project, *slugs: str) -> Project:
    """The project with these datasets read from their producing kernels' outputs."""
    datasets = dict(project.pipeline.datasets)
    for slug in slugs:
        datasets[slug] = replace(datasets[slug], via=Via.KERNEL)
    return replace(project, pipeline=replace(project.pipeline, datasets=datasets))


SLUGS = {n: f"chain-pipe-stage{n}-{name}" for n, name in enumerate(("fit", "score", "pick", "segment", "submit", "infer"), 1)}


def pushes(server: KaggleStandIn, stage: int) -> int:
    return len(server.kernel_versions(f"{USER}/{SLUGS[stage]}"))


@pytest.mark.slow
def test_full_remote_chain_runs_real_kernels_and_submits(tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock) -> None:
    """Every kernel of a pipeline (tests/fixtures/tinypipe) is a real notebook run here: the
    chain pushes both, publishes stage 1's dataset, passes stage 1's mean to stage 2 and submits."""
    project = Project.load(project_dir=TINYPIPE)
    data = tmp_path / "data"
    generate_data(project.pipeline, data)
    kaggle.executor = notebook_executor((data / "input" / "tiny-numbers").resolve(), packages=("tinypipe",))
    work = tmp_path / "work"
    result = chain(clock, work, [1, 2], project=project, profile="smoke", submit=True, competition="tiny-numbers")

    assert result.stages == {1: "complete", 2: "complete"}
    assert [len(kaggle.kernel_versions(f"{USER}/tiny-pipe-{name}")) for name in ("measure", "submit")] == [1, 1]
    assert kaggle.count("CreateDataset") == 1
    stats = json.loads((work / "outputs" / "stage1" / "stats.json").read_text())
    assert stats["mean"] == 2 * 3.0  # smoke profile: scale 2 over the numbers 1..5
    assert result.submission is not None
    rows = result.submission.read_text().splitlines()
    assert rows == ["id,prediction", *(f"r{i},{i - stats['mean']}" for i in range(1, 6))]
    assert len(kaggle.submissions) == 1
    assert json.loads((work / "state.json").read_text())["stages"]["2"]["params"]["offset"] == stats["mean"]


def test_faults_are_retried_and_nothing_is_pushed_twice(tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock) -> None:
    kaggle.inject("SaveKernel", Fault.rate_limited(7))
    kaggle.inject("GetKernelSessionStatus", Fault.http(500), Fault.http(503))
    kaggle.inject("ListKernelSessionOutput", Fault.dropped())
    kaggle.inject("GetDatasetStatus", Fault.http(502))
    for slug in ("stage1", "stage2", "stage4"):
        kaggle.script_dataset(f"{USER}/{slug}", DatasetScript(processing_polls=3))
    result = chain(clock, tmp_path / "work", submit=True)
    assert result.stages == dict.fromkeys(STAGES, "complete")
    assert [pushes(kaggle, s) for s in STAGES] == [1, 1, 1, 1, 1]
    assert 7.0 in clock.sleeps  # Retry-After honoured through the injected sleep
    assert len(kaggle.submissions) == 1


def test_an_erroring_kernel_stops_its_branch_and_the_rerun_resumes(tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock) -> None:
    kaggle.executor = quick_executor({2})
    work = tmp_path / "work"
    with pytest.raises(KernelFailedError) as caught:
        chain(clock, work)
    assert caught.value.stage == 2
    assert "ValueError: broken input" in caught.value.log_tail
    assert [pushes(kaggle, s) for s in STAGES] == [1, 1, 0, 1, 0]

    kaggle.executor = quick_executor(set())
    result = chain(clock, work)
    assert result.stages == {1: "unchanged", 2: "complete", 3: "complete", 4: "unchanged", 5: "complete"}
    assert [pushes(kaggle, s) for s in STAGES] == [1, 2, 1, 1, 1]


def test_a_crash_between_push_and_poll_resumes_without_pushing_again(
    tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"

    def crash(self: KaggleBackend, kernel: str):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(KaggleBackend, "status", crash)
        with pytest.raises(KeyboardInterrupt):
            chain(clock, work)
    assert [pushes(kaggle, s) for s in STAGES] == [1, 0, 0, 1, 0]
    result = chain(clock, work)
    assert result.stages == dict.fromkeys(STAGES, "complete")
    assert [pushes(kaggle, s) for s in STAGES] == [1, 1, 1, 1, 1]


def test_a_kernel_stuck_running_times_out_cleanly_and_is_resumed(tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock) -> None:
    kaggle.script_kernel(f"{USER}/{SLUGS[4]}", KernelScript(stuck=True))
    work = tmp_path / "work"
    with pytest.raises(KernelFailedError, match="still running"):
        chain(clock, work)
    assert [pushes(kaggle, s) for s in (1, 2, 3, 4)] == [1, 1, 1, 1]
    polls = kaggle.count("GetKernelSessionStatus")
    assert polls < 150  # an hour of polling with backoff, not a busy loop
    kaggle.script_kernel(f"{USER}/severstal-stage4-segmentation", KernelScript())
    with pytest.raises(KernelFailedError, match="still running"):
        chain(clock, work)  # the pushed version is still stuck: polled, not pushed again
    assert pushes(kaggle, 4) == 1


def test_the_planted_key_never_leaves_the_client(
    tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    chain(clock, work, submit=True)
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    for path in work.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_chain_the_gpu_quota_cannot_cover_is_refused_before_any_push(
    tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock
) -> None:
    kaggle.gpu_quota = QuotaFigures(used=26.0, reserved=2.0, allowed=30.0)
    work = tmp_path / "work"
    with pytest.raises(QuotaError) as caught:
        chain(clock, work, profile="full")
    assert "need about 7.75 h but 2.00 h of this week's GPU quota are left" in str(caught.value)
    assert kaggle.count("GetAcceleratorQuotaStatistics") == 1
    assert kaggle.count("SaveKernel") == 0

    options = ChainOptions(backoff=Backoff(10, 1.5, 60), stage_timeout=3600, ignore_quota=True)
    result = chain(clock, work, profile="full", options=options)
    assert result.stages == dict.fromkeys(STAGES, "complete")
    assert [pushes(kaggle, s) for s in STAGES] == [1, 1, 1, 1, 1]


def test_the_chain_shows_running_kernels_log_lines_through_the_stream(
    tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock
) -> None:
    epochs = tuple(f"epoch {i}/4" for i in range(1, 5))
    kaggle.script_kernel(
        f"{USER}/{SLUGS[4]}", KernelScript(running_polls=4, running_log=epochs, cut_stream_after=1)
    )
    out = io.StringIO()
    result = chain(clock, tmp_path / "work", [4], reporter=PlainReporter(out))
    assert result.stages == {4: "complete"}
    running = [line for line in out.getvalue().splitlines() if line.startswith("stage 4 v1: running")]
    assert [line.split(" - ", 1)[1] for line in running] == ["epoch 1/4", "epoch 3/4", "epoch 4/4"]
    assert kaggle.count("LogStream") == 4
    log = (tmp_path / "work/outputs/stage4/chain-pipe-stage4-segment.log").read_text()
    assert log.startswith("".join(f"{line}\n" for line in epochs))


def test_a_dataset_read_through_its_kernel_is_not_uploaded(tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock) -> None:
    project = read_through_kernels(PROJECT, "stage1")
    stage1 = f"{USER}/{SLUGS[1]}/1"
    seen: dict[str, dict[str, list[str]]] = {}
    quick = quick_executor(set())

    def executor(pushed: PushedKernel) -> ExecutedKernel:
        seen[pushed.slug] = {ref: sorted(p.name for p in pushed.kernel_dir(ref).iterdir()) for ref in pushed.kernel_sources}
        return quick(pushed)

    kaggle.executor = executor
    work = tmp_path / "work"
    result = chain(clock, work, project=project)
    assert result.stages == dict.fromkeys(STAGES, "complete")
    assert sorted(kaggle.datasets) == [f"{USER}/stage2", f"{USER}/stage4"]
    assert "model.json" not in [call.body["name"] for call in kaggle.calls("StartBlobUpload")]
    meta = json.loads((work / "kernels/stage2/kernel-metadata.json").read_text())
    assert (meta["dataset_sources"], meta["kernel_sources"]) == ([], [stage1])
    saved = next(c.body for c in kaggle.calls("SaveKernel") if c.body["slug"].endswith("stage2-score"))
    assert saved["kernelDataSources"] == [stage1]
    assert seen[SLUGS[2]] == {stage1: ["model.json", "split.csv", "test_scores.csv"]}
    state = json.loads((work / "state.json").read_text())["datasets"]["stage1"]
    assert (state["dataset"], state["status"]) == (stage1, "ready")

    again = chain(clock, work, project=project)
    assert again.stages == dict.fromkeys(STAGES, "unchanged")
    assert [pushes(kaggle, s) for s in STAGES] == [1, 1, 1, 1, 1]


def test_the_wheels_kernel_is_built_once_and_a_rerun_reuses_it(
    tmp_path: Path, kaggle: KaggleStandIn, clock: FakeClock
) -> None:
    """Stage 6 is internet-off with `pip`: the chain pushes its wheel house (a node of its
    own, run beside the stages), wires that run into stage 6 through kernel_sources,
    submits stage 6, and builds nothing again on a rerun."""
    (house,) = wheel_houses(PROJECT.pipeline, [6])
    stages = [1, 2, 3, 4, 6]
    work = tmp_path / "work"
    result = chain(clock, work, stages, submit=True)
    assert result.stages == dict.fromkeys(stages, "complete")
    assert [v.number for v in kaggle.kernel_versions(f"{USER}/{house.slug}")] == [1]
    meta = json.loads((work / "kernels" / "stage6" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False
    assert meta["kernel_sources"] == [f"{USER}/{house.slug}/1"]
    assert meta["dataset_sources"] == [f"{USER}/stage4", f"{USER}/stage1"]
    ((competition, kernel),) = [(s.competition, s.kernel) for s in kaggle.submissions]
    assert (competition, kernel) == ("chain-comp", f"{USER}/{SLUGS[6]}")

    again = chain(clock, work, stages)
    assert again.stages == dict.fromkeys(stages, "unchanged")
    assert [v.number for v in kaggle.kernel_versions(f"{USER}/{house.slug}")] == [1]
    assert len(kaggle.kernel_versions(f"{USER}/{SLUGS[6]}")) == 1
