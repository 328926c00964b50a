"""The steps every command and the chain take on one work folder: render, push, poll,
wait, collect outputs, publish a dataset, build a wheel house. Each is written once,
here, and records what it did in the work folder's state, so `push --wait` followed by
`chain` sees the push as the chain's own and `status` shows what either did.

A kernel run is followed through its record in the state: a stage's
(`state.stages[n]`), a matrix stage's cell's (`state.cells["4/fold-0"]`) or a wheel
house's (`state.wheels[slug]`). Pushing and polling are the same for all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kernelgen.backends.base import (
    DatasetStatus,
    KernelOutput,
    KernelState,
    PublishResult,
    PushResult,
    RunStatus,
    SubmissionState,
    SubmissionStatus,
)
from kernelgen.backoff import DATASET_BACKOFF, KERNEL_BACKOFF, SCORE_BACKOFF, Backoff, poll_until
from kernelgen.build.datasets import build_dataset, files_digest, missing_files
from kernelgen.build.kernel import RenderedKernel, kernel_digest, render_stages, write_kernels
from kernelgen.build.wheels import WheelHouse, render_wheels, wheel_houses
from kernelgen.clock import timestamp
from kernelgen.errors import (
    DatasetFailedError,
    MissingOutputError,
    NotPushedError,
    ParameterError,
    SubmissionFailedError,
    UnknownDatasetError,
)
from kernelgen.files import staged_dir
from kernelgen.run.livelog import LogFollower
from kernelgen.run.state import DatasetRecord, Intent, StageRecord, SubmissionRecord
from kernelgen.run.workspace import SUBMISSION_FILE, Workspace
from kernelgen.spec.machine import Session
from kernelgen.spec.matrix import Cell, MatrixOptions, pick_cells
from kernelgen.spec.params import ParamValue
from kernelgen.spec.pipeline import DatasetSpec, Via
from kernelgen.spec.project import Overrides


@dataclass(frozen=True)
class Adopted:
    """A version pushed or published just before the last command stopped, found and taken
    as this one's instead of being made again."""

    what: str
    version: int | None


class Steps:
    """One work folder's steps for one user, profile, set of overrides (routed to stages)
    and choice of accelerators (stage -> machine shape). Waits use the workspace's
    timing, which also times each run this process sees from start to end."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        username: str,
        profile: str | None = None,
        overrides: Overrides | None = None,
        accelerators: Mapping[int, str] | None = None,
        matrix: MatrixOptions | None = None,
    ) -> None:
        self.workspace = workspace
        self.project = workspace.project
        self.pipeline = workspace.project.pipeline
        self.backend = workspace.backend
        self.state = workspace.state
        self.paths = workspace.paths
        self.timing = workspace.timing
        self.username = username
        self.profile = profile
        self.overrides = dict(overrides or {})
        self.accelerators = dict(accelerators or {})
        self.matrix = dict(matrix or {})
        self._cells: dict[int, list[Cell]] = {}
        self._seen: dict[str, RunStatus] = {}
        self._run_start: dict[str, float] = {}
        self._logs: dict[str, tuple[str, LogFollower]] = {}

    @property
    def profile_name(self) -> str:
        return self.project.profile(self.profile)

    def session(self, number: int) -> Session:
        """How stage `number`'s kernel runs: its declared session, on the chosen accelerator."""
        return self.project.session(number, self.accelerators.get(number))

    def _now(self) -> str:
        return timestamp(self.timing.now())

    def cells(self, number: int) -> list[Cell]:
        """Stage `number`'s kernels: one per cell of its matrix (`--matrix`, else the
        profile's, else the declared one), one for a stage without."""
        if number not in self._cells:
            self._cells[number] = self.project.cells(number, profile=self.profile, options=self.matrix.get(number))
        return self._cells[number]

    def cell(self, number: int, chosen: Mapping[str, str] | None = None) -> list[Cell]:
        """The cells of stage `number` whose values match `chosen` (all without it)."""
        return pick_cells(self.cells(number), chosen, stage=number)

    def outputs_of(self, number: int) -> list[tuple[str, Path]]:
        """Stage `number`'s output folders, each with its folder in a dataset."""
        return [(cell.name, self.paths.cell_outputs(cell)) for cell in self.cells(number)]

    def remember_matrix(self, numbers: Sequence[int]) -> None:
        """Record the cells these stages run with, for `status` and the report."""
        for number in numbers:
            cells = self.cells(number)
            if cells[0].values:
                self.state.matrices[number] = [cell.as_dict() for cell in cells]
            else:
                self.state.matrices.pop(number, None)
        self.state.save()

    # -- rendering ---------------------------------------------------------------------
    def chained_params(self, number: int, *, required: bool) -> list[ParamValue]:
        """Parameters of stage `number` taken from other stages' downloaded outputs.

        A missing output file is an error when `required`, and skipped otherwise
        (a single push then keeps the stage's own value).
        """
        found = []
        for name, ref in self.pipeline.stage(number).params_from.items():
            if self.cells(ref.stage)[0].values:
                raise ParameterError(
                    f"{name} is taken from stage {ref.stage}'s {ref.file}, but stage {ref.stage} runs as a matrix "
                    "(one file per cell)",
                    stage=number,
                )
            path = self.paths.outputs(ref.stage) / ref.file
            if not path.is_file():
                if required:
                    raise MissingOutputError(f"stage {number} needs {path} from stage {ref.stage}, which is missing")
                continue
            try:
                value = json.loads(path.read_text(encoding="utf-8"))[ref.key]
            except (ValueError, KeyError, TypeError):
                raise MissingOutputError(f"{path}: no {ref.key!r} in this JSON file") from None
            record = self.state.stages.get(ref.stage)
            version = f", version {record.version}" if record and record.version is not None else ""
            found.append(ParamValue(name, value, f"from stage {ref.stage}{version}"))
        return found

    def kernel_versions(self, number: int, *, required: bool) -> dict[str, int]:
        """The collected run of each kernel whose output stage `number` reads (`via =
        "kernel"`; every cell's, for a matrix stage): cell key -> version. A kernel
        without a complete run is an error when `required`, and read at its latest
        version otherwise."""
        versions = {}
        for slug in self.pipeline.stage(number).dataset_sources:
            dataset = self.pipeline.datasets[slug]
            if dataset.via is not Via.KERNEL:
                continue
            for cell in self.cells(dataset.producer):
                record = self.state.find(cell)
                if record is not None and record.version is not None and record.status is RunStatus.COMPLETE:
                    versions[cell.key] = record.version
                elif required:
                    raise MissingOutputError(
                        f"stage {number} reads {slug} from {cell}'s kernel output, "
                        f"which has no complete run in {self.paths.root}"
                    )
        return versions

    def wheel_versions(self) -> dict[str, int]:
        """The completed version of each wheel house built from this work folder, by slug."""
        return {
            slug: record.version
            for slug, record in self.state.wheels.items()
            if record.version is not None and record.status is RunStatus.COMPLETE
        }

    def model_versions(self, number: int) -> dict[str, int]:
        """The published version of each `via = "model"` input of stage `number`, by
        dataset slug: what its kernel pins in `model_sources`."""
        versions = {}
        for slug in self.pipeline.stage(number).dataset_sources:
            record = self.state.datasets.get(slug)
            if (
                self.pipeline.datasets[slug].via is Via.MODEL
                and record is not None
                and record.version is not None
            ):
                versions[slug] = record.version
        return versions

    def render(self, cell: Cell, *, required: bool = True) -> RenderedKernel:
        number = cell.stage
        return render_stages(
            self.project,
            [number],
            username=self.username,
            profile=self.profile,
            overrides=self.overrides,
            extra={number: self.chained_params(number, required=required)},
            accelerators=self.accelerators,
            kernel_versions=self.kernel_versions(number, required=required),
            wheel_versions=self.wheel_versions(),
            model_versions=self.model_versions(number),
            matrix=self.matrix,
            only=[cell],
        )[0]

    def key(self, kernel: RenderedKernel) -> str:
        """What a run depends on: the rendered kernel and the datasets it reads."""
        hasher = hashlib.sha256(kernel.digest.encode())
        for slug in self.pipeline.stage(kernel.stage).dataset_sources:
            hasher.update(f"{slug}:{self.state.dataset(slug).digest}".encode())
        return hasher.hexdigest()

    # -- kernel runs, a stage cell's or a wheel house's -------------------------------------
    def record(self, cell: Cell) -> StageRecord:
        return self.state.record(cell)

    def pushed(self, cell: Cell) -> StageRecord:
        record = self.state.find(cell)
        if record is None or not record.kernel or (record.version is None and record.intent is Intent.PUSH):
            raise NotPushedError(cell.stage, self.paths.root, cell=cell.name)
        return record

    def has_outputs(self, cell: Cell) -> bool:
        return self.paths.cell_outputs(cell).is_dir()

    def is_done(self, cell: Cell, key: str) -> bool:
        """The cell completed with exactly this key and its outputs are here."""
        record = self.record(cell)
        return record.key == key and record.status is RunStatus.COMPLETE and self.has_outputs(cell)

    def is_running(self, cell: Cell, key: str) -> bool:
        record = self.record(cell)
        return record.key == key and record.version is not None and record.status in (RunStatus.QUEUED, RunStatus.RUNNING)

    def _push(self, name: str, record: StageRecord, *, key: str, kernel_id: str, folder: Path) -> PushResult:
        """Push the kernel in `folder`, recording the intent first and the version after."""
        record.mark_pushing(key=key, kernel=kernel_id, prior_version=self.backend.latest_version(kernel_id))
        self.state.save()
        pushed = self.backend.push(folder)
        record.mark_pushed(key=key, kernel=pushed.kernel, version=pushed.version, url=pushed.url, at=self._now())
        self.state.save()
        self._seen[name] = RunStatus.QUEUED
        self._run_start.pop(name, None)
        return pushed

    def _settle(self, record: StageRecord, what: str) -> Adopted | None:
        """Resolve a push the last command asked for without recording its answer: take the
        version it made, if it made one, else forget the intent."""
        if record.intent is not Intent.PUSH:
            return None
        latest = self.backend.latest_version(record.kernel)
        if latest is not None and (record.prior_version is None or latest > record.prior_version):
            record.mark_pushed(key=record.intent_key, kernel=record.kernel, version=latest, url="", at=self._now())
            self.state.save()
            return Adopted(what, latest)
        record.intent, record.intent_key, record.prior_version = Intent.NONE, "", None
        self.state.save()
        return None

    def settle(self, cell: Cell) -> Adopted | None:
        """A push of the cell interrupted before its version was recorded, settled."""
        record = self.state.find(cell)
        return self._settle(record, str(cell)) if record is not None else None

    def push(self, kernel: RenderedKernel) -> PushResult:
        """Write the kernel folder, push it, and record the run as the one to follow."""
        unpinned = [
            slug
            for slug in self.pipeline.stage(kernel.stage).dataset_sources
            if self.pipeline.datasets[slug].via is Via.MODEL
            and slug not in self.model_versions(kernel.stage)
        ]
        if unpinned:
            raise MissingOutputError(
                f"stage {kernel.stage} reads {unpinned[0]} as a Kaggle Model, which has no version published from "
                f"{self.paths.root}; publish it first (kernelgen publish {unpinned[0]}, or run the chain)"
            )
        folder = write_kernels([kernel], self.paths.kernels)[0]
        cell = kernel.cell or Cell(kernel.stage)
        record = self.record(cell)
        pushed = self._push(f"stage{cell.key}", record, key=self.key(kernel), kernel_id=kernel.kernel_id, folder=folder)
        record.params = {p.name: p.value for p in kernel.params}
        record.sources = {p.name: p.source for p in kernel.params}
        self.state.save()
        return pushed

    def _poll(self, name: str, record: StageRecord) -> KernelState:
        live = self.backend.status(record.ref)
        self._time_run(name, record, live.status)
        if record.mark_status(live.status, live.message, at=self._now()):
            self.state.save()
        if live.status.finished:
            self._stop_following(name)
        return live

    def poll(self, cell: Cell) -> KernelState:
        return self._poll(f"stage{cell.key}", self.pushed(cell))

    def log_lines(self, cell: Cell) -> list[str]:
        """Log lines the cell's run printed since the last call, while it is running."""
        record = self.pushed(cell)
        name = f"stage{cell.key}"
        if record.status is not RunStatus.RUNNING:
            return []
        current = self._logs.get(name)
        if current is None or current[0] != record.ref:
            self._stop_following(name)
            ref = record.ref
            current = self._logs[name] = (ref, LogFollower(lambda: self.backend.log_stream(ref)))
        return current[1].take()

    def stop_following(self) -> None:
        """Stop every log this object follows."""
        for name in list(self._logs):
            self._stop_following(name)

    def _stop_following(self, name: str) -> None:
        current = self._logs.pop(name, None)
        if current is not None:
            current[1].close()

    def _time_run(self, name: str, record: StageRecord, status: RunStatus) -> None:
        """Record a run's time from the first RUNNING to the first COMPLETE seen here; a run
        first seen already running is not timed (its start was missed)."""
        before = self._seen.get(name)
        self._seen[name] = status
        if status is RunStatus.RUNNING and before is RunStatus.QUEUED:
            self._run_start[name] = self.timing.clock()
        elif status is RunStatus.COMPLETE and name in self._run_start:
            record.run_seconds = self.timing.clock() - self._run_start.pop(name)
            record.run_profile = self.profile_name

    def wait(
        self,
        cell: Cell,
        *,
        timeout: float,
        backoff: Backoff = KERNEL_BACKOFF,
        on_poll: Callable[[KernelState, float], None] | None = None,
    ) -> KernelState:
        """Poll until the run ends; every state seen is recorded."""
        record = self.pushed(cell)
        return poll_until(
            lambda: self.poll(cell),
            lambda state: state.status.finished,
            timeout=timeout,
            backoff=backoff,
            clock=self.timing.clock,
            sleep=self.timing.sleep,
            on_poll=on_poll,
            what=f"kernel {record.ref}",
            describe=lambda state: state.status.value,
        )

    def collect(self, cell: Cell, dest: Path | None = None) -> tuple[Path, KernelOutput]:
        """Download the run's files and log; into the work folder's outputs unless `dest`.

        The outputs folder is replaced only once the download is whole.
        """
        record = self.pushed(cell)
        target = (dest or self.paths.cell_outputs(cell)).resolve()
        with staged_dir(target) as scratch:
            output = self.backend.output(record.ref, scratch)
            files = [target / path.relative_to(scratch) for path in output.files]
        if dest is None:
            record.outputs = str(target)
            self.state.save()
        return target, KernelOutput(files=files, log=output.log)

    # -- wheel houses -------------------------------------------------------------------
    def wheel_houses(self, stages: list[int]) -> list[WheelHouse]:
        """The distinct wheel houses the given stages install from, in stage order."""
        return wheel_houses(self.pipeline, stages)

    def wheels_record(self, house: WheelHouse) -> StageRecord:
        return self.state.wheels.setdefault(house.slug, StageRecord())

    def wheels_key(self, house: WheelHouse) -> tuple[str, dict[str, bytes]]:
        files = render_wheels(house, self.username)
        return kernel_digest(files), files

    def wheels_built(self, house: WheelHouse) -> bool:
        """The same wheel-house kernel already completed from this work folder."""
        record = self.wheels_record(house)
        key, _ = self.wheels_key(house)
        return record.key == key and record.status is RunStatus.COMPLETE

    def settle_wheels(self, house: WheelHouse) -> Adopted | None:
        return self._settle(self.wheels_record(house), f"wheels {house.slug}")

    def push_wheels(self, house: WheelHouse) -> PushResult:
        key, files = self.wheels_key(house)
        with staged_dir(self.paths.kernels / house.slug) as folder:
            for name, data in files.items():
                (folder / name).write_bytes(data)
        record = self.wheels_record(house)
        return self._push(f"wheels:{house.slug}", record, key=key, kernel_id=house.kernel_id(self.username), folder=self.paths.kernels / house.slug)

    def poll_wheels(self, house: WheelHouse) -> KernelState:
        return self._poll(f"wheels:{house.slug}", self.wheels_record(house))

    # -- datasets ----------------------------------------------------------------------
    def dataset_spec(self, slug: str) -> DatasetSpec:
        if slug not in self.pipeline.datasets:
            raise UnknownDatasetError(slug, sorted(self.pipeline.datasets))
        return self.pipeline.datasets[slug]

    def missing(self, spec: DatasetSpec) -> list[Path]:
        return missing_files(spec, self.outputs_of)

    def _producer_ref(self, spec: DatasetSpec) -> str:
        """The producing kernel's run (`owner/slug/version`; each cell's, comma-separated,
        for a matrix stage); empty when one never ran from here."""
        records = [self.state.find(cell) for cell in self.cells(spec.producer)]
        if any(record is None or not record.kernel for record in records):
            return ""
        return ",".join(record.ref for record in records if record is not None)

    def _complete_spec(self, slug: str) -> DatasetSpec:
        spec = self.dataset_spec(slug)
        absent = self.missing(spec)
        if absent:
            raise MissingOutputError(f"dataset {slug}: missing stage outputs: {', '.join(map(str, absent))}")
        return spec

    def link(self, slug: str) -> str | None:
        """Take `via = "kernel"` dataset `slug` to be the producing stage's collected run:
        nothing is uploaded. Returns that run's `owner/slug/version`, None when unchanged."""
        spec = self._complete_spec(slug)
        ref = self._producer_ref(spec)
        if not ref:
            raise NotPushedError(spec.producer, self.paths.root)
        digest = files_digest(spec, self.outputs_of)
        record = self.state.dataset(slug)
        if (record.digest, record.dataset, record.status) == (digest, ref, DatasetStatus.READY):
            return None
        record.digest, record.dataset, record.status = digest, ref, DatasetStatus.READY
        self.state.save()
        return ref

    def settle_dataset(self, slug: str) -> Adopted | None:
        """Resolve a publication the last command asked for without recording its answer."""
        record = self.state.datasets.get(slug)
        if record is None or record.intent is not Intent.PUBLISH:
            return None
        spec = self.pipeline.datasets[slug]
        latest = (
            self.backend.model_version if spec.via is Via.MODEL else self.backend.dataset_version
        )(record.dataset)
        if latest is not None and (record.prior_version is None or latest > record.prior_version):
            record.mark_published(digest=record.intent_digest, dataset=record.dataset, version=latest)
            self.state.save()
            return Adopted(f"dataset {slug}", latest)
        record.intent, record.intent_digest, record.prior_version = Intent.NONE, "", None
        self.state.save()
        return None

    def publish(self, slug: str) -> PublishResult | None:
        """Create or version dataset `slug` from the outputs; None when it already holds them."""
        spec = self._complete_spec(slug)
        if spec.via is Via.KERNEL:
            raise MissingOutputError(
                f"dataset {slug} is read from stage {spec.producer}'s kernel output (via = \"kernel\"): "
                "there is nothing to publish"
            )
        digest = files_digest(spec, self.outputs_of)
        target = (
            spec.model_instance(self.username)
            if spec.via is Via.MODEL
            else f"{self.username}/{slug}"
        )
        record = self.state.dataset(slug)
        held = record.status in (DatasetStatus.READY, DatasetStatus.PROCESSING)
        if (record.digest, record.dataset) == (digest, target) and held:
            return None
        folder = build_dataset(spec, self.outputs_of, self.paths.datasets, username=self.username)
        if spec.via is Via.MODEL:
            prior = self.backend.model_version(target)
            record.mark_publishing(digest=digest, dataset=target, prior_version=prior)
            self.state.save()
            published = self.backend.publish_model(folder)
            # the version the request made, once Kaggle has processed it
            record.mark_published(
                digest=digest, dataset=published.dataset, version=(prior or 0) + 1
            )
        else:
            record.mark_publishing(
                digest=digest, dataset=target, prior_version=self.backend.dataset_version(target)
            )
            self.state.save()
            published = self.backend.publish(folder)
            record.mark_published(
                digest=digest,
                dataset=published.dataset,
                version=self.backend.dataset_version(published.dataset),
            )
        self.state.save()
        return published

    def poll_dataset(self, slug: str) -> DatasetStatus:
        """The processing state of dataset `slug`'s latest version; a model version is ready
        once Kaggle lists it as the instance's current one (the API reports no state for it)."""
        record = self.state.datasets[slug]
        if self.pipeline.datasets[slug].via is Via.MODEL:
            current = self.backend.model_version(record.dataset)
            ready = current is not None and record.version is not None and current >= record.version
            status = DatasetStatus.READY if ready else DatasetStatus.PROCESSING
        else:
            status = self.backend.dataset_status(record.dataset)
        if status is not record.status:
            record.status = status
            self.state.save()
        return status

    def wait_dataset(self, slug: str, *, timeout: float, backoff: Backoff = DATASET_BACKOFF) -> DatasetStatus:
        """Poll dataset `slug`'s latest version until it is ready to mount."""
        record: DatasetRecord = self.state.datasets[slug]
        status = poll_until(
            lambda: self.poll_dataset(slug),
            lambda s: s is not DatasetStatus.PROCESSING,
            timeout=timeout,
            backoff=backoff,
            clock=self.timing.clock,
            sleep=self.timing.sleep,
            what=f"dataset {record.dataset}",
            describe=lambda s: s.value,
        )
        if status is DatasetStatus.ERROR:
            raise DatasetFailedError(f"dataset {record.dataset}: processing of its latest version failed")
        return status

    # -- submissions ----------------------------------------------------------------------
    def submit(self, cell: Cell, competition: str, message: str) -> tuple[SubmissionRecord, str]:
        """Submit the cell's collected version to `competition`; the submission is
        recorded in the state with that version. Returns it and the backend's message."""
        record = self.pushed(cell)
        if record.status is not RunStatus.COMPLETE or not (self.paths.cell_outputs(cell) / SUBMISSION_FILE).is_file():
            raise MissingOutputError(f"{cell} has no complete run with a {SUBMISSION_FILE} in {self.paths.root} to submit")
        submitted = self.backend.submit(competition, record.kernel, record.version or 0, SUBMISSION_FILE, message)
        entry = SubmissionRecord(competition, record.kernel, record.version, submitted.ref, self._now())
        self.state.submissions.append(entry)
        self.state.save()
        return entry, submitted.message

    def submit_for_score(
        self,
        cell: Cell,
        competition: str,
        *,
        timeout: float | None,
        say: Callable[[str], None],
        recorded: Callable[[SubmissionRecord], None],
    ) -> SubmissionRecord:
        """Submit the cell's collected version, then wait up to `timeout` seconds for its
        score (not at all when None). `say` gets each line to show; `recorded` gets the
        submission when it is made and again once it is scored or has failed."""
        record = self.pushed(cell)
        entry, message = self.submit(cell, competition, f"kernelgen: {record.kernel} version {record.version}")
        say(message)
        recorded(entry)
        if timeout is None or entry.ref is None:
            return entry
        say(f"submission {entry.ref}: waiting for its score (up to {timeout:.0f} s)")
        try:
            self.wait_score(entry, timeout=timeout)
        finally:
            if entry.status is not SubmissionStatus.PENDING:
                recorded(entry)
        say(entry.describe())
        return entry

    def wait_score(
        self,
        entry: SubmissionRecord,
        *,
        timeout: float,
        backoff: Backoff = SCORE_BACKOFF,
        on_poll: Callable[[SubmissionState, float], None] | None = None,
    ) -> SubmissionState:
        """Poll the submission until Kaggle scores it or reports an error; what it ends as
        is recorded. SubmissionFailedError when it failed, PollTimeoutError past `timeout`."""
        if entry.ref is None:
            raise SubmissionFailedError(
                f"the backend gave submission of {entry.kernel} no reference to follow"
            )
        ref = entry.ref
        final = poll_until(
            lambda: self.backend.submission(entry.competition, ref),
            lambda state: state.status is not SubmissionStatus.PENDING,
            timeout=timeout,
            backoff=backoff,
            clock=self.timing.clock,
            sleep=self.timing.sleep,
            on_poll=on_poll,
            what=f"submission {ref} ({entry.kernel} version {entry.version})",
            describe=lambda state: state.status.value,
        )
        entry.status, entry.public_score, entry.private_score = final.status, final.public_score, final.private_score
        entry.message = final.message
        self.state.save()
        if final.status is SubmissionStatus.ERROR:
            raise SubmissionFailedError(
                f"submission {ref} ({entry.kernel} version {entry.version}) failed: {final.message or 'no reason given'}"
            )
        return final
