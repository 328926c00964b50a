"""In-memory stand-ins for the chain's collaborators: a clock that only moves when slept on,
and a backend whose kernels take scripted times and leave outputs derived from what the
pipeline declares (tests/fixtures/chainpipe by default)."""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kernelgen.backends.base import (
    Backend,
    DatasetStatus,
    GpuQuota,
    KernelOutput,
    KernelState,
    PublishResult,
    PushResult,
    RunStatus,
    SubmissionState,
    SubmissionStatus,
    Submitted,
)
from kernelgen.backoff import Backoff
from kernelgen.clock import Timing
from kernelgen.run.progress import Reporter
from kernelgen.run.scheduler import Chain, ChainOptions, ChainResult
from kernelgen.run.steps import Steps
from kernelgen.run.workspace import Workspace
from kernelgen.spec.pipeline import Pipeline, load_pipeline
from kernelgen.spec.project import Project


class FakeClock:
    """A clock that only moves when something sleeps on it; call it, or use `.clock`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def notebook_params(text: str) -> dict:
    """The values of a rendered notebook's `parameters` cell."""
    cells = json.loads(text)["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    params = {}
    for line in source.splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, rest = line.partition("=")
            params[name.strip()] = ast.literal_eval(rest.split("  #")[0].strip())
    return params


WHEELS = 0
"""The stage number the fakes give a wheel-house kernel (its slug names no stage)."""


def stage_of(ref: str) -> int:
    """The stage number in a kernel slug such as `chain-pipe-stage3-pick`; WHEELS for a
    wheel house's `...-wheels-<hash>`."""
    slug = ref.split("/")[1] if "/" in ref else ref
    match = re.search(r"(?:^|-)stage(\d+)(?:-|$)", slug)
    if match is not None:
        return int(match.group(1))
    if "-wheels-" in slug:
        return WHEELS
    raise ValueError(f"no stage number in kernel slug {slug!r}")


CHAINPIPE = Path(__file__).parent / "fixtures" / "chainpipe"
REPO = Path(__file__).resolve().parent.parent


def severstal_with_stage4_as_model(dest: Path) -> Path:
    """A copy of the bundled Severstal project at `dest` whose stage4 entry is a PyTorch
    Kaggle Model instead of a dataset."""
    for folder in ("stages", "templates", "kernel-metadata"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    datasets = dest / "kernel-metadata" / "datasets.toml"
    datasets.write_text(datasets.read_text() + 'via = "model"\nframework = "PyTorch"\n')
    return dest
CHOSEN: dict[str, object] = {"threshold": 0.5, "class_thresholds": []}
"""What a fake stage writes for the keys later stages take parameters from."""

Outputs = Callable[[int, dict], dict[str, bytes]]


def declared_outputs(pipeline: Pipeline, chosen: Mapping[str, object] = CHOSEN) -> Outputs:
    """Small outputs for each stage of `pipeline`, derived from its declarations: the files
    its datasets take from the stage (their content depends on the run's parameters, so a
    changed parameter changes them), the JSON files other stages take parameters from
    (holding `chosen`), and for a stage no other reads from, a `submission.csv` naming the
    threshold it ran with."""

    def outputs(stage: int, params: dict) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for dataset in pipeline.datasets.values():
            for item in dataset.files:
                if item.stage == stage:
                    text = f"{item.name} of stage {stage} with {json.dumps(params, sort_keys=True)}\n"
                    files[item.name] = text.encode()
        for spec in pipeline.stages.values():
            for ref in spec.params_from.values():
                if ref.stage == stage:
                    values = json.loads(files.get(ref.file, b"{}"))
                    values[ref.key] = chosen.get(ref.key, 0.5)
                    files[ref.file] = json.dumps(values).encode()
        if not files:  # a stage no other stage reads from: the end of a chain
            files["submission.csv"] = f"threshold={params.get('threshold')}\n".encode()
        return files

    return outputs


default_outputs: Outputs = declared_outputs(load_pipeline(CHAINPIPE))
"""Outputs of the engine's fixture pipeline, tests/fixtures/chainpipe."""


@dataclass
class _Run:
    stage: int
    version: int
    started: float
    params: dict
    notebook: str


@dataclass
class FakeBackend:
    clock: FakeClock
    durations: dict[int, float] = field(default_factory=dict)
    fail: set[int] = field(default_factory=set)
    stuck: set[int] = field(default_factory=set)
    dataset_delay: float = 0.0
    outputs: Callable[[int, dict], dict[str, bytes]] = default_outputs
    name: str = "fake"
    gpu_quota: GpuQuota | None = None
    draws_quota: bool = True

    def __post_init__(self) -> None:
        self.runs: dict[str, list[_Run]] = {}
        self.pushes: list[tuple[float, int]] = []
        self.status_calls: dict[int, int] = {}
        self.published: list[tuple[float, str, dict[str, bytes]]] = []
        self.dataset_versions: dict[str, list[float]] = {}
        self.submissions: list[tuple[str, str, int, str]] = []

    def push(self, folder: Path) -> PushResult:
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        notebook = (folder / meta["code_file"]).read_text()
        params = notebook_params(notebook)
        stage = stage_of(meta["id"])
        runs = self.runs.setdefault(meta["id"], [])
        runs.append(_Run(stage, len(runs) + 1, self.clock(), params, notebook))
        self.pushes.append((self.clock(), stage))
        return PushResult(meta["id"], len(runs), f"https://example.invalid/{meta['id']}")

    def _latest(self, kernel: str) -> _Run:
        owner, slug, *version = kernel.split("/")
        runs = self.runs[f"{owner}/{slug}"]
        return runs[int(version[0]) - 1] if version else runs[-1]

    def status(self, kernel: str) -> KernelState:
        run = self._latest(kernel)
        self.status_calls[run.stage] = self.status_calls.get(run.stage, 0) + 1
        if run.stage in self.stuck:
            return KernelState(RunStatus.RUNNING)
        if self.clock() - run.started < self.durations.get(run.stage, 0.0):
            return KernelState(RunStatus.RUNNING)
        if run.stage in self.fail:
            return KernelState(RunStatus.ERROR, "Traceback: ValueError: boom")
        return KernelState(RunStatus.COMPLETE)

    def latest_version(self, kernel: str) -> int | None:
        runs = self.runs.get("/".join(kernel.split("/")[:2]), [])
        return len(runs) or None

    def output(self, kernel: str, dest: Path) -> KernelOutput:
        run = self._latest(kernel)
        dest.mkdir(parents=True, exist_ok=True)
        files = []
        if run.stage not in self.fail and run.stage != WHEELS:
            for name, data in self.outputs(run.stage, run.params).items():
                (dest / name).write_bytes(data)
                files.append(dest / name)
        log = f"stage {run.stage} line 1\nstage {run.stage} last line\n"
        if run.stage in self.fail:
            log += "ValueError: boom\n"
        (dest / f"{kernel.split('/')[1]}.log").write_text(log)
        return KernelOutput(files, log)

    def log_stream(self, kernel: str) -> Iterator[str]:
        """`stage N step k` lines, one more for each tenth of its duration that has passed."""
        run = self._latest(kernel)
        duration = self.durations.get(run.stage, 0.0)
        tenths = 10 if duration <= 0 else min(10, int(10 * (self.clock() - run.started) / duration))
        for step in range(1, tenths + 1):
            yield f"stage {run.stage} step {step}\n"

    def publish(self, folder: Path) -> PublishResult:
        meta = json.loads((folder / "dataset-metadata.json").read_text())
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "dataset-metadata.json"}
        self.published.append((self.clock(), meta["id"], files))
        versions = self.dataset_versions.setdefault(meta["id"], [])
        versions.append(self.clock())
        return PublishResult(meta["id"], created=len(versions) == 1)

    def dataset_status(self, dataset: str) -> DatasetStatus:
        published_at = self.dataset_versions[dataset][-1]
        if self.clock() - published_at < self.dataset_delay:
            return DatasetStatus.PROCESSING
        return DatasetStatus.READY

    def dataset_version(self, dataset: str) -> int | None:
        return len(self.dataset_versions.get("/".join(dataset.split("/")[:2]), [])) or None

    def submit(
        self, competition: str, kernel: str, version: int, file_name: str, message: str
    ) -> Submitted:
        self.submissions.append((competition, kernel, version, file_name))
        return Submitted(len(self.submissions), f"submitted {kernel} version {version}")

    def submission(self, competition: str, ref: int) -> SubmissionState:
        return SubmissionState(ref, SubmissionStatus.COMPLETE, public_score=0.5)

    def submissions(self, competition: str) -> list[SubmissionState]:
        return [self.submission(competition, ref) for ref in range(len(self.submissions), 0, -1)]

    def publish_model(self, folder: Path) -> PublishResult:
        model = json.loads((folder / "model-metadata.json").read_text())
        instance = json.loads((folder / "model-instance-metadata.json").read_text())
        handle = f"{model['ownerSlug']}/{model['slug']}/{instance['framework']}/{instance['instanceSlug']}"
        files = {
            p.name: p.read_bytes()
            for p in sorted(folder.iterdir())
            if not p.name.endswith("metadata.json")
        }
        self.published.append((self.clock(), handle, files))
        versions = self.dataset_versions.setdefault(handle, [])
        versions.append(self.clock())
        return PublishResult(handle, created=len(versions) == 1)

    def model_version(self, instance: str) -> int | None:
        ready = [
            at
            for at in self.dataset_versions.get(instance, [])
            if self.clock() - at >= self.dataset_delay
        ]
        return len(ready) or None

    def quota(self) -> GpuQuota | None:
        return self.gpu_quota

    def close(self) -> None:
        return None


def quick_executor(failing: set[int], outputs: Outputs = default_outputs):  # type: ignore[no-untyped-def]
    """A stand-in executor that completes at once with `outputs` (the fixture pipeline's by
    default), or fails the given stages."""
    from tests.kaggle_standin import ExecutedKernel, PushedKernel

    def execute(pushed: PushedKernel) -> ExecutedKernel:
        stage = stage_of(pushed.slug)
        out = pushed.scratch_dir / "out"
        out.mkdir(parents=True, exist_ok=True)
        if stage == WHEELS:
            (out / "requirements.txt").write_text("chainpipe-extras==1.0\n")
            return ExecutedKernel(RunStatus.COMPLETE, out, "wheels done\n")
        if stage in failing:
            return ExecutedKernel(RunStatus.ERROR, out, f"stage {stage} starts\nValueError: broken input\n", "ValueError")
        for name, data in outputs(stage, notebook_params(pushed.text)).items():
            (out / name).write_bytes(data)
        return ExecutedKernel(RunStatus.COMPLETE, out, f"stage {stage} done\n")

    return execute


def open_workspace(project: Project, backend: Backend, workdir: Path, clock: FakeClock) -> Workspace:
    """A work folder on `backend`, timed by `clock` (its wall clock too); close it after use."""
    return Workspace.open(
        project, workdir, backend=backend, command="test", timing=Timing(clock.clock, clock.sleep, clock.clock)
    )


def run_chain(
    project: Project,
    backend: Backend,
    workdir: Path,
    clock: FakeClock,
    stages: Sequence[int],
    *,
    username: str = "alice",
    profile: str | None = None,
    sets: Sequence[str] = (),
    accelerators: Mapping[int, str] | None = None,
    options: ChainOptions | None = None,
    reporter: Reporter | None = None,
    submit: bool = False,
    competition: str | None = None,
) -> ChainResult:
    """One chain run of `stages` on a work folder opened (and closed) around it."""
    with open_workspace(project, backend, workdir, clock) as ws:
        steps = Steps(
            ws,
            username=username,
            profile=profile,
            overrides=project.overrides(sets, list(project.pipeline.stages)),
            accelerators=accelerators,
        )
        chain = Chain(steps, options=options or ChainOptions(backoff=Backoff(10, 1.5, 60)), reporter=reporter)
        return chain.run(stages, submit=submit, competition=competition)
