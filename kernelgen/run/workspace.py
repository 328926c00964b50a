"""A work folder opened for one command: its paths, its state, its backend and its lock.

Every command that touches a work folder opens a `Workspace` on it and closes it when
done (it is a context manager). One that changes the folder (`chain`, `push`,
`output`, `publish`) holds it exclusively: a second such command refuses at once,
naming the holder, before anything is rendered or sent. One that only reads (`status`,
`report`) works beside a running chain and never writes the state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType

from kernelgen.backends.base import Backend
from kernelgen.backends.execute import DEFAULT_JUPYTER_KERNEL
from kernelgen.clock import Timing, timestamp
from kernelgen.errors import WorkFolderError
from kernelgen.run.ledger import LEDGER_FILE
from kernelgen.run.localdata import LOCAL_DATA_DIR, local_competition_data
from kernelgen.run.lock import WorkLock
from kernelgen.run.state import PREVIOUS_STATE_FILE, STATE_FILE, ChainState
from kernelgen.spec.matrix import Cell
from kernelgen.spec.project import Project

REPORT_FILE = "report.html"
SUBMISSION_FILE = "submission.csv"


class BackendKind(str, Enum):
    KAGGLE = "kaggle"
    LOCAL = "local"


class Access(str, Enum):
    """What a command does to the work folder: read it, or change it (and hold it)."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class WorkPaths:
    """Where everything of a work folder lies."""

    root: Path

    @property
    def outputs_root(self) -> Path:
        return self.root / "outputs"

    def outputs(self, stage: int) -> Path:
        """The downloaded outputs (and log) of stage `stage`'s collected run."""
        return self.outputs_root / f"stage{stage}"

    def cell_outputs(self, cell: Cell) -> Path:
        """The outputs of one cell's collected run: its stage's folder, or a folder per
        cell inside it for a matrix stage (`outputs/stage4/fold-0`)."""
        folder = self.outputs(cell.stage)
        return folder / cell.name if cell.values else folder

    def submission(self, stage: int) -> Path:
        """Where a stage's `submission.csv` lands, if it writes one."""
        return self.outputs(stage) / SUBMISSION_FILE

    @property
    def kernels(self) -> Path:
        """Rendered kernel folders, as last pushed."""
        return self.root / "kernels"

    @property
    def datasets(self) -> Path:
        """Dataset folders, as last published."""
        return self.root / "datasets"

    @property
    def local_store(self) -> Path:
        """The local backend's kernels, runs and datasets."""
        return self.root / "local-store"

    @property
    def local_data(self) -> Path:
        """Competition data the pipeline's generator made for local runs."""
        return self.root / LOCAL_DATA_DIR

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def previous_state(self) -> Path:
        return self.root / PREVIOUS_STATE_FILE

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def ledger(self) -> Path:
        """Every run made from this folder (run/ledger.py)."""
        return self.root / LEDGER_FILE


class Workspace:
    """A work folder on one backend, for one command. Build it with `Workspace.open`."""

    def __init__(
        self,
        project: Project,
        paths: WorkPaths,
        backend: Backend,
        state: ChainState,
        *,
        timing: Timing,
        lock: WorkLock | None,
    ) -> None:
        self.project = project
        self.paths = paths
        self.backend = backend
        self.state = state
        self.timing = timing
        self._lock = lock

    @classmethod
    def open(
        cls,
        project: Project,
        folder: Path,
        *,
        backend: BackendKind | Backend,
        command: str,
        access: Access = Access.WRITE,
        timing: Timing | None = None,
        jobs: int = 2,
        jupyter_kernel: str = DEFAULT_JUPYTER_KERNEL,
        notify: Callable[[str], None] | None = None,
    ) -> Workspace:
        """Open `folder` for `command` on a backend: one of the kinds, made here, or one
        handed in (a test's stand-in).

        With `Access.WRITE` the folder is held first (WorkFolderBusy if another command
        holds it), then its state read and the backend made; `notify` sees notes, such
        as a hold taken over from a command that ended without letting go.
        """
        timing = timing or Timing()
        paths = WorkPaths(folder.resolve())
        lock = None
        if access is Access.WRITE:
            lock = WorkLock.acquire(paths.root, command=command, since=timestamp(timing.now()))
            if lock.taken_over is not None and notify is not None:
                notify(
                    f"{paths.root}: taking over from {lock.taken_over.describe()}, "
                    "which ended without letting go of it"
                )
        elif not paths.root.is_dir():
            raise WorkFolderError(f"work folder {paths.root} does not exist")
        try:
            name = backend.value if isinstance(backend, BackendKind) else backend.name
            state = ChainState.load(paths.state, name, frozen=access is Access.READ)
            if isinstance(backend, BackendKind):
                backend = _open_backend(
                    project, paths, backend, access=access, timing=timing, jobs=jobs,
                    jupyter_kernel=jupyter_kernel, notify=notify,
                )
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(project, paths, backend, state, timing=timing, lock=lock)

    def close(self) -> None:
        try:
            self.backend.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _open_backend(
    project: Project,
    paths: WorkPaths,
    kind: BackendKind,
    *,
    access: Access,
    timing: Timing,
    jobs: int,
    jupyter_kernel: str,
    notify: Callable[[str], None] | None,
) -> Backend:
    """The Kaggle backend, or one that runs the notebooks here in `jupyter_kernel`; a local
    one opened to change the folder gets competition data (generated once if needed)."""
    if kind is BackendKind.LOCAL:
        from kernelgen.backends.local import LocalBackend

        data = {}
        if access is Access.WRITE:
            data = local_competition_data(project.pipeline, project.config.data, paths.local_data, log=notify or print)
        return LocalBackend(
            paths.local_store, data, workers=jobs, packages=project.pipeline.packages, jupyter_kernel=jupyter_kernel
        )
    from kernelgen.backends.kaggle import KaggleBackend

    return KaggleBackend(sleep=timing.sleep, clock=timing.clock)  # retries are announced on stderr
