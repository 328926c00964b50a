"""Single-step commands over a backend: push one stage, report status, fetch outputs, publish.

They share the chain's work folder and state file, so `kernelgen status` shows what
`push` and `chain` did, and `chain` resumes what `push` started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kernelgen.backends.base import (
    Backend,
    KernelOutput,
    KernelState,
    PublishResult,
    PushResult,
)
from kernelgen.chain import chained_params
from kernelgen.datasets import build_dataset, files_digest
from kernelgen.errors import BackendError, KernelgenError
from kernelgen.polling import wait_dataset_ready, wait_kernel_finished
from kernelgen.project import Project
from kernelgen.render import write_kernels
from kernelgen.state import ChainState

DEFAULT_WORKDIR = Path("kernelgen-work")


def open_backend(project: Project, workdir: Path, *, local: bool, jobs: int = 2) -> Backend:
    if local:
        from kernelgen.backends.local import LocalBackend
        from kernelgen.localdata import local_competition_data

        data = local_competition_data(project.pipeline, project.config.data, workdir)
        return LocalBackend(
            workdir / "local-store", data, workers=jobs, packages=project.pipeline.packages
        )
    from kernelgen.backends.kaggle import KaggleBackend

    return KaggleBackend()


def push_stage(
    project: Project,
    backend: Backend,
    workdir: Path,
    number: int,
    *,
    username: str,
    profile: str | None = None,
    sets: Iterable[str] = (),
) -> PushResult:
    """Render, validate and push one stage; record it so `status` and `chain` see it."""
    state = ChainState.open(workdir, backend.name)
    kernel = project.render(
        [number], username=username, profile=profile, sets=sets,
        extra={number: chained_params(project.pipeline, state, workdir / "outputs", number, required=False)},
    )[0]
    folder = write_kernels([kernel], workdir / "kernels")[0]
    pushed = backend.push(folder)
    record = state.stage(number)
    record.mark_pushed(key="", kernel=pushed.kernel, version=pushed.version, url=pushed.url)
    record.params = {p.name: p.value for p in kernel.params}
    state.save()
    return pushed


def wait_stage(
    backend: Backend,
    workdir: Path,
    number: int,
    *,
    timeout: float,
    on_poll: Callable[[KernelState, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> KernelState:
    state = ChainState.open(workdir, backend.name)
    record = state.stages.get(number)
    if record is None or not record.kernel:
        raise KernelgenError(f"stage {number} has not been pushed from {workdir}")
    final = wait_kernel_finished(backend, record.ref, timeout=timeout, on_poll=on_poll, clock=clock, sleep=sleep)
    record.status, record.message = final.status.value, final.message
    state.save()
    return final


def fetch_output(backend: Backend, workdir: Path, number: int, out: Path | None = None) -> tuple[Path, KernelOutput]:
    state = ChainState.open(workdir, backend.name)
    record = state.stages.get(number)
    if record is None or not record.kernel:
        raise KernelgenError(f"stage {number} has not been pushed from {workdir}")
    dest = out or workdir / "outputs" / f"stage{number}"
    output = backend.output(record.ref, dest)
    record.outputs = str(dest)
    state.save()
    return dest, output


@dataclass(frozen=True)
class StatusRow:
    stage: int
    title: str
    kernel: str
    version: int | None
    status: str
    message: str


def stage_status(project: Project, backend: Backend, workdir: Path, stages: Iterable[int]) -> list[StatusRow]:
    """Each stage's latest known state, asking the backend about those that were pushed."""
    state = ChainState.open(workdir, backend.name)
    rows = []
    changed = False
    for number in stages:
        spec = project.pipeline.stage(number)
        record = state.stages.get(number)
        if record is None or not record.kernel:
            rows.append(StatusRow(number, spec.title, "", None, "not pushed", ""))
            continue
        try:
            live = backend.status(record.ref)
        except BackendError as exc:
            rows.append(StatusRow(number, spec.title, record.kernel, record.version, record.status or "unknown", str(exc)))
            continue
        if live.status.value != record.status:
            record.status, record.message, changed = live.status.value, live.message, True
        rows.append(StatusRow(number, spec.title, record.kernel, record.version, live.status.value, live.message))
    if changed:
        state.save()
    return rows


def publish_dataset(
    project: Project,
    backend: Backend,
    workdir: Path,
    slug: str,
    *,
    username: str,
    wait: bool = True,
    timeout: float = 3600.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishResult:
    """Build dataset `slug` from the stages' downloaded outputs, create or version it, wait for ready."""
    if slug not in project.pipeline.datasets:
        known = ", ".join(sorted(project.pipeline.datasets))
        raise KernelgenError(f"unknown dataset {slug!r}; known: {known}")
    spec = project.pipeline.datasets[slug]
    outputs = workdir / "outputs"
    folder = build_dataset(spec, outputs, workdir / "datasets", username=username)
    state = ChainState.open(workdir, backend.name)
    published = backend.publish(folder)
    record = state.dataset(slug)
    record.digest, record.dataset, record.status = files_digest(spec, outputs), published.dataset, "processing"
    state.save()
    if wait:
        record.status = wait_dataset_ready(backend, published.dataset, timeout=timeout, clock=clock, sleep=sleep).value
        state.save()
    return published
