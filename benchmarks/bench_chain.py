"""Chain makespan against the critical path of its graph and against running one thing at a time.

The official Kaggle client drives the chain against the local stand-in server
(tests/kaggle_standin.py) on a simulated clock: each kernel "runs" for the time given
below (the bundled pipeline's long stages 1 and 4, short 2, 3 and 5, stage 6 and its
wheel house) and each dataset version processes for a while. Nothing waits for real;
the run takes seconds. The critical path is the longest path through the chain's own
graph (stages, the wheel house, datasets), with those same durations. The chain runs
twice: wired through published datasets, and with the datasets that hold one stage's
files (Stage1, Stage4) read from their kernels' outputs instead.

    python benchmarks/bench_chain.py [--dataset-minutes 3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from graphlib import TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernelgen.backends.kaggle import KaggleBackend  # noqa: E402
from kernelgen.build.validate import kernel_slug  # noqa: E402
from kernelgen.build.wheels import wheel_houses  # noqa: E402
from kernelgen.run.scheduler import Chain, ChainOptions, Node, StageNode, WheelsNode  # noqa: E402
from kernelgen.run.steps import Steps  # noqa: E402
from kernelgen.spec.pipeline import Via  # noqa: E402
from kernelgen.spec.project import Project  # noqa: E402
from tests.fakes import FakeClock, declared_outputs, open_workspace, quick_executor  # noqa: E402
from tests.kaggle_standin import DatasetScript, KaggleStandIn, KernelScript  # noqa: E402

HOUR = 3600.0
DURATIONS = {1: 5.5 * HOUR, 2: 0.4 * HOUR, 3: 0.05 * HOUR, 4: 7.0 * HOUR, 5: 0.1 * HOUR, 6: 0.25 * HOUR}
WHEELS_SECONDS = 0.15 * HOUR
USER = "bench-user"


def node_seconds(project: Project, node: Node, dataset_seconds: float) -> float:
    if isinstance(node, StageNode):
        return DURATIONS[node.number]
    if isinstance(node, WheelsNode):
        return WHEELS_SECONDS
    return 0.0 if project.pipeline.datasets[node.slug].via is Via.KERNEL else dataset_seconds


def critical_path(project: Project, graph: dict[Node, set[Node]], dataset_seconds: float) -> float:
    finish: dict[Node, float] = {}
    for node in TopologicalSorter(graph).static_order():
        start = max((finish[n] for n in graph.get(node, ())), default=0.0)
        finish[node] = start + node_seconds(project, node, dataset_seconds)
    return max(finish.values())


def through_kernels(project: Project) -> Project:
    """The project with every one-stage dataset read from its producer's kernel output."""
    datasets = {
        slug: replace(spec, via=Via.KERNEL) if len(spec.stages) == 1 else spec
        for slug, spec in project.pipeline.datasets.items()
    }
    return replace(project, pipeline=replace(project.pipeline, datasets=datasets))


def run(project: Project, stages: list[int], dataset_minutes: float, jobs: int) -> tuple[float, float, dict[int, int], int]:
    """Makespan, critical path, status polls per stage, and dataset status polls."""
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ.update({"HOME": str(home), "KAGGLE_USERNAME": USER, "KAGGLE_KEY": "bench-key"})
        with KaggleStandIn(
            Path(tmp) / "server",
            executor=quick_executor(set(), declared_outputs(project.pipeline)),
            credentials={USER: "bench-key"},
            clock=clock,
            dataset_script=DatasetScript(processing_seconds=dataset_minutes * 60),
        ) as server:
            for name, value in server.client_env().items():
                os.environ[name] = value
            for name in ("NO_PROXY", "no_proxy"):
                os.environ.pop(name, None)
            for number, seconds in DURATIONS.items():
                slug = kernel_slug(project.pipeline.stage(number).title)
                server.script_kernel(f"{USER}/{slug}", KernelScript(running_polls=0, run_seconds=seconds))
            for house in wheel_houses(project.pipeline, stages):
                server.script_kernel(f"{USER}/{house.slug}", KernelScript(running_polls=0, run_seconds=WHEELS_SECONDS))
            backend = KaggleBackend(sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
            with open_workspace(project, backend, Path(tmp) / "work", clock) as ws:
                chain = Chain(Steps(ws, username=USER), options=ChainOptions(jobs=jobs))
                result = chain.run(stages)
                path = critical_path(project, chain.graph(stages), dataset_minutes * 60)
            return clock.now, path, result.polls, server.count("GetDatasetStatus")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-minutes", type=float, default=3.0, help="simulated dataset processing time")
    parser.add_argument("--jobs", type=int, default=2, help="kernels running at once (the chain's --jobs)")
    args = parser.parse_args()
    project = Project.load(project_dir=ROOT)
    stages = list(project.pipeline.stages)
    makespan, path, polls, dataset_polls = run(project, stages, args.dataset_minutes, args.jobs)
    wired = through_kernels(project)
    wired_makespan, wired_path, _, wired_dataset_polls = run(wired, stages, args.dataset_minutes, args.jobs)
    serial = sum(DURATIONS.values()) + WHEELS_SECONDS
    print("simulated kernel durations (h): " + ", ".join(f"{s}: {d / HOUR:.2f}" for s, d in DURATIONS.items())
          + f", wheel house: {WHEELS_SECONDS / HOUR:.2f}")
    print(f"dataset processing: {args.dataset_minutes:.1f} min per version; --jobs {args.jobs}")
    print(f"critical path (stages, wheel house, datasets): {path / HOUR:.3f} h")
    print(f"one kernel after another:    {serial / HOUR:.3f} h")
    print(f"chain makespan:              {makespan / HOUR:.3f} h")
    print(f"makespan / critical path:    {makespan / path:.4f}  (target <= 1.02)")
    print(f"makespan / serial:           {makespan / serial:.4f}")
    for stage in sorted(polls):
        rate = polls[stage] / (DURATIONS[stage] / HOUR)
        print(f"stage {stage}: {polls[stage]} status polls for {DURATIONS[stage] / HOUR:.2f} h ({rate:.0f} per hour)")
    print(f"dataset status polls: {dataset_polls}")
    via_kernel = ", ".join(slug for slug, spec in wired.pipeline.datasets.items() if spec.via is Via.KERNEL)
    print(f"chain makespan, {via_kernel} read from kernel outputs: {wired_makespan / HOUR:.3f} h "
          f"(critical path {wired_path / HOUR:.3f} h, ratio {wired_makespan / wired_path:.4f})")
    print(f"  vs through datasets:       {wired_makespan / makespan:.4f}  ({(makespan - wired_makespan) / 60:.1f} min less)")
    print(f"  dataset status polls:      {wired_dataset_polls}")


if __name__ == "__main__":
    main()
