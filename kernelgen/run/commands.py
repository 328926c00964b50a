"""What the single commands do, over the same steps the chain takes.

They share the chain's work folder and state file, so `kernelgen status` shows what
`push` and `chain` did, and `chain` takes a version `push` started as its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kernelgen.backends.base import Backend, PushResult
from kernelgen.backends.execute import DEFAULT_JUPYTER_KERNEL
from kernelgen.errors import BackendError
from kernelgen.run.backoff import Timing
from kernelgen.run.steps import Steps
from kernelgen.spec.project import Project

DEFAULT_WORKDIR = Path("kernelgen-work")


def open_backend(
    project: Project,
    workdir: Path,
    *,
    local: bool,
    jobs: int = 2,
    timing: Timing | None = None,
    jupyter_kernel: str = DEFAULT_JUPYTER_KERNEL,
) -> Backend:
    """The Kaggle backend, or with `local` one that runs the notebooks here in `jupyter_kernel`."""
    if local:
        from kernelgen.backends.local import LocalBackend
        from kernelgen.run.localdata import local_competition_data

        data = local_competition_data(project.pipeline, project.config.data, workdir)
        return LocalBackend(
            workdir / "local-store",
            data,
            workers=jobs,
            packages=project.pipeline.packages,
            jupyter_kernel=jupyter_kernel,
        )
    from kernelgen.backends.kaggle import KaggleBackend

    timing = timing or Timing()
    return KaggleBackend(sleep=timing.sleep, clock=timing.clock)


def run_profile(project: Project, profile: str | None, *, local: bool) -> str | None:
    """Local runs use the smoke profile unless one is named (on the command line or in the config)."""
    if local and profile is None and project.config.profile == "full":
        return "smoke"
    return profile


def push_stage(steps: Steps, number: int, sets: Iterable[str] = ()) -> PushResult:
    """Render, validate and push one stage, taking what earlier stages left where it can."""
    return steps.push(steps.render(number, sets, required=False))


@dataclass(frozen=True)
class StatusRow:
    stage: int
    title: str
    kernel: str
    version: int | None
    status: str
    message: str


NOT_PUSHED = "not pushed"


def stage_status(steps: Steps, stages: Iterable[int]) -> list[StatusRow]:
    """Each stage's latest known state, asking the backend about those that were pushed."""
    rows = []
    for number in stages:
        spec = steps.pipeline.stage(number)
        record = steps.state.stages.get(number)
        if record is None or not record.kernel:
            rows.append(StatusRow(number, spec.title, "", None, NOT_PUSHED, ""))
            continue
        try:
            live = steps.poll(number)
        except BackendError as exc:
            known = record.status.value if record.status else "unknown"
            rows.append(StatusRow(number, spec.title, record.kernel, record.version, known, str(exc)))
            continue
        rows.append(StatusRow(number, spec.title, record.kernel, record.version, live.status.value, live.message))
    return rows
