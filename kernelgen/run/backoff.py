"""Wait for something remote to finish: growing intervals, a hard deadline, no real waits in tests.

A kernel run takes minutes to hours and a dataset a few minutes to process.
Polling at a fixed short interval wastes API quota (and draws 429s); polling
at a fixed long one adds latency to every short stage. Intervals therefore
start short and grow by a factor up to a cap, and every wait has a timeout so
that a kernel stuck in "running" ends as a clear error instead of a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kernelgen.backends.base import Backend, DatasetStatus, KernelState
from kernelgen.errors import BackendError, PollTimeoutError

T = TypeVar("T")

KERNEL_INITIAL = 10.0
KERNEL_MAX_INTERVAL = 120.0
DATASET_INITIAL = 5.0
DATASET_MAX_INTERVAL = 30.0
DEFAULT_FACTOR = 1.5


@dataclass(frozen=True)
class Timing:
    """The clock and sleep a command waits with: the real ones, or a test's fake."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def poll_until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    initial: float = KERNEL_INITIAL,
    factor: float = DEFAULT_FACTOR,
    max_interval: float = KERNEL_MAX_INTERVAL,
    on_poll: Callable[[T, float], None] | None = None,
    what: str = "remote operation",
) -> T:
    """Call ``fetch`` until ``done`` accepts its value, and return that value.

    The first call is immediate; the waits between calls are ``initial``,
    ``initial * factor``, ... capped at ``max_interval``, and never run past the
    deadline, so the last call happens right at ``timeout``. ``on_poll(value,
    elapsed)`` sees every value, for progress display.

    Elapsed time is the larger of what ``clock`` says and the sum of requested
    sleeps, so a sleep that does not move the clock still ends the loop.

    Raises:
        PollTimeoutError: ``done`` never accepted a value within ``timeout``
            seconds; the message names ``what`` and the last value seen.
    """
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    if initial <= 0 or factor < 1 or max_interval <= 0:
        raise ValueError("intervals must be positive and must not shrink")
    start = clock()
    slept = 0.0
    interval = min(initial, max_interval)
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
                f"{what} did not finish within {_duration(timeout)} "
                f"(last state: {_describe(value)}, {polls} polls)"
            )
        wait = min(interval, remaining)
        sleep(wait)
        slept += wait
        interval = min(interval * factor, max_interval)


def max_polls(
    timeout: float,
    *,
    initial: float = KERNEL_INITIAL,
    factor: float = DEFAULT_FACTOR,
    max_interval: float = KERNEL_MAX_INTERVAL,
) -> int:
    """The most calls :func:`poll_until` makes before its timeout: a bound worth stating."""
    polls, waited, interval = 1, 0.0, min(initial, max_interval)
    while waited < timeout:
        waited += min(interval, timeout - waited)
        polls += 1
        interval = min(interval * factor, max_interval)
    return polls


def wait_kernel_finished(
    backend: Backend,
    kernel: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_poll: Callable[[KernelState, float], None] | None = None,
    initial: float = KERNEL_INITIAL,
    max_interval: float = KERNEL_MAX_INTERVAL,
) -> KernelState:
    """Poll ``kernel`` (``owner/slug`` or ``owner/slug/version``) until it stops running.

    Returns the final state whatever it is; deciding what an error means is the
    caller's business.
    """
    return poll_until(
        lambda: backend.status(kernel),
        lambda state: state.status.finished,
        timeout=timeout,
        clock=clock,
        sleep=sleep,
        initial=initial,
        max_interval=max_interval,
        on_poll=on_poll,
        what=f"kernel {kernel}",
    )


def wait_dataset_ready(
    backend: Backend,
    dataset: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_poll: Callable[[DatasetStatus, float], None] | None = None,
    initial: float = DATASET_INITIAL,
    max_interval: float = DATASET_MAX_INTERVAL,
) -> DatasetStatus:
    """Poll ``dataset`` until its latest version is ready to mount.

    Raises:
        BackendError: processing failed.
        PollTimeoutError: still processing after ``timeout`` seconds.
    """
    status = poll_until(
        lambda: backend.dataset_status(dataset),
        lambda s: s is not DatasetStatus.PROCESSING,
        timeout=timeout,
        clock=clock,
        sleep=sleep,
        initial=initial,
        max_interval=max_interval,
        on_poll=on_poll,
        what=f"dataset {dataset}",
    )
    if status is DatasetStatus.ERROR:
        raise BackendError(f"dataset {dataset}: processing of its latest version failed")
    return status


def _describe(value: object) -> str:
    if isinstance(value, KernelState):
        return value.status.value
    if isinstance(value, DatasetStatus):
        return value.value
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
