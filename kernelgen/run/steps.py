"""The steps every command and the chain take on one work folder: render, push, poll,
wait, collect outputs, publish a dataset. Each is written once, here, and records what
it did in the work folder's state, so `push --wait` followed by `chain` sees the push
as the chain's own and `status` shows what either did.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from kernelgen.backends.base import (
    Backend,
    DatasetStatus,
    KernelOutput,
    KernelState,
    PublishResult,
    PushResult,
    RunStatus,
)
from kernelgen.build.datasets import build_dataset, files_digest, missing_files
from kernelgen.build.kernel import RenderedKernel, kernel_digest, write_kernels
from kernelgen.build.wheels import WheelHouse, render_wheels
from kernelgen.errors import KernelgenError
from kernelgen.run.backoff import poll_until, wait_dataset_ready
from kernelgen.run.livelog import LogFollower
from kernelgen.run.state import ChainState, StageRecord, timestamp
from kernelgen.spec.machine import Session
from kernelgen.spec.params import ParamValue
from kernelgen.spec.pipeline import DatasetSpec, Via
from kernelgen.spec.project import Project


class Steps:
    """One work folder on one backend, for one user, profile, set of overrides and
    choice of accelerators (`accelerators`: stage -> machine shape). Waits use `clock`
    and `sleep`, which also time each run this process sees from start to end; `now`
    gives the wall-clock time (seconds since the epoch) recorded when a run is pushed
    and when it is first seen finished."""

    def __init__(
        self,
        project: Project,
        backend: Backend,
        workdir: Path,
        *,
        username: str,
        profile: str | None = None,
        accelerators: Mapping[int, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.project = project
        self.pipeline = project.pipeline
        self.backend = backend
        self.workdir = workdir.resolve()
        self.outputs = self.workdir / "outputs"
        self.username = username
        self.profile = profile
        self.accelerators = dict(accelerators or {})
        self.clock = clock
        self.sleep = sleep
        self.now = now
        self.state = ChainState.open(self.workdir, backend.name)
        self._seen: dict[int, RunStatus] = {}
        self._run_start: dict[int, float] = {}
        self._logs: dict[int, tuple[str, LogFollower]] = {}

    @property
    def profile_name(self) -> str:
        return self.project.profile(self.profile)

    def session(self, number: int) -> Session:
        """How stage `number`'s kernel runs: its declared session, on the chosen accelerator."""
        return self.project.session(number, self.accelerators.get(number))

    # -- rendering ---------------------------------------------------------------------
    def chained_params(self, number: int, *, required: bool) -> list[ParamValue]:
        """Parameters of stage `number` taken from other stages' downloaded outputs.

        A missing output file is an error when `required`, and skipped otherwise
        (a single push then keeps the stage's own value).
        """
        found = []
        for name, ref in self.pipeline.stage(number).params_from.items():
            path = self.outputs / f"stage{ref.stage}" / ref.file
            if not path.is_file():
                if required:
                    raise KernelgenError(f"stage {number} needs {path} from stage {ref.stage}, which is missing")
                continue
            try:
                value = json.loads(path.read_text(encoding="utf-8"))[ref.key]
            except (ValueError, KeyError, TypeError):
                raise KernelgenError(f"{path}: no {ref.key!r} in this JSON file") from None
            record = self.state.stages.get(ref.stage)
            version = f", version {record.version}" if record and record.version is not None else ""
            found.append(ParamValue(name, value, f"from stage {ref.stage}{version}"))
        return found

    def kernel_versions(self, number: int, *, required: bool) -> dict[int, int]:
        """The collected run of each stage whose kernel output stage `number` reads
        (`via = "kernel"`): stage -> version. A stage without a complete run is an
        error when `required`, and read at its latest version otherwise."""
        versions = {}
        for slug in self.pipeline.stage(number).dataset_sources:
            dataset = self.pipeline.datasets[slug]
            if dataset.via is not Via.KERNEL:
                continue
            record = self.state.stages.get(dataset.producer)
            if record is not None and record.version is not None and record.status is RunStatus.COMPLETE:
                versions[dataset.producer] = record.version
            elif required:
                raise KernelgenError(
                    f"stage {number} reads {slug} from stage {dataset.producer}'s kernel output, "
                    f"which has no complete run in {self.workdir}"
                )
        return versions

    def render(self, number: int, sets: Iterable[str] = (), *, required: bool = True) -> RenderedKernel:
        extra = self.chained_params(number, required=required)
        return self.project.render(
            [number],
            username=self.username,
            profile=self.profile,
            sets=sets,
            extra={number: extra},
            accelerators=self.accelerators,
            kernel_versions=self.kernel_versions(number, required=required),
            wheel_versions=self.wheel_versions(),
        )[0]

    def key(self, kernel: RenderedKernel) -> str:
        """What a run depends on: the rendered kernel and the datasets it reads."""
        hasher = hashlib.sha256(kernel.digest.encode())
        for slug in self.pipeline.stage(kernel.stage).dataset_sources:
            hasher.update(f"{slug}:{self.state.dataset(slug).digest}".encode())
        return hasher.hexdigest()

    # -- wheel houses -------------------------------------------------------------------
    def wheel_versions(self) -> dict[str, int]:
        """The completed version of each wheel house built from this work folder, by slug."""
        return {
            slug: record.version
            for slug, record in self.state.wheels.items()
            if record.version is not None and record.status is RunStatus.COMPLETE
        }

    def build_wheels(
        self, house: WheelHouse, *, initial: float, factor: float, maximum: float
    ) -> tuple[StageRecord, bool]:
        """Push the wheel house's kernel and wait for it, unless the same files already
        completed here. Returns its record and whether it was built now."""
        files = render_wheels(house, self.username)
        key = kernel_digest(files)
        record = self.state.wheels.setdefault(house.slug, StageRecord())
        if record.key == key and record.status is RunStatus.COMPLETE:
            return record, False
        folder = self.workdir / "kernels" / house.slug
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        pushed = self.backend.push(folder)
        record.mark_pushed(key=key, kernel=pushed.kernel, version=pushed.version, url=pushed.url, at=timestamp(self.now()))
        self.state.save()
        final = poll_until(
            lambda: self.backend.status(record.ref),
            lambda state: state.status.finished,
            timeout=house.session.wait_seconds(),
            clock=self.clock,
            sleep=self.sleep,
            initial=initial,
            factor=factor,
            max_interval=maximum,
            what=f"wheels kernel {record.ref}",
        )
        record.mark_status(final.status, final.message, at=timestamp(self.now()))
        self.state.save()
        if final.status is not RunStatus.COMPLETE:
            detail = f": {final.message}" if final.message else ""
            raise KernelgenError(f"wheels kernel {record.ref} ended in {final.status.value}{detail}")
        return record, True

    # -- kernels -----------------------------------------------------------------------
    def record(self, number: int) -> StageRecord:
        return self.state.stage(number)

    def pushed(self, number: int) -> StageRecord:
        record = self.state.stages.get(number)
        if record is None or not record.kernel:
            raise KernelgenError(f"stage {number} has not been pushed from {self.workdir}")
        return record

    def has_outputs(self, number: int) -> bool:
        return (self.outputs / f"stage{number}").is_dir()

    def is_done(self, number: int, key: str) -> bool:
        """Stage `number` completed with exactly this key and its outputs are here."""
        record = self.record(number)
        return record.key == key and record.status is RunStatus.COMPLETE and self.has_outputs(number)

    def is_running(self, number: int, key: str) -> bool:
        record = self.record(number)
        return record.key == key and record.version is not None and record.status in (RunStatus.QUEUED, RunStatus.RUNNING)

    def push(self, kernel: RenderedKernel) -> PushResult:
        """Write the kernel folder, push it, and record the run as the one to follow."""
        folder = write_kernels([kernel], self.workdir / "kernels")[0]
        pushed = self.backend.push(folder)
        record = self.record(kernel.stage)
        record.mark_pushed(
            key=self.key(kernel), kernel=pushed.kernel, version=pushed.version, url=pushed.url, at=timestamp(self.now())
        )
        record.params = {p.name: p.value for p in kernel.params}
        record.sources = {p.name: p.source for p in kernel.params}
        self.state.save()
        self._seen[kernel.stage] = RunStatus.QUEUED
        self._run_start.pop(kernel.stage, None)
        return pushed

    def poll(self, number: int) -> KernelState:
        record = self.pushed(number)
        live = self.backend.status(record.ref)
        self._time_run(number, record, live.status)
        self._record_status(record, live)
        if live.status.finished:
            self._stop_following(number)
        return live

    def log_lines(self, number: int) -> list[str]:
        """Log lines the stage's run printed since the last call, while it is running."""
        record = self.pushed(number)
        if record.status is not RunStatus.RUNNING:
            return []
        current = self._logs.get(number)
        if current is None or current[0] != record.ref:
            self._stop_following(number)
            ref = record.ref
            current = self._logs[number] = (ref, LogFollower(lambda: self.backend.log_stream(ref)))
        return current[1].take()

    def _stop_following(self, number: int) -> None:
        current = self._logs.pop(number, None)
        if current is not None:
            current[1].close()

    def _time_run(self, number: int, record: StageRecord, status: RunStatus) -> None:
        """Record a run's time from the first RUNNING to the first COMPLETE seen here; a run
        first seen already running is not timed (its start was missed)."""
        before = self._seen.get(number)
        self._seen[number] = status
        if status is RunStatus.RUNNING and before is RunStatus.QUEUED:
            self._run_start[number] = self.clock()
        elif status is RunStatus.COMPLETE and number in self._run_start:
            record.run_seconds = self.clock() - self._run_start.pop(number)
            record.run_profile = self.profile_name

    def _record_status(self, record: StageRecord, live: KernelState) -> None:
        if record.mark_status(live.status, live.message, at=timestamp(self.now())):
            self.state.save()

    def wait(
        self,
        number: int,
        *,
        timeout: float,
        on_poll: Callable[[KernelState, float], None] | None = None,
    ) -> KernelState:
        """Poll with backoff until the run ends; every state seen is recorded."""
        record = self.pushed(number)
        return poll_until(
            lambda: self.poll(number),
            lambda state: state.status.finished,
            timeout=timeout,
            clock=self.clock,
            sleep=self.sleep,
            on_poll=on_poll,
            what=f"kernel {record.ref}",
        )

    def collect(self, number: int, dest: Path | None = None) -> tuple[Path, KernelOutput]:
        """Download the run's files and log; into the work folder's outputs unless `dest`.

        The outputs folder is replaced only once the download is whole.
        """
        record = self.pushed(number)
        target = (dest or self.outputs / f"stage{number}").resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.partial")
        shutil.rmtree(scratch, ignore_errors=True)
        output = self.backend.output(record.ref, scratch)
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        files = [target / path.relative_to(scratch) for path in output.files]
        if dest is None:
            record.outputs = str(target)
            self.state.save()
        return target, KernelOutput(files=files, log=output.log)

    # -- datasets ----------------------------------------------------------------------
    def dataset_ready(self, slug: str) -> bool:
        """The dataset holds exactly the current outputs and the backend has it ready; one read
        through a kernel must name the producer's collected run."""
        spec = self.pipeline.datasets[slug]
        if missing_files(spec, self.outputs):
            return False
        record = self.state.datasets.get(slug)
        if spec.via is Via.KERNEL and (record is None or record.dataset != self._producer_ref(spec)):
            return False
        return bool(record and record.status is DatasetStatus.READY and record.digest == files_digest(spec, self.outputs))

    def _producer_ref(self, spec: DatasetSpec) -> str:
        record = self.state.stages.get(spec.producer)
        return record.ref if record is not None and record.kernel else ""

    def _dataset_spec(self, slug: str) -> DatasetSpec:
        if slug not in self.pipeline.datasets:
            known = ", ".join(sorted(self.pipeline.datasets))
            raise KernelgenError(f"unknown dataset {slug!r}; known: {known}")
        spec = self.pipeline.datasets[slug]
        absent = missing_files(spec, self.outputs)
        if absent:
            raise KernelgenError(f"dataset {slug}: missing stage outputs: {', '.join(map(str, absent))}")
        return spec

    def link(self, slug: str) -> str | None:
        """Take `via = "kernel"` dataset `slug` to be the producing stage's collected run:
        nothing is uploaded. Returns that run's `owner/slug/version`, None when unchanged."""
        spec = self._dataset_spec(slug)
        ref = self._producer_ref(spec)
        if not ref:
            raise KernelgenError(f"dataset {slug}: stage {spec.producer} has not been pushed from {self.workdir}")
        digest = files_digest(spec, self.outputs)
        record = self.state.dataset(slug)
        if (record.digest, record.dataset, record.status) == (digest, ref, DatasetStatus.READY):
            return None
        record.digest, record.dataset, record.status = digest, ref, DatasetStatus.READY
        self.state.save()
        return ref

    def publish(self, slug: str) -> PublishResult | None:
        """Create or version dataset `slug` from the outputs; None when it already holds them."""
        spec = self._dataset_spec(slug)
        if spec.via is Via.KERNEL:
            raise KernelgenError(
                f"dataset {slug} is read from stage {spec.producer}'s kernel output (via = \"kernel\"): "
                "there is nothing to publish"
            )
        digest = files_digest(spec, self.outputs)
        record = self.state.dataset(slug)
        if record.digest == digest and record.status in (DatasetStatus.READY, DatasetStatus.PROCESSING):
            return None
        folder = build_dataset(spec, self.outputs, self.workdir / "datasets", username=self.username)
        published = self.backend.publish(folder)
        record.digest, record.dataset, record.status = digest, published.dataset, DatasetStatus.PROCESSING
        self.state.save()
        return published

    def poll_dataset(self, slug: str) -> DatasetStatus:
        record = self.state.datasets[slug]
        status = self.backend.dataset_status(record.dataset)
        if status is not record.status:
            record.status = status
            self.state.save()
        return status

    def wait_dataset(
        self,
        slug: str,
        *,
        timeout: float,
    ) -> DatasetStatus:
        record = self.state.datasets[slug]
        status = wait_dataset_ready(self.backend, record.dataset, timeout=timeout, clock=self.clock, sleep=self.sleep)
        record.status = status
        self.state.save()
        return status
