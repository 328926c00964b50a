"""Time as kernelgen reads, keeps and shows it.

Waiting code takes its clock and sleep from a `Timing`, so tests run hours of polling
on a fake clock in no time; wall-clock moments are kept as ISO 8601 UTC text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Timing:
    """The monotonic clock and sleep a command waits with, and the wall clock it records
    moments by: the real ones, or a test's fakes."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.time


def timestamp(seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC text, as run times are kept in the state."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def parse_timestamp(text: str) -> datetime | None:
    """A time kept by `timestamp`; None when empty or unreadable."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def format_elapsed(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
