"""One exception root for every failure kernelgen expects and can explain.

The CLI prints a :class:`KernelgenError` as one line and exits non-zero; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class KernelgenError(Exception):
    """A failure with a message meant for the user."""

    exit_code = 1


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


class MetadataError(KernelgenError):
    """A kernel-metadata declaration, or metadata the Kaggle client would refuse."""

    def __init__(self, message: str, *, where: str | Path) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


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


class StageRunError(KernelgenError):
    """A stage failed while running locally."""

    def __init__(self, message: str, *, stage: int, log_tail: str = "") -> None:
        self.stage = stage
        self.log_tail = log_tail
        super().__init__(f"stage {stage} failed: {message}")


class AcceleratorError(KernelgenError):
    """An accelerator name Kaggle does not know, or one it no longer runs."""


class QuotaError(KernelgenError):
    """The GPU stages to run need more of the week's quota than is left."""


class BackendError(KernelgenError):
    """A backend (Kaggle or local) refused or failed a request."""


class AuthError(BackendError):
    """No usable Kaggle credentials, or Kaggle refused them."""


class KernelFailedError(BackendError):
    """A pushed kernel ended in error or was cancelled."""

    def __init__(self, message: str, *, stage: int | None = None, status: str = "", log_tail: str = "") -> None:
        self.stage = stage
        self.status = status
        self.log_tail = log_tail
        prefix = f"stage {stage}: " if stage is not None else ""
        super().__init__(prefix + message)


class PollTimeoutError(BackendError):
    """A kernel or dataset did not reach a final state in the time allowed."""
