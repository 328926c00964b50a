"""Run a pipeline's stages on one backend, as a graph: stages, the wheel houses they
install from, and the datasets (or kernel outputs) that carry files between them.

The graph is ordered by the standard library's `graphlib.TopologicalSorter`: a node
starts once everything it needs is done. Kernel runs (stages and wheel houses) take
one of `jobs` slots, longest remaining path first; each node is polled on its own
backoff. A failed node never calls `done`, so what depends on it never becomes
ready and ends blocked while other branches go on. State is saved after every
change, so a rerun skips what is done and unchanged, resumes polling what was pushed,
pushes again a local run whose process was killed, and reruns what failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Protocol

from kernelgen.backends.base import DatasetStatus, KernelState, RunStatus
from kernelgen.backoff import DATASET_BACKOFF, KERNEL_BACKOFF, LOCAL_BACKOFF, Backoff
from kernelgen.build.wheels import WheelHouse
from kernelgen.errors import (
    ChainError,
    KernelFailedError,
    KernelgenError,
    MissingOutputError,
    UnreachableError,
)
from kernelgen.files import log_tail
from kernelgen.run.livelog import latest
from kernelgen.run.progress import Reporter, StageRow
from kernelgen.run.quota import check_quota, describe_quota, estimate_gpu_hours
from kernelgen.run.state import Phase, SubmissionRecord
from kernelgen.run.steps import Adopted, Steps
from kernelgen.run.workspace import SUBMISSION_FILE
from kernelgen.spec.machine import QUEUE_ALLOWANCE_SECONDS, AcceleratorKind
from kernelgen.spec.matrix import Cell
from kernelgen.spec.pipeline import Via


@dataclass(frozen=True)
class StageNode:
    """A stage's kernel: one cell of it, for a matrix stage."""

    cell: Cell

    @property
    def number(self) -> int:
        return self.cell.stage

    def __str__(self) -> str:
        return str(self.cell)


@dataclass(frozen=True)
class WheelsNode:
    slug: str

    def __str__(self) -> str:
        return f"wheels {self.slug}"


@dataclass(frozen=True)
class DatasetNode:
    slug: str

    def __str__(self) -> str:
        return f"dataset {self.slug}"


Node = StageNode | WheelsNode | DatasetNode


@dataclass(frozen=True)
class ChainOptions:
    """How a chain runs: kernels at once, poll intervals, and how long things may take.

    A stage is given up on after its session time limit plus `queue_allowance` (or
    after `stage_timeout` when set), a dataset or model version after `dataset_timeout`
    of processing, a submission after `score_timeout` without a score. Polls of running
    work ride out a lost connection for `network_grace` seconds: the kernels go on
    running on Kaggle meanwhile.
    """

    jobs: int = 2
    backoff: Backoff = KERNEL_BACKOFF
    dataset_backoff: Backoff = DATASET_BACKOFF
    stage_timeout: float | None = None
    queue_allowance: float = QUEUE_ALLOWANCE_SECONDS
    dataset_timeout: float = 3600.0
    network_grace: float = 1800.0
    score_timeout: float = 6 * 3600.0
    ignore_quota: bool = False

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError("jobs must be at least 1")


LOCAL_OPTIONS = ChainOptions(backoff=LOCAL_BACKOFF, dataset_backoff=LOCAL_BACKOFF)
"""Local runs report their state from files: asking often costs nothing."""


@dataclass
class _Task:
    """One node's progress in this chain run."""

    node: Node
    phase: Phase = Phase.WAITING
    version: int | None = None
    started: float | None = None
    ended: float | None = None
    next_poll: float = 0.0
    interval: float = 0.0
    polls: int = 0
    note: str = ""
    log_tail: str = ""
    log: str = ""
    pushed_again: bool = False
    unreachable_since: float | None = None


class Recorder(Protocol):
    """Who keeps the record of a chain run (the work folder's ledger)."""

    def started(self) -> None: ...

    def stage_ended(self, cell: Cell, phase: Phase) -> None: ...

    def submitted(self, entry: SubmissionRecord) -> None: ...

    def ended(self, outcome: str) -> None: ...


@dataclass
class ChainResult:
    """How each selected stage ended (a matrix stage: as its cells together, see
    `Phase.together`), each cell by its key, and the last stage's submission."""

    stages: dict[int, Phase]
    submission: Path | None = None
    polls: dict[int, int] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    cells: dict[str, Phase] = field(default_factory=dict)


class Chain:
    """The scheduler over `steps` (one workspace, one set of render settings)."""

    def __init__(
        self,
        steps: Steps,
        *,
        options: ChainOptions | None = None,
        reporter: Reporter | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.steps = steps
        self.options = options or ChainOptions()
        self.reporter = reporter
        self.recorder = recorder
        self.pipeline = steps.pipeline
        self.state = steps.state
        self.paths = steps.paths
        self.timing = steps.timing
        self.tasks: dict[Node, _Task] = {}
        self._houses: dict[str, WheelHouse] = {}
        self._graph: dict[Node, set[Node]] = {}

    # -- the graph ----------------------------------------------------------------------
    def graph(self, selected: Sequence[int]) -> dict[Node, set[Node]]:
        """Each node of a run of `selected` stages and the nodes it needs."""
        graph: dict[Node, set[Node]] = {}
        chosen = set(selected)
        self._houses = {house.slug: house for house in self.steps.wheel_houses(list(selected))}
        for number in selected:
            spec = self.pipeline.stage(number)
            needs: set[Node] = {DatasetNode(slug) for slug in spec.dataset_sources}
            needs |= {node for ref in spec.params_from.values() if ref.stage in chosen for node in self._nodes(ref.stage)}
            needs |= {WheelsNode(house.slug) for house in self.steps.wheel_houses([number])}
            for node in self._nodes(number):
                graph[node] = set(needs)
        for node in [n for needs in graph.values() for n in needs if isinstance(n, DatasetNode)]:
            producers = self.pipeline.datasets[node.slug].stages
            graph[node] = {stage for s in producers if s in chosen for stage in self._nodes(s)}
        for slug in self._houses:
            graph[WheelsNode(slug)] = set()
        return graph

    def _nodes(self, number: int) -> list[StageNode]:
        """Stage `number`'s kernels in the graph: one per cell."""
        return [StageNode(cell) for cell in self.steps.cells(number)]

    def _estimate(self, node: Node) -> float:
        """Seconds a node is expected to take, to put the longest remaining path first."""
        if isinstance(node, StageNode):
            record = self.state.find(node.cell)
            if record is not None and record.run_seconds:
                return record.run_seconds
            hours = self.pipeline.stage(node.number).gpu_hours
            return hours * 3600 if hours else 600.0
        return 300.0

    def _heights(self, graph: Mapping[Node, set[Node]]) -> dict[Node, float]:
        """Each node's own estimate plus the longest estimated path after it."""
        after: dict[Node, set[Node]] = {node: set() for node in graph}
        for node, needs in graph.items():
            for need in needs:
                after.setdefault(need, set()).add(node)
        heights: dict[Node, float] = {}
        for node in reversed(list(TopologicalSorter(graph).static_order())):
            heights[node] = self._estimate(node) + max((heights[n] for n in after.get(node, ())), default=0.0)
        return heights

    # -- before anything starts -----------------------------------------------------------
    def _check_inputs(self, selected: Sequence[int]) -> None:
        for number in selected:
            for dep in self.pipeline.dependencies[number]:
                if dep not in selected and not self._complete_here(dep):
                    raise MissingOutputError(
                        f"stage {number} needs stage {dep}, which has not completed in {self.paths.root}; include it"
                    )

    def _complete_here(self, number: int) -> bool:
        """Every cell of stage `number` completed from here and left its outputs."""
        for cell in self.steps.cells(number):
            record = self.state.find(cell)
            if not (record and record.status is RunStatus.COMPLETE and self.steps.has_outputs(cell)):
                return False
        return True

    def _settle(self, graph: Mapping[Node, set[Node]]) -> None:
        """Take what the last command pushed or published without recording it."""
        for node in graph:
            adopted: Adopted | None = None
            if isinstance(node, StageNode):
                adopted = self.steps.settle(node.cell)
            elif isinstance(node, WheelsNode):
                adopted = self.steps.settle_wheels(self._houses[node.slug])
            elif self.pipeline.datasets[node.slug].via is Via.DATASET:
                adopted = self.steps.settle_dataset(node.slug)
            if adopted is not None:
                self._note(f"{adopted.what}: version {adopted.version} was made before the last run stopped; following it")

    def _to_push(self, selected: Sequence[int], keys: Mapping[Cell, str]) -> list[Cell]:
        """Kernels this run will push: changed cells and every cell of the stages after
        them, less those already running (their time is reserved in the quota already)."""
        rerun: set[int] = set()
        pushing = []
        for number in selected:
            upstream = any(d in rerun for d in self.pipeline.dependencies[number])
            changed = [c for c in self.steps.cells(number) if upstream or not self.steps.is_done(c, keys[c])]
            if changed:
                rerun.add(number)
            pushing += [c for c in changed if not self.steps.is_running(c, keys[c])]
        return pushing

    def _check_quota(self, selected: Sequence[int], keys: Mapping[Cell, str]) -> None:
        """Refuse, before any push, to start GPU work the week's quota cannot cover."""
        pushing = self._to_push(selected, keys)
        sessions = {c.stage: self.steps.session(c.stage) for c in pushing}
        if not any(s.kind is AcceleratorKind.GPU for s in sessions.values()):
            return
        quota = self.steps.backend.quota()
        if quota is None:
            return
        estimate = estimate_gpu_hours(
            [(self.pipeline.stage(c.stage), c) for c in sorted(pushing)],
            sessions,
            self.state.find,
            self.steps.profile_name,
        )
        self._note(f"GPU quota: {describe_quota(quota)}")
        self._note(f"GPU hours this run needs: about {estimate.describe()}")
        if not check_quota(estimate, quota, ignore=self.options.ignore_quota):
            self._note(f"more than the {quota.left:.2f} h left; going ahead as --ignore-quota asks")

    # -- the loop -----------------------------------------------------------------------
    def run(self, stages: Sequence[int], *, submit: bool = False, competition: str | None = None) -> ChainResult:
        selected = self.pipeline.order(stages)
        self._check_inputs(selected)
        graph = self._graph = self.graph(selected)
        self._settle(graph)
        keys = {}
        for number in selected:  # every kernel renders (parameters checked) before anything is pushed
            for cell in self.steps.cells(number):
                keys[cell] = self.steps.key(self.steps.render(cell, required=False))
        self._check_quota(selected, keys)
        self.state.keep_previous()
        self.steps.remember_matrix(selected)
        if self.recorder is not None:
            self.recorder.started()
        heights = self._heights(graph)
        self.tasks = {node: _Task(node) for node in graph}
        sorter = TopologicalSorter(graph)
        sorter.prepare()
        ready: list[Node] = []
        try:
            while True:
                now = self.timing.clock()
                self._start_ready(sorter, ready, heights, now)
                self._report(now)
                running = [t for t in self.tasks.values() if t.phase.active]
                if not running:
                    break
                wake = min(t.next_poll for t in running)
                if wake > now:
                    self.timing.sleep(wake - now)
                now = self.timing.clock()
                for task in running:
                    if task.next_poll <= now and self._poll(task, now):
                        sorter.done(task.node)
                        self._record(task)
        finally:
            self.steps.stop_following()
        self._block_the_rest()
        self._report(self.timing.clock())
        try:
            result = self._finish(selected, submit=submit, competition=competition)
        except KernelgenError:
            self._record_end("failed")
            raise
        self._record_end("complete")
        return result

    def _record(self, task: _Task) -> None:
        """A stage node ended (done, failed or blocked): the ledger gets it."""
        if self.recorder is not None and isinstance(task.node, StageNode):
            self.recorder.stage_ended(task.node.cell, task.phase)

    def _record_end(self, outcome: str) -> None:
        if self.recorder is not None:
            self.recorder.ended(outcome)

    def _start_ready(self, sorter: TopologicalSorter[Node], ready: list[Node], heights: Mapping[Node, float], now: float) -> None:
        """Start every ready node a kernel slot allows, until none becomes ready."""
        while True:
            ready.extend(sorter.get_ready())
            ready.sort(key=lambda node: (-heights[node], str(node)))
            started = False
            for node in list(ready):
                kernel = not isinstance(node, DatasetNode)
                busy = sum(1 for t in self.tasks.values() if t.phase.active and not isinstance(t.node, DatasetNode))
                if kernel and busy >= self.options.jobs:
                    continue
                ready.remove(node)
                task = self.tasks[node]
                if self._start(task, now):
                    sorter.done(node)
                    self._record(task)
                    started = True
            if not started:
                return

    def _kernel_timeout(self, task: _Task) -> float:
        if self.options.stage_timeout is not None:
            return self.options.stage_timeout
        if isinstance(task.node, StageNode):
            session = self.steps.session(task.node.cell.stage)
        else:
            session = self._houses[task.node.slug].session  # type: ignore[union-attr]
        return session.wait_seconds(self.options.queue_allowance)

    def _schedule(self, task: _Task, now: float, *, first: bool = False) -> None:
        backoff = self.options.dataset_backoff if isinstance(task.node, DatasetNode) else self.options.backoff
        task.interval = backoff.first if first else backoff.after(task.interval)
        task.next_poll = now + task.interval

    def _begin(self, task: _Task, now: float, phase: Phase, version: int | None) -> None:
        task.phase, task.version, task.started = phase, version, now
        self._schedule(task, now, first=True)

    def _start(self, task: _Task, now: float) -> bool:
        """Start the node; True when it is done at once (unchanged, reused, linked)."""
        node = task.node
        if isinstance(node, StageNode):
            return self._start_stage(task, node.cell, now)
        if isinstance(node, WheelsNode):
            return self._start_wheels(task, self._houses[node.slug], now)
        return self._start_dataset(task, node.slug, now)

    def _start_stage(self, task: _Task, cell: Cell, now: float) -> bool:
        kernel = self.steps.render(cell)
        key = self.steps.key(kernel)
        record = self.steps.record(cell)
        if self.steps.is_done(cell, key):
            task.phase, task.version = Phase.UNCHANGED, record.version
            self._note(f"{cell}: unchanged since version {record.version}, skipped")
            return True
        if self.steps.is_running(cell, key):
            assert record.status is not None
            self._begin(task, now, Phase.of(record.status), record.version)
            self._note(f"{cell}: resuming version {record.version} ({record.status.value})")
            return False
        pushed = self.steps.push(kernel)
        self._begin(task, now, Phase.QUEUED, pushed.version)
        self._note(f"{cell}: pushed {pushed.kernel} version {pushed.version} {pushed.url}")
        return False

    def _start_wheels(self, task: _Task, house: WheelHouse, now: float) -> bool:
        record = self.steps.wheels_record(house)
        if self.steps.wheels_built(house):
            task.phase, task.version = Phase.UNCHANGED, record.version
            self._note(f"wheels {house.slug}: unchanged, reused version {record.version}")
            return True
        key, _ = self.steps.wheels_key(house)
        if record.key == key and record.version is not None and record.status is not None and record.status.active:
            self._begin(task, now, Phase.of(record.status), record.version)
            self._note(f"wheels {house.slug}: resuming version {record.version} ({record.status.value})")
            return False
        pushed = self.steps.push_wheels(house)
        self._begin(task, now, Phase.QUEUED, pushed.version)
        self._note(f"wheels {house.slug}: pushed version {pushed.version}")
        return False

    def _start_dataset(self, task: _Task, slug: str, now: float) -> bool:
        spec = self.pipeline.datasets[slug]
        if spec.via is Via.KERNEL:
            linked = self.steps.link(slug)
            if linked is not None:
                self._note(f"dataset {slug}: read from kernel {linked} (nothing uploaded)")
            task.phase = Phase.COMPLETE
            return True
        published = self.steps.publish(slug)
        if published is not None:
            verb = "created" if published.created else "new version of"
            kind = "model" if spec.via is Via.MODEL else "dataset"
            version = self.state.datasets[slug].version
            number = f" version {version}" if spec.via is Via.MODEL and version is not None else ""
            self._note(f"dataset {slug}: {verb} {kind} {published.dataset}{number}")
        if self.state.datasets[slug].status is DatasetStatus.READY:
            task.phase = Phase.COMPLETE
            return True
        self._begin(task, now, Phase.RUNNING, None)
        return False

    def _poll(self, task: _Task, now: float) -> bool:
        """Poll a running node; True when it has just completed."""
        task.polls += 1
        try:
            if isinstance(task.node, DatasetNode):
                done = self._poll_dataset(task, task.node.slug, now)
            else:
                done = self._poll_kernel(task, now)
        except UnreachableError as exc:
            return self._ride_out(task, now, exc)
        if task.unreachable_since is not None:
            task.unreachable_since = None
            self._note(f"{task.node}: Kaggle answers again")
        return done

    def _ride_out(self, task: _Task, now: float, exc: UnreachableError) -> bool:
        """Keep polling through a lost connection, up to the stated grace: what runs on
        Kaggle does not stop when this machine loses its network."""
        task.unreachable_since = task.unreachable_since if task.unreachable_since is not None else now
        lost_for = now - task.unreachable_since
        if lost_for > self.options.network_grace:
            self._fail(task, now, Phase.ERROR, f"no contact with Kaggle for {lost_for:.0f} s ({exc}); rerun to resume polling")
            return False
        self._schedule(task, now)
        self._note(
            f"{task.node}: {exc}; it keeps running on Kaggle, asking again in {task.interval:.0f} s "
            f"(for up to {self.options.network_grace:.0f} s without contact)"
        )
        return False

    def _poll_kernel(self, task: _Task, now: float) -> bool:
        node = task.node
        if isinstance(node, StageNode):
            state = self.steps.poll(node.cell)
        else:
            state = self.steps.poll_wheels(self._houses[node.slug])  # type: ignore[union-attr]
        if state.status is RunStatus.LOST:
            return self._push_again(task, state, now)
        task.phase = Phase.of(state.status)
        if isinstance(node, StageNode) and state.status is RunStatus.RUNNING:
            task.log = latest(self.steps.log_lines(node.cell)) or task.log
        if state.status is RunStatus.COMPLETE:
            task.ended, task.log = now, ""
            if isinstance(node, StageNode):
                self.steps.collect(node.cell)
            else:
                self._note(f"{node}: built version {task.version}")
            return True
        if state.status.finished:
            tail = ""
            if isinstance(node, StageNode):
                _, output = self.steps.collect(node.cell)
                tail = log_tail(output.log)
            self._fail(task, now, task.phase, state.message or f"ended in {state.status.value}", tail)
        elif task.started is not None and now - task.started > self._kernel_timeout(task):
            limit = self._kernel_timeout(task)
            self._fail(task, now, Phase.ERROR, f"still {state.status.value} after {limit:.0f} s; rerun to resume polling")
        else:
            self._schedule(task, now)
        return False

    def _push_again(self, task: _Task, state: KernelState, now: float) -> bool:
        """A run whose process is gone: pushed once more in this chain run, then a failure."""
        if task.pushed_again:
            self._fail(task, now, Phase.ERROR, state.message or "its run was lost again")
            return False
        task.pushed_again = True
        self._note(f"{task.node}: version {task.version} was lost ({state.message}); pushing it again")
        node = task.node
        if isinstance(node, StageNode):
            pushed = self.steps.push(self.steps.render(node.cell))
        else:
            pushed = self.steps.push_wheels(self._houses[node.slug])  # type: ignore[union-attr]
        self._begin(task, now, Phase.QUEUED, pushed.version)
        self._note(f"{node}: pushed version {pushed.version}")
        return False

    def _poll_dataset(self, task: _Task, slug: str, now: float) -> bool:
        status = self.steps.poll_dataset(slug)
        if status is DatasetStatus.READY:
            task.phase, task.ended = Phase.COMPLETE, now
            self._note(f"dataset {slug}: ready")
            return True
        record = self.state.datasets[slug]
        limit = self.options.dataset_timeout
        if status is DatasetStatus.ERROR:
            self._fail(
                task,
                now,
                Phase.ERROR,
                f"dataset {record.dataset} failed to process on {self.steps.backend.name}",
            )
        elif task.started is not None and now - task.started > limit:
            if self.pipeline.datasets[slug].via is Via.MODEL:
                note = (
                    f"model {record.dataset} version {record.version} is not available after {limit:.0f} s: "
                    "Kaggle reports no processing state for models, so it may have failed to process"
                )
            else:
                note = f"dataset {record.dataset} still processing after {limit:.0f} s"
            self._fail(task, now, Phase.ERROR, note)
        else:
            self._schedule(task, now)
        return False

    def _fail(self, task: _Task, now: float, phase: Phase, note: str, tail: str = "") -> None:
        task.phase, task.ended, task.note, task.log_tail, task.log = phase, now, note, tail, ""
        self._record(task)

    def _block_the_rest(self) -> None:
        """Nodes that never started: blocked by the failure of something they need."""
        for task in self.tasks.values():
            if task.phase is Phase.WAITING:
                task.phase = Phase.BLOCKED
                cause = self._failed_cause(task.node)
                task.note = f"{cause} failed" if cause else "its inputs never became ready"
                self._record(task)

    def _failed_cause(self, node: Node) -> Node | None:
        for need in sorted(self._graph.get(node, ()), key=str):
            if self.tasks[need].phase.failed:
                return need
            found = self._failed_cause(need)
            if found is not None:
                return found
        return None

    # -- progress and the end -------------------------------------------------------------
    def _note(self, text: str) -> None:
        if self.reporter:
            self.reporter.message(text)

    def _report(self, now: float) -> None:
        if self.reporter:
            self.reporter.update(self._rows(now))

    def _rows(self, now: float) -> list[StageRow]:
        rows = []
        stages = sorted((n for n in self.tasks if isinstance(n, StageNode)), key=lambda n: n.cell)
        for node in stages:
            task = self.tasks[node]
            end = task.ended if task.ended is not None else now
            elapsed = end - task.started if task.started is not None else 0.0
            title = self.pipeline.stage(node.number).title
            rows.append(
                StageRow(node.number, title, task.phase.value, task.version, elapsed, task.note, task.log, node.cell.name)
            )
        return rows

    def _finish(self, selected: list[int], *, submit: bool, competition: str | None) -> ChainResult:
        cells = {n.cell: t for n, t in self.tasks.items() if isinstance(n, StageNode)}
        of_stage = {n: [cells[c] for c in self.steps.cells(n)] for n in selected}
        result = ChainResult(
            stages={n: Phase.together(t.phase for t in of_stage[n]) for n in selected},
            polls={n: sum(t.polls for t in of_stage[n]) for n in selected},
            cells={c.key: t.phase for c, t in sorted(cells.items())},
        )
        result.failed = [n for n in selected if result.stages[n].failed]
        failed = [t for t in self.tasks.values() if t.phase.failed]
        if failed:
            first = next((t for n in result.failed for t in of_stage[n] if t.phase.failed), failed[0])
            if isinstance(first.node, StageNode):
                cell = first.node.cell
                title = self.pipeline.stage(cell.stage).title
                raise KernelFailedError(
                    f"{title}{' ' + cell.name if cell.values else ''} ended in {first.phase.value}: {first.note}; "
                    f"log in {self.paths.cell_outputs(cell)}",
                    stage=cell.stage,
                    status=first.phase.value,
                    log_tail=first.log_tail,
                )
            raise ChainError(f"{first.node}: {first.note}")
        blocked = [n for n in selected if result.stages[n] is Phase.BLOCKED]
        if blocked:
            note = next(t.note for t in of_stage[blocked[0]] if t.phase is Phase.BLOCKED)
            raise ChainError(f"stages {blocked} could not start: {note}")
        last = selected[-1]
        (final, *others) = self.steps.cells(last)
        candidate = self.paths.cell_outputs(final) / SUBMISSION_FILE
        result.submission = candidate if candidate.is_file() and not others else None
        if submit:
            if others:
                raise ChainError(
                    f"stage {last} runs as a matrix: submit one cell's version with kernelgen submit --stage {last} --cell ..."
                )
            if result.submission is None:
                raise ChainError(f"stage {last} left no {SUBMISSION_FILE} to submit")
            comp = competition or self.pipeline.stage(last).competition_sources[0]
            recorder = self.recorder
            self.steps.submit_for_score(
                final,
                comp,
                timeout=self.options.score_timeout,
                say=self._note,
                recorded=recorder.submitted if recorder is not None else lambda _: None,
            )
        return result

