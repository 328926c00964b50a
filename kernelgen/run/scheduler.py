"""Run the stages in dependency order on one backend, publishing datasets between them.

One loop follows every stage: start what is ready (up to `jobs` at once), poll what
runs (each stage on its own backoff), download outputs when a stage completes,
publish the datasets it completes, and wait for them to be ready before starting
what reads them. State is saved after every change, so a rerun skips what is done
and unchanged, resumes polling what was pushed, and reruns what failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kernelgen.backends.base import Backend, DatasetStatus, RunStatus
from kernelgen.build.datasets import missing_files
from kernelgen.build.wheels import wheel_houses
from kernelgen.errors import KernelFailedError, KernelgenError
from kernelgen.run.backoff import DEFAULT_FACTOR, KERNEL_INITIAL, KERNEL_MAX_INTERVAL
from kernelgen.run.livelog import latest
from kernelgen.run.progress import Reporter, StageRow
from kernelgen.run.quota import check_quota, describe_quota, estimate_gpu_hours
from kernelgen.run.state import Phase
from kernelgen.run.steps import Steps
from kernelgen.spec.machine import QUEUE_ALLOWANCE_SECONDS, AcceleratorKind
from kernelgen.spec.pipeline import Pipeline, Via
from kernelgen.spec.project import Project


@dataclass(frozen=True)
class PollPolicy:
    """Intervals between status calls for one stage grow from `initial` to `maximum`.

    A stage is given up on after its session time limit plus `queue_allowance`,
    or after `stage_timeout` when that is set.
    """

    initial: float = KERNEL_INITIAL
    factor: float = DEFAULT_FACTOR
    maximum: float = KERNEL_MAX_INTERVAL
    stage_timeout: float | None = None
    queue_allowance: float = QUEUE_ALLOWANCE_SECONDS
    dataset_timeout: float = 3600.0


LOCAL_POLL_POLICY = PollPolicy(initial=1.0, factor=1.5, maximum=5.0)
"""Local runs report their state from files; asking often costs nothing."""


@dataclass
class _Live:
    number: int
    status: Phase = Phase.WAITING
    version: int | None = None
    started: float | None = None
    ended: float | None = None
    next_poll: float = 0.0
    interval: float = 0.0
    polls: int = 0
    note: str = ""
    log_tail: str = ""
    log: str = ""


@dataclass
class ChainResult:
    stages: dict[int, Phase]
    submission: Path | None = None
    polls: dict[int, int] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)


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
        accelerators: Mapping[int, str] | None = None,
        ignore_quota: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        if jobs < 1:
            raise KernelgenError("--jobs must be at least 1")
        self.pipeline: Pipeline = project.pipeline
        self.backend = backend
        self.steps = Steps(
            project,
            backend,
            workdir,
            username=username,
            profile=profile,
            accelerators=accelerators,
            clock=clock,
            sleep=sleep,
            now=now,
        )
        self.state = self.steps.state
        self.outputs = self.steps.outputs
        self.workdir = self.steps.workdir
        self.jobs = jobs
        self.ignore_quota = ignore_quota
        self.reporter = reporter
        self.policy = policy or PollPolicy()
        self.clock = clock
        self.sleep = sleep
        self.live: dict[int, _Live] = {}
        self.routed = project.overrides(tuple(sets), list(self.pipeline.stages))

    # -- readiness -------------------------------------------------------------------
    def _complete(self, number: int) -> bool:
        if number in self.live:
            return self.live[number].status.done
        record = self.state.stages.get(number)
        return bool(record and record.status is RunStatus.COMPLETE and self.steps.has_outputs(number))

    def _ready(self, number: int) -> bool:
        spec = self.pipeline.stage(number)
        return all(self._complete(d) for d in self.pipeline.dependencies[number]) and all(
            self.steps.dataset_ready(slug) for slug in spec.dataset_sources
        )

    def _blocked_by_failure(self, number: int) -> bool:
        return any(
            self.live.get(d) is not None and (self.live[d].status.failed or self.live[d].status is Phase.BLOCKED)
            for d in self.pipeline.dependencies[number]
        )

    # -- one stage ---------------------------------------------------------------------
    def _sets_for(self, number: int) -> list[str]:
        return [f"stage{number}.{k}={v}" for k, v in self.routed.get(number, {}).items()]

    def _start(self, number: int, now: float) -> None:
        live = self.live[number]
        kernel = self.steps.render(number, self._sets_for(number))
        key = self.steps.key(kernel)
        record = self.steps.record(number)
        if self.steps.is_done(number, key):
            live.status = Phase.UNCHANGED
            live.version = record.version
            self._note(f"stage {number}: unchanged since version {record.version}, skipped")
            self._after_complete(number)
            return
        if self.steps.is_running(number, key):
            assert record.status is not None
            live.status = Phase.of(record.status)
            live.version = record.version
            self._note(f"stage {number}: resuming version {record.version} ({record.status.value})")
        else:
            pushed = self.steps.push(kernel)
            live.status, live.version = Phase.QUEUED, pushed.version
            self._note(f"stage {number}: pushed {pushed.kernel} version {pushed.version} {pushed.url}")
        live.started = now
        live.interval = self.policy.initial
        live.next_poll = now + self.policy.initial

    def _poll(self, number: int, now: float) -> None:
        live = self.live[number]
        state = self.steps.poll(number)
        live.polls += 1
        live.status = Phase.of(state.status)
        if state.status.finished:
            live.log = ""
        elif state.status is RunStatus.RUNNING:
            live.log = latest(self.steps.log_lines(number)) or live.log
        if state.status is RunStatus.COMPLETE:
            self.steps.collect(number)
            live.ended = now
            self._report(now)
            self._after_complete(number)
        elif state.status.finished:
            _, output = self.steps.collect(number)
            live.log_tail = "\n".join(output.log.rstrip().splitlines()[-20:])
            live.ended = now
            live.note = state.message or f"ended in {state.status.value}"
            self._mark_dependents_blocked(number)
        elif live.started is not None and now - live.started > self._stage_timeout(number):
            live.status = Phase.ERROR
            live.ended = now
            live.note = f"still {state.status.value} after {self._stage_timeout(number):.0f} s; rerun to resume polling"
            self._mark_dependents_blocked(number)
        else:
            live.interval = min(live.interval * self.policy.factor, self.policy.maximum)
            live.next_poll = now + live.interval

    def _stage_timeout(self, number: int) -> float:
        """How long a stage may take from its push: its session limit plus queueing."""
        if self.policy.stage_timeout is not None:
            return self.policy.stage_timeout
        return self.steps.session(number).wait_seconds(self.policy.queue_allowance)

    def _mark_dependents_blocked(self, number: int) -> None:
        for other in self.pipeline.dependents(number):
            if other in self.live and self.live[other].status is Phase.WAITING:
                self.live[other].status = Phase.BLOCKED
                self.live[other].note = f"stage {number} failed"

    # -- datasets ----------------------------------------------------------------------
    def _after_complete(self, number: int) -> None:
        for spec in self.pipeline.datasets_from(number):
            if missing_files(spec, self.outputs):
                continue
            if spec.via is Via.KERNEL:
                linked = self.steps.link(spec.slug)
                if linked is not None:
                    self._note(f"dataset {spec.slug}: read from kernel {linked} (nothing uploaded)")
                continue
            published = self.steps.publish(spec.slug)
            if published is not None:
                verb = "created" if published.created else "new version of"
                self._note(f"dataset {spec.slug}: {verb} {published.dataset}")

    def _processing(self) -> list[str]:
        return [s for s, r in self.state.datasets.items() if r.status is DatasetStatus.PROCESSING]

    def _poll_datasets(self) -> None:
        for slug in self._processing():
            status = self.steps.poll_dataset(slug)
            if status is DatasetStatus.READY:
                self._note(f"dataset {slug}: ready")
            elif status is DatasetStatus.ERROR:
                dataset = self.state.datasets[slug].dataset
                raise KernelgenError(f"dataset {dataset} failed to process on {self.backend.name}")

    # -- wheel houses ------------------------------------------------------------------
    def _build_wheels(self, selected: list[int]) -> None:
        """Make the wheel houses the selected internet-off stages install from, before any
        stage starts; a house whose kernel is unchanged since its last complete run is reused."""
        for house in wheel_houses(self.pipeline, selected):
            record, built = self.steps.build_wheels(
                house, initial=self.policy.initial, factor=self.policy.factor, maximum=self.policy.maximum
            )
            verb = "built" if built else "unchanged, reused"
            self._note(f"wheels {house.slug}: {verb} version {record.version}")

    # -- quota -------------------------------------------------------------------------
    def _to_push(self, selected: list[int], keys: Mapping[int, str]) -> list[int]:
        """Stages this run will push: changed ones and everything after them, less those
        already running (their time is reserved in the quota already)."""
        rerun: set[int] = set()
        for number in selected:
            upstream = any(d in rerun for d in self.pipeline.dependencies[number])
            if upstream or not self.steps.is_done(number, keys[number]):
                rerun.add(number)
        return [n for n in selected if n in rerun and not self.steps.is_running(n, keys[n])]

    def _check_quota(self, selected: list[int], keys: Mapping[int, str]) -> None:
        """Refuse, before any push, to start GPU work the week's quota cannot cover."""
        pushing = self._to_push(selected, keys)
        sessions = {n: self.steps.session(n) for n in pushing}
        if not any(s.kind is AcceleratorKind.GPU for s in sessions.values()):
            return
        quota = self.backend.quota()
        if quota is None:
            return
        estimate = estimate_gpu_hours(
            [self.pipeline.stage(n) for n in sorted(pushing)], sessions, self.state.stages, self.steps.profile_name
        )
        self._note(f"GPU quota: {describe_quota(quota)}")
        self._note(f"GPU hours this run needs: about {estimate.describe()}")
        if not check_quota(estimate, quota, ignore=self.ignore_quota):
            self._note(f"more than the {quota.left:.2f} h left; going ahead as --ignore-quota asks")

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
            title = self.pipeline.stage(number).title
            rows.append(StageRow(number, title, live.status.value, live.version, elapsed, live.note, live.log))
        return rows

    def _active(self) -> list[int]:
        return [n for n, lv in self.live.items() if lv.status.active]

    def run(self, stages: Sequence[int], *, submit: bool = False, competition: str | None = None) -> ChainResult:
        selected = self.pipeline.order(stages)
        for number in selected:
            for dep in self.pipeline.dependencies[number]:
                if dep not in selected and not self._complete(dep):
                    raise KernelgenError(
                        f"stage {number} needs stage {dep}, which has not completed in {self.workdir}; include it"
                    )
        keys = {}
        for number in selected:  # every stage renders (parameters checked) before anything is pushed
            keys[number] = self.steps.key(self.steps.render(number, self._sets_for(number), required=False))
        self._check_quota(selected, keys)
        self.state.keep_previous()
        self._build_wheels(selected)
        self.live = {n: _Live(n) for n in selected}
        dataset_wait_start: float | None = None
        while True:
            now = self.clock()
            for number in self._active():
                if self.live[number].next_poll <= now:
                    self._poll(number, now)
            self._poll_datasets()
            active = self._active()
            for number in selected:
                live = self.live[number]
                if live.status is not Phase.WAITING or len(active) >= self.jobs:
                    continue
                if self._blocked_by_failure(number):
                    live.status, live.note = Phase.BLOCKED, "an earlier stage failed"
                elif self._ready(number):
                    self._start(number, now)
                    if live.status.active:
                        active.append(number)
            self._report(now)
            waiting = [n for n, lv in self.live.items() if lv.status is Phase.WAITING]
            processing = self._processing()
            if not active and not processing:
                for number in waiting:
                    self.live[number].status = Phase.BLOCKED
                    self.live[number].note = "its inputs never became ready"
                break
            if not active and processing:
                dataset_wait_start = dataset_wait_start if dataset_wait_start is not None else now
                if now - dataset_wait_start > self.policy.dataset_timeout:
                    raise KernelgenError(
                        f"datasets {', '.join(processing)} still processing after {self.policy.dataset_timeout:.0f} s"
                    )
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
            failed=[n for n, lv in self.live.items() if lv.status.failed],
        )
        if result.failed:
            first = self.live[result.failed[0]]
            raise KernelFailedError(
                f"{self.pipeline.stage(first.number).title} ended in {first.status.value}: {first.note}; "
                f"log in {self.outputs / f'stage{first.number}'}",
                stage=first.number,
                status=first.status.value,
                log_tail=first.log_tail,
            )
        blocked = [n for n, lv in self.live.items() if lv.status is Phase.BLOCKED]
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
