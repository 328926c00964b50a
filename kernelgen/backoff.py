"""Waiting on something remote: growing intervals, a hard deadline, no real waits in tests.

A kernel run takes minutes to hours and a dataset a few minutes to process.
Polling at a fixed short interval wastes API quota (and draws 429s); polling at a
fixed long one adds latency to every short stage. Intervals therefore start short and
grow by a factor up to a cap, and every wait has a deadline, so that a kernel stuck in
"running" ends as a clear error instead of a hang. One `Backoff` describes the
intervals everywhere: the chain's polls, `push --wait`, dataset waits and the delays
between retries of a failed call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kernelgen.clock import format_elapsed
from kernelgen.errors import PollTimeoutError

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Waits of `initial` seconds, each `factor` times the last, never more than `maximum`."""

    initial: float
    factor: float = 1.5
    maximum: float = 120.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.maximum <= 0:
            raise ValueError("backoff intervals must be positive and must not shrink")

    @property
    def first(self) -> float:
        return min(self.initial, self.maximum)

    def after(self, interval: float) -> float:
        """The wait that follows one of `interval` seconds."""
        return min(interval * self.factor, self.maximum)

    def delay(self, attempt: int) -> float:
        """The wait before try `attempt + 1` (1 for the wait after the first try)."""
        return min(self.initial * self.factor ** (attempt - 1), self.maximum)


KERNEL_BACKOFF = Backoff(initial=10.0, factor=1.5, maximum=120.0)
"""Kernel runs: minutes to hours."""

DATASET_BACKOFF = Backoff(initial=5.0, factor=1.5, maximum=30.0)
"""Dataset versions: a few minutes of processing."""

SCORE_BACKOFF = Backoff(initial=30.0, factor=1.5, maximum=300.0)
"""Submissions: Kaggle reruns the kernel on the hidden test set before scoring it."""

LOCAL_BACKOFF = Backoff(initial=1.0, factor=1.5, maximum=5.0)
"""Runs on this machine report their state from files: asking often costs nothing."""


def poll_until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    backoff: Backoff = KERNEL_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_poll: Callable[[T, float], None] | None = None,
    what: str = "remote operation",
    describe: Callable[[T], str] = str,
) -> T:
    """Call `fetch` until `done` accepts its value, and return that value.

    The first call is immediate; the waits between calls follow `backoff` and never
    run past the deadline, so the last call happens right at `timeout`. `on_poll(value,
    elapsed)` sees every value, for progress display. Elapsed time is the larger of
    what `clock` says and the sum of requested sleeps, so a sleep that does not move
    the clock still ends the loop.

    Raises:
        PollTimeoutError: `done` never accepted a value within `timeout` seconds; the
            message names `what` and the last value seen (as `describe` writes it).
    """
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    start = clock()
    slept = 0.0
    interval = backoff.first
    polls = 0
    while True:
        value = fetch()
        polls += 1
        elapsed = max(clock() - start, slept)
        if on_poll is not None:
            on_poll(value, elapsed)
        if done(value):
            return value
        remaining = timeout - elapsed
        if remaining <= 0:
            raise PollTimeoutError(
                f"{what} did not finish within {format_elapsed(timeout)} "
                f"(last state: {describe(value)}, {polls} polls)"
            )
        wait = min(interval, remaining)
        sleep(wait)
        slept += wait
        interval = backoff.after(interval)
