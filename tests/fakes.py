"""In-memory stand-ins for the chain's collaborators: a clock that only moves when slept on,
and a backend whose kernels take scripted times and leave scripted outputs."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kernelgen.backends.base import (
    DatasetStatus,
    GpuQuota,
    KernelOutput,
    KernelState,
    PublishResult,
    PushResult,
    RunStatus,
)


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


def stage_of(ref: str) -> int:
    """The stage number in a kernel slug such as `severstal-stage3-threshold`."""
    slug = ref.split("/")[1] if "/" in ref else ref
    return int(slug.split("-")[1].removeprefix("stage"))


def default_outputs(stage: int, params: dict) -> dict[str, bytes]:
    """Small but well-formed outputs for each Severstal stage."""
    ids = ["a.jpg", "b.jpg"]
    if stage == 1:
        return {
            "model.h5": b"fake model",
            "split.csv": b"ImageId,validation\nt1.jpg,1\nt2.jpg,0\n",
            "test_missing_count.csv": b"ImageId,allMissing\na.jpg,0.99\nb.jpg,0.1\n",
        }
    if stage == 2:
        return {"train_missing_count.csv": b"ImageId,allMissing,validation\nt1.jpg,0.9,1\nt2.jpg,0.2,0\n"}
    if stage == 3:
        chosen = {"threshold": 0.5, "rule": "consistency", "class_thresholds": []}
        return {"threshold.json": json.dumps(chosen).encode()}
    if stage == 4:
        length = params.get("epochs", 3)  # a different model leaves a different submission
        rows = "".join(f"{i},1 {length},{c}\n" for i in ids for c in (1, 2, 3, 4))
        return {
            "submission.csv": ("ImageId,EncodedPixels,ClassId\n" + rows).encode(),
            "model.pth": f"fake segmenter, {length} epochs".encode(),
        }
    if stage in (5, 6):
        return {"submission.csv": f"threshold={params.get('threshold')}\n".encode()}
    return {}


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

    def output(self, kernel: str, dest: Path) -> KernelOutput:
        run = self._latest(kernel)
        dest.mkdir(parents=True, exist_ok=True)
        files = []
        if run.stage not in self.fail:
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

    def submit(self, competition: str, kernel: str, version: int, file_name: str, message: str) -> str:
        self.submissions.append((competition, kernel, version, file_name))
        return f"submitted {kernel} version {version}"

    def quota(self) -> GpuQuota | None:
        return self.gpu_quota


def quick_executor(failing: set[int]):
    """A stand-in executor that completes at once with `default_outputs`, or fails the given stages."""
    from tests.kaggle_standin import ExecutedKernel, PushedKernel

    def execute(pushed: PushedKernel) -> ExecutedKernel:
        stage = stage_of(pushed.slug)
        out = pushed.scratch_dir / "out"
        out.mkdir(parents=True, exist_ok=True)
        if stage in failing:
            return ExecutedKernel(RunStatus.ERROR, out, f"stage {stage} starts\nValueError: broken input\n", "ValueError")
        for name, data in default_outputs(stage, notebook_params(pushed.text)).items():
            (out / name).write_bytes(data)
        return ExecutedKernel(RunStatus.COMPLETE, out, f"stage {stage} done\n")

    return execute
