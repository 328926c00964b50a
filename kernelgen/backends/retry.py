"""Bounded retries with exponential backoff and jitter, on an injected clock and sleep.

Remote calls fail in ways that fix themselves (rate limits, a restarting server, a
dropped connection) and in ways that never will (a bad request, a refused key).
This module only runs the loop; the caller decides which is which through a
``classify`` function, so the loop knows nothing about HTTP or Kaggle. Every retry
is announced through ``on_retry`` before its wait, so a user never waits in silence.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from kernelgen.backoff import Backoff

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts and total time are both capped.

    The delay before retry ``n`` (1-based) follows ``backoff``, scaled by a random
    factor in ``[1 - jitter, 1]`` so that many clients that failed together do not
    retry together. A server-requested delay (Retry-After) is used as given.
    """

    max_attempts: int = 6
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=2.0, factor=2.0, maximum=60.0))
    max_elapsed: float = 600.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, retry: int, rng: Callable[[], float]) -> float:
        """Delay before retry number ``retry`` (1 for the first retry)."""
        return self.backoff.delay(retry) * (1.0 - self.jitter * rng())


@dataclass(frozen=True)
class Verdict:
    """What a failure means: try again or not, and after how long if the server said.

    ``safe`` marks failures where the request certainly did no work on the server
    (a refused connection, a 429); only those may be retried for operations that
    are not idempotent and have no way to check what happened. ``within`` caps the
    time spent retrying this kind of failure below the policy's own cap.
    """

    retry: bool
    after: float | None = None
    safe: bool = False
    reason: str = ""
    within: float | None = None


FATAL = Verdict(retry=False)


@dataclass(frozen=True)
class Retrying:
    """One retry about to happen: what failed, why, which attempt comes next, and when."""

    what: str
    reason: str
    attempt: int
    attempts: int
    delay: float

    def describe(self) -> str:
        return (
            f"{self.what} failed ({self.reason}); attempt {self.attempt} of {self.attempts} "
            f"in {self.delay:.0f} s"
        )


class RetryExhausted(Exception):
    """The last failure of an operation that stayed retryable until the budget ran out."""

    def __init__(self, last: BaseException, *, attempts: int, elapsed: float, reason: str) -> None:
        self.last = last
        self.attempts = attempts
        self.elapsed = elapsed
        self.reason = reason
        super().__init__(f"gave up after {attempts} attempts in {elapsed:.0f}s ({reason})")


def call_with_retry(
    op: Callable[[], T],
    *,
    classify: Callable[[BaseException], Verdict],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    describe: str = "request",
    idempotent: bool = True,
    recover: Callable[[], T | None] | None = None,
    on_retry: Callable[[Retrying], None] | None = None,
) -> T:
    """Run ``op`` until it succeeds, fails for good, or the policy's budget is spent.

    A failure ``classify`` calls fatal is re-raised unchanged. A retryable one is
    retried after a delay, announced to ``on_retry``; when attempts or time run out,
    :class:`RetryExhausted` is raised with the last failure attached.

    For a non-idempotent ``op`` an unsafe failure (the server may have done the
    work) is retried only if ``recover`` is given: it is called first and, when
    it finds the work done, its result is returned instead of repeating ``op``.
    """
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return op()
        except Exception as exc:
            verdict = classify(exc)
            if not verdict.retry:
                raise
            if not (idempotent or verdict.safe or recover is not None):
                raise
            elapsed = clock() - start
            if attempt >= policy.max_attempts:
                raise RetryExhausted(exc, attempts=attempt, elapsed=elapsed, reason=verdict.reason) from exc
            delay = verdict.after if verdict.after is not None else policy.delay(attempt, rng)
            budget = policy.max_elapsed if verdict.within is None else min(policy.max_elapsed, verdict.within)
            if elapsed + delay > budget:
                raise RetryExhausted(exc, attempts=attempt, elapsed=elapsed, reason=verdict.reason) from exc
            if on_retry is not None:
                on_retry(Retrying(describe, verdict.reason, attempt + 1, policy.max_attempts, delay))
            sleep(delay)
            if recover is not None and not verdict.safe:
                done = recover()
                if done is not None:
                    return done
