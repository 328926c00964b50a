"""Chain makespan against the critical path and against running the stages one by one.

The official Kaggle client drives the chain against the local stand-in server
(tests/kaggle_standin.py) on a simulated clock: each stage "runs" for the time
given below (the seed's long stages 1 and 4, short 2, 3 and 5) and each dataset
processes for a while. Nothing waits for real; the run takes seconds. The chain
runs twice: wired through published datasets, and with the datasets that hold one
stage's files (Stage1, Stage4) read from their kernels' outputs instead.

    python benchmarks/bench_chain.py [--dataset-minutes 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernelgen.backends.kaggle import KaggleBackend  # noqa: E402
from kernelgen.run.scheduler import Chain  # noqa: E402
from kernelgen.spec.pipeline import Via  # noqa: E402
from kernelgen.spec.project import Project  # noqa: E402
from tests.fakes import FakeClock, quick_executor  # noqa: E402
from tests.kaggle_standin import DatasetScript, KaggleStandIn, KernelScript  # noqa: E402

HOUR = 3600.0
DURATIONS = {1: 5.5 * HOUR, 2: 0.4 * HOUR, 3: 0.05 * HOUR, 4: 7.0 * HOUR, 5: 0.1 * HOUR}
SLUGS = {1: "classifier", 2: "scoring", 3: "threshold", 4: "segmentation", 5: "submission"}
USER = "bench-user"


def critical_path(project: Project) -> float:
    finish: dict[int, float] = {}
    for stage in project.pipeline.order():
        start = max((finish[d] for d in project.pipeline.dependencies[stage]), default=0.0)
        finish[stage] = start + DURATIONS[stage]
    return max(finish.values())


def through_kernels(project: Project) -> Project:
    """The project with every one-stage dataset read from its producer's kernel output."""
    datasets = {
        slug: replace(spec, via=Via.KERNEL) if len(spec.stages) == 1 else spec
        for slug, spec in project.pipeline.datasets.items()
    }
    return replace(project, pipeline=replace(project.pipeline, datasets=datasets))


def run(dataset_minutes: float, project: Project) -> tuple[float, dict[int, int], int]:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ.update({"HOME": str(home), "KAGGLE_USERNAME": USER, "KAGGLE_KEY": "bench-key"})
        with KaggleStandIn(
            Path(tmp) / "server",
            executor=quick_executor(set()),
            credentials={USER: "bench-key"},
            clock=clock,
            dataset_script=DatasetScript(processing_seconds=dataset_minutes * 60),
        ) as server:
            for name, value in server.client_env().items():
                os.environ[name] = value
            for name in ("NO_PROXY", "no_proxy"):
                os.environ.pop(name, None)
            for stage, seconds in DURATIONS.items():
                server.script_kernel(
                    f"{USER}/severstal-stage{stage}-{SLUGS[stage]}", KernelScript(running_polls=0, run_seconds=seconds)
                )
            backend = KaggleBackend(sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
            result = Chain(
                project, backend, Path(tmp) / "work", username=USER, clock=clock, sleep=clock.sleep
            ).run(list(project.pipeline.stages))
            return clock.now, result.polls, server.count("GetDatasetStatus")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-minutes", type=float, default=3.0, help="simulated dataset processing time")
    args = parser.parse_args()
    project = Project.load()
    makespan, polls, dataset_polls = run(args.dataset_minutes, project)
    wired = through_kernels(project)
    wired_makespan, _, wired_dataset_polls = run(args.dataset_minutes, wired)
    path = critical_path(project)
    serial = sum(DURATIONS.values())
    print("simulated stage durations (h): " + ", ".join(f"{s}: {d / HOUR:.2f}" for s, d in DURATIONS.items()))
    print(f"dataset processing: {args.dataset_minutes:.1f} min per version")
    print(f"critical path (stages only): {path / HOUR:.3f} h")
    print(f"one stage after another:     {serial / HOUR:.3f} h")
    print(f"chain makespan:              {makespan / HOUR:.3f} h")
    print(f"makespan / critical path:    {makespan / path:.4f}  (target <= 1.05)")
    print(f"makespan / serial:           {makespan / serial:.4f}")
    for stage in sorted(polls):
        rate = polls[stage] / (DURATIONS[stage] / HOUR)
        print(f"stage {stage}: {polls[stage]} status polls for {DURATIONS[stage] / HOUR:.2f} h ({rate:.0f} per hour)")
    print(f"dataset status polls: {dataset_polls}")
    via_kernel = ", ".join(slug for slug, spec in wired.pipeline.datasets.items() if spec.via is Via.KERNEL)
    print(f"chain makespan, {via_kernel} read from kernel outputs: {wired_makespan / HOUR:.3f} h")
    print(f"  vs through datasets:       {wired_makespan / makespan:.4f}  ({(makespan - wired_makespan) / 60:.1f} min less)")
    print(f"  dataset status polls:      {wired_dataset_polls}")


if __name__ == "__main__":
    main()
