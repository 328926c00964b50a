"""Run the stages in dependency order on one backend, publishing datasets between them.

One loop follows every stage: start what is ready (up to `jobs` at once), poll what
runs (each stage on its own backoff), download outputs when a stage completes,
publish the datasets it completes, and wait for them to be ready before starting
what reads them. State is saved after every change, so a rerun skips what is done
and unchanged, resumes polling what was pushed, and reruns what failed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kernelgen.backends.base import Backend, DatasetStatus, RunStatus
from kernelgen.datasets import build_dataset, files_digest, missing_files
from kernelgen.errors import KernelFailedError, KernelgenError
from kernelgen.params import ParamValue
from kernelgen.pipeline import Pipeline
from kernelgen.polling import DEFAULT_FACTOR, KERNEL_INITIAL, KERNEL_MAX_INTERVAL
from kernelgen.progress import Reporter, StageRow
from kernelgen.project import Project
from kernelgen.render import RenderedKernel, write_kernels
from kernelgen.state import ChainState

WAITING = "waiting"
SKIPPED = "unchanged"
BLOCKED = "blocked"
PUBLISHING = "publishing"


@dataclass(frozen=True)
class PollPolicy:
    """Intervals between status calls for one stage grow from `initial` to `maximum`."""

    initial: float = KERNEL_INITIAL
    factor: float = DEFAULT_FACTOR
    maximum: float = KERNEL_MAX_INTERVAL
    stage_timeout: float = 13 * 3600.0
    dataset_timeout: float = 3600.0


LOCAL_POLL_POLICY = PollPolicy(initial=1.0, factor=1.5, maximum=5.0)
"""Local runs report their state from files; asking often costs nothing."""


@dataclass
class _Live:
    number: int
    status: str = WAITING
    version: int | None = None
    started: float | None = None
    ended: float | None = None
    next_poll: float = 0.0
    interval: float = 0.0
    polls: int = 0
    note: str = ""
    log_tail: str = ""


@dataclass
class ChainResult:
    stages: dict[int, str]
    submission: Path | None = None
    polls: dict[int, int] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)


def chained_params(
    pipeline: Pipeline, state: ChainState, outputs: Path, number: int, *, required: bool
) -> list[ParamValue]:
    """Parameters of stage `number` taken from other stages' downloaded outputs.

    A missing output file is an error when `required`, and skipped otherwise
    (a single push then keeps the stage's own value).
    """
    found = []
    for name, ref in pipeline.stage(number).params_from.items():
        path = outputs / f"stage{ref.stage}" / ref.file
        if not path.is_file():
            if required:
                raise KernelgenError(f"stage {number} needs {path} from stage {ref.stage}, which is missing")
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8"))[ref.key]
        except (ValueError, KeyError, TypeError):
            raise KernelgenError(f"{path}: no {ref.key!r} in this JSON file") from None
        record = state.stages.get(ref.stage)
        version = f", version {record.version}" if record and record.version is not None else ""
        found.append(ParamValue(name, value, f"from stage {ref.stage}{version}"))
    return found


class Chain:
    def __init__(
        self,
        project: Project,
        backend: Backend,
        workdir: Path,
        *,
        username: str,
        profile: str | None = None,
        sets: Iterable[str] = (),
        jobs: int = 2,
        reporter: Reporter | None = None,
        policy: PollPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if jobs < 1:
            raise KernelgenError("--jobs must be at least 1")
        self.project = project
        self.pipeline: Pipeline = project.pipeline
        self.backend = backend
        self.workdir = workdir.resolve()
        self.outputs = self.workdir / "outputs"
        self.username = username
        self.profile = profile
        self.sets = tuple(sets)
        self.jobs = jobs
        self.reporter = reporter
        self.policy = policy or PollPolicy()
        self.clock = clock
        self.sleep = sleep
        self.state = ChainState.open(self.workdir, backend.name)
        self.live: dict[int, _Live] = {}
        self.routed = project.overrides(self.sets, list(self.pipeline.stages))

    # -- readiness -------------------------------------------------------------------
    def _complete(self, number: int) -> bool:
        if number in self.live:
            return self.live[number].status in (RunStatus.COMPLETE.value, SKIPPED)
        record = self.state.stages.get(number)
        return bool(record and record.status == RunStatus.COMPLETE.value and self._has_outputs(number))

    def _has_outputs(self, number: int) -> bool:
        return (self.outputs / f"stage{number}").is_dir()

    def _dataset_ready(self, slug: str) -> bool:
        spec = self.pipeline.datasets[slug]
        if missing_files(spec, self.outputs):
            return False
        record = self.state.datasets.get(slug)
        return bool(
            record
            and record.status == DatasetStatus.READY.value
            and record.digest == files_digest(spec, self.outputs)
        )

    def _ready(self, number: int) -> bool:
        spec = self.pipeline.stage(number)
        return all(self._complete(d) for d in self.pipeline.dependencies[number]) and all(
            self._dataset_ready(slug) for slug in spec.dataset_sources
        )

    def _blocked_by_failure(self, number: int) -> bool:
        return any(
            self.live.get(d) is not None and self.live[d].status in (RunStatus.ERROR.value, RunStatus.CANCELLED.value, BLOCKED)
            for d in self.pipeline.dependencies[number]
        )

    # -- one stage ---------------------------------------------------------------------
    def _render(self, number: int) -> RenderedKernel:
        extra = chained_params(self.pipeline, self.state, self.outputs, number, required=True)
        return self.project.render(
            [number], username=self.username, profile=self.profile, sets=self._sets_for(number), extra={number: extra}
        )[0]

    def _sets_for(self, number: int) -> list[str]:
        return [f"stage{number}.{k}={v}" for k, v in self.routed.get(number, {}).items()]

    def _key(self, kernel: RenderedKernel) -> str:
        hasher = hashlib.sha256(kernel.digest.encode())
        for slug in self.pipeline.stage(kernel.stage).dataset_sources:
            hasher.update(f"{slug}:{self.state.dataset(slug).digest}".encode())
        return hasher.hexdigest()

    def _start(self, number: int, now: float) -> None:
        live = self.live[number]
        kernel = self._render(number)
        key = self._key(kernel)
        record = self.state.stage(number)
        record.params = {p.name: p.value for p in kernel.params}
        if record.key == key and record.status == RunStatus.COMPLETE.value and self._has_outputs(number):
            live.status = SKIPPED
            live.version = record.version
            self._note(f"stage {number}: unchanged since version {record.version}, skipped")
            self._after_complete(number)
            return
        if record.key == key and record.status in (RunStatus.QUEUED.value, RunStatus.RUNNING.value) and record.version:
            live.status = record.status
            live.version = record.version
            self._note(f"stage {number}: resuming version {record.version} ({record.status})")
        else:
            folder = write_kernels([kernel], self.workdir / "kernels")[0]
            pushed = self.backend.push(folder)
            record.mark_pushed(key=key, kernel=pushed.kernel, version=pushed.version, url=pushed.url)
            self.state.save()
            live.status, live.version = RunStatus.QUEUED.value, pushed.version
            self._note(f"stage {number}: pushed {pushed.kernel} version {pushed.version} {pushed.url}")
        live.started = now
        live.interval = self.policy.initial
        live.next_poll = now + self.policy.initial

    def _poll(self, number: int, now: float) -> None:
        live = self.live[number]
        record = self.state.stage(number)
        state = self.backend.status(record.ref)
        live.polls += 1
        if state.status.value != record.status:
            record.status = state.status.value
            record.message = state.message
            self.state.save()
        live.status = state.status.value
        if state.status is RunStatus.COMPLETE:
            self._collect(number)
            live.ended = now
            self._report(now)
            self._after_complete(number)
        elif state.status.finished:
            self._collect(number)
            live.ended = now
            live.note = state.message or f"ended in {state.status.value}"
            self._mark_dependents_blocked(number)
        elif live.started is not None and now - live.started > self.policy.stage_timeout:
            live.status = RunStatus.ERROR.value
            live.ended = now
            live.note = f"still {state.status.value} after {self.policy.stage_timeout:.0f} s; rerun to resume polling"
            self._mark_dependents_blocked(number)
        else:
            live.interval = min(live.interval * self.policy.factor, self.policy.maximum)
            live.next_poll = now + live.interval

    def _collect(self, number: int) -> None:
        record = self.state.stage(number)
        target = self.outputs / f"stage{number}"
        scratch = self.outputs / f".stage{number}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        output = self.backend.output(record.ref, scratch)
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        record.outputs = str(target)
        self.state.save()
        if record.status != RunStatus.COMPLETE.value:
            self.live[number].log_tail = "\n".join(output.log.rstrip().splitlines()[-20:])

    def _mark_dependents_blocked(self, number: int) -> None:
        for other in self.pipeline.dependents(number):
            if other in self.live and self.live[other].status == WAITING:
                self.live[other].status = BLOCKED
                self.live[other].note = f"stage {number} failed"

    # -- datasets ----------------------------------------------------------------------
    def _after_complete(self, number: int) -> None:
        for spec in self.pipeline.datasets_from(number):
            if missing_files(spec, self.outputs):
                continue
            digest = files_digest(spec, self.outputs)
            record = self.state.dataset(spec.slug)
            if record.digest == digest and record.status == DatasetStatus.READY.value:
                continue
            if record.digest == digest and record.status == DatasetStatus.PROCESSING.value:
                continue
            folder = build_dataset(spec, self.outputs, self.workdir / "datasets", username=self.username)
            published = self.backend.publish(folder)
            record.digest, record.dataset, record.status = digest, published.dataset, DatasetStatus.PROCESSING.value
            self.state.save()
            self._note(f"dataset {spec.slug}: {'created' if published.created else 'new version of'} {published.dataset}")

    def _poll_datasets(self, now: float) -> None:
        for slug, record in self.state.datasets.items():
            if record.status != DatasetStatus.PROCESSING.value:
                continue
            status = self.backend.dataset_status(record.dataset)
            if status is DatasetStatus.READY:
                record.status = status.value
                self.state.save()
                self._note(f"dataset {slug}: ready")
            elif status is DatasetStatus.ERROR:
                record.status = status.value
                self.state.save()
                raise KernelgenError(f"dataset {record.dataset} failed to process on {self.backend.name}")

    # -- the loop ----------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if self.reporter:
            self.reporter.message(text)

    def _report(self, now: float) -> None:
        if self.reporter:
            self.reporter.update(self._rows(now))

    def _rows(self, now: float) -> list[StageRow]:
        rows = []
        for number, live in self.live.items():
            end = live.ended if live.ended is not None else now
            elapsed = end - live.started if live.started is not None else 0.0
            rows.append(StageRow(number, self.pipeline.stage(number).title, live.status, live.version, elapsed, live.note))
        return rows

    def run(self, stages: Sequence[int], *, submit: bool = False, competition: str | None = None) -> ChainResult:
        selected = self.pipeline.order(stages)
        for number in selected:
            for dep in self.pipeline.dependencies[number]:
                if dep not in selected and not self._complete(dep):
                    raise KernelgenError(
                        f"stage {number} needs stage {dep}, which has not completed in {self.workdir}; include it"
                    )
        self.live = {n: _Live(n) for n in selected}
        dataset_wait_start: float | None = None
        while True:
            now = self.clock()
            active = [n for n, lv in self.live.items() if lv.status in (RunStatus.QUEUED.value, RunStatus.RUNNING.value)]
            for number in active:
                if self.live[number].next_poll <= now:
                    self._poll(number, now)
            self._poll_datasets(now)
            active = [n for n, lv in self.live.items() if lv.status in (RunStatus.QUEUED.value, RunStatus.RUNNING.value)]
            for number in selected:
                live = self.live[number]
                if live.status != WAITING or len(active) >= self.jobs:
                    continue
                if self._blocked_by_failure(number):
                    live.status, live.note = BLOCKED, "an earlier stage failed"
                elif self._ready(number):
                    self._start(number, now)
                    if live.status in (RunStatus.QUEUED.value, RunStatus.RUNNING.value):
                        active.append(number)
            self._report(now)
            waiting = [n for n, lv in self.live.items() if lv.status == WAITING]
            processing = [s for s, r in self.state.datasets.items() if r.status == DatasetStatus.PROCESSING.value]
            if not active and not processing:
                if waiting:
                    for number in waiting:
                        self.live[number].status = BLOCKED
                        self.live[number].note = "its inputs never became ready"
                break
            if not active and processing:
                dataset_wait_start = dataset_wait_start if dataset_wait_start is not None else now
                if now - dataset_wait_start > self.policy.dataset_timeout:
                    raise KernelgenError(f"datasets {', '.join(processing)} still processing after {self.policy.dataset_timeout:.0f} s")
            else:
                dataset_wait_start = None
            polls = [self.live[n].next_poll for n in active]
            wake = min(polls) if polls else now + self.policy.initial
            if processing:
                wake = min(wake, now + self.policy.initial)
            self.sleep(max(wake - now, 0.0))
        self._report(self.clock())
        return self._finish(selected, submit=submit, competition=competition)

    def _finish(self, selected: list[int], *, submit: bool, competition: str | None) -> ChainResult:
        result = ChainResult(
            stages={n: lv.status for n, lv in self.live.items()},
            polls={n: lv.polls for n, lv in self.live.items()},
            failed=[n for n, lv in self.live.items() if lv.status in (RunStatus.ERROR.value, RunStatus.CANCELLED.value)],
        )
        if result.failed:
            first = self.live[result.failed[0]]
            raise KernelFailedError(
                f"{self.pipeline.stage(first.number).title} ended in {first.status}: {first.note}; "
                f"log in {self.outputs / f'stage{first.number}'}",
                stage=first.number,
                status=first.status,
                log_tail=first.log_tail,
            )
        blocked = [n for n, lv in self.live.items() if lv.status == BLOCKED]
        if blocked:
            raise KernelgenError(f"stages {blocked} could not start: {self.live[blocked[0]].note}")
        last = selected[-1]
        candidate = self.outputs / f"stage{last}" / "submission.csv"
        result.submission = candidate if candidate.is_file() else None
        if submit:
            if result.submission is None:
                raise KernelgenError(f"stage {last} left no submission.csv to submit")
            record = self.state.stage(last)
            if record.version is None:
                raise KernelgenError(f"stage {last} has no backend version to submit")
            comp = competition or self.pipeline.stage(last).competition_sources[0]
            self._note(self.backend.submit(comp, record.kernel, record.version, "submission.csv", "kernelgen chain"))
        return result
