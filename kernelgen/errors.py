"""One exception root for every failure kernelgen expects and can explain.

The CLI prints a :class:`KernelgenError` as one line and exits non-zero; any
other exception is a bug and keeps its traceback. Each situation has its own type,
carrying what a caller may want to act on (the stage, the file, the holder of a
work folder), so code never has to read a message to tell failures apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class KernelgenError(Exception):
    """A failure with a message meant for the user."""

    exit_code = 1


# -- what the project declares -------------------------------------------------------------


class ConfigError(KernelgenError):
    """The configuration file or a command-line override is wrong."""

    def __init__(self, message: str, *, source: str | Path | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class ParameterError(ConfigError):
    """A stage parameter override names an unknown field or has the wrong type."""

    def __init__(self, message: str, *, stage: int | None = None, valid: Sequence[str] = ()) -> None:
        self.stage = stage
        self.valid = tuple(valid)
        text = f"stage {stage}: {message}" if stage is not None else message
        if valid:
            text += f" (valid: {', '.join(valid)})"
        super().__init__(text)


class UnknownStageError(KernelgenError):
    def __init__(self, stage: object, known: Sequence[int]) -> None:
        self.stage = stage
        self.known = tuple(known)
        super().__init__(f"unknown stage {stage!r}; known stages: {', '.join(map(str, known))}")


class UnknownDatasetError(KernelgenError):
    def __init__(self, slug: str, known: Sequence[str]) -> None:
        self.slug = slug
        self.known = tuple(known)
        super().__init__(f"unknown dataset {slug!r}; known: {', '.join(known) or 'none'}")


class MetadataError(KernelgenError):
    """A kernel-metadata declaration, or metadata the Kaggle client would refuse."""

    def __init__(self, message: str, *, where: str | Path) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


class AcceleratorError(KernelgenError):
    """An accelerator name Kaggle does not know, or one it no longer runs."""


class SourceSyntaxError(KernelgenError):
    """A module of the project does not parse."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line or 0}: syntax error: {message}")


class ProjectCodeError(KernelgenError):
    """A `package.module:function` the project names cannot be loaded, or failed."""


class ScaffoldError(KernelgenError):
    """`kernelgen new` cannot make a project with that name or in that folder."""


# -- building kernels -----------------------------------------------------------------------


class RenderError(KernelgenError):
    """A stage could not be turned into a kernel."""

    def __init__(self, message: str, *, stage: int | None = None, template: str | None = None) -> None:
        self.stage = stage
        self.template = template
        where = []
        if stage is not None:
            where.append(f"stage {stage}")
        if template:
            where.append(f"template {template}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)


# -- a work folder and what it holds ----------------------------------------------------------


class WorkFolderError(KernelgenError):
    """The work folder cannot be used as asked: absent, another backend's, or unreadable."""


class WorkFolderBusy(WorkFolderError):
    """Another kernelgen command holds the work folder."""

    def __init__(self, folder: Path, holder: str) -> None:
        self.folder = folder
        self.holder = holder
        super().__init__(
            f"{folder} is in use by {holder}; wait for it to end, or use another --workdir"
        )


class MissingOutputError(KernelgenError):
    """Something a step needs from an earlier stage is not in the work folder."""


class NotPushedError(MissingOutputError):
    """A stage has no run to follow or fetch in this work folder."""

    def __init__(self, stage: int, folder: Path, *, cell: str = "") -> None:
        self.stage = stage
        what = f"stage {stage} {cell}" if cell else f"stage {stage}"
        super().__init__(f"{what} has not been pushed from {folder}")


class LocalDataError(KernelgenError):
    """The pipeline's generator of local competition data failed or made the wrong folders."""


class StageRunError(KernelgenError):
    """A stage failed while running here."""

    def __init__(self, message: str, *, stage: int, log_tail: str = "") -> None:
        self.stage = stage
        self.log_tail = log_tail
        super().__init__(f"stage {stage} failed: {message}")


class ChainError(KernelgenError):
    """A chain run could not go on: stages left blocked, or nothing to submit."""


class LedgerError(WorkFolderError):
    """The work folder's ledger cannot be read or written; a run goes on without it."""


class QuotaError(KernelgenError):
    """The GPU stages to run need more of the week's quota than is left."""


# -- backends ---------------------------------------------------------------------------------


class BackendError(KernelgenError):
    """A backend (Kaggle or local) refused or failed a request."""


class AuthError(BackendError):
    """No usable Kaggle credentials, or Kaggle refused them."""


class UnreachableError(BackendError):
    """Kaggle could not be reached: no network, a name that does not resolve, a proxy
    that refuses. Work already running on Kaggle is not affected."""


class KernelFailedError(BackendError):
    """A pushed kernel ended in error or was cancelled."""

    def __init__(
        self, message: str, *, stage: int | None = None, status: str = "", log_tail: str = ""
    ) -> None:
        self.stage = stage
        self.status = status
        self.log_tail = log_tail
        prefix = f"stage {stage}: " if stage is not None else ""
        super().__init__(prefix + message)


class SubmissionFailedError(BackendError):
    """Kaggle could not score a submission."""


class DatasetFailedError(BackendError):
    """A dataset version failed to process."""


class PollTimeoutError(BackendError):
    """A kernel or dataset did not reach a final state in the time allowed."""
