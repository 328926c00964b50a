"""The retry loop on its own: what is retried, how long it waits, when it stops."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kernelgen.backends.retry import FATAL, RetryExhausted, RetryPolicy, Verdict, call_with_retry
from kernelgen.backoff import Backoff


class Flaky:
    """Raises the given exceptions in turn, then returns ``result``."""

    def __init__(self, failures: list[BaseException], result: str = "ok") -> None:
        self.failures = list(failures)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


def classify(exc: BaseException) -> Verdict:
    if isinstance(exc, Transient):
        return Verdict(retry=True, after=exc.args[0] if exc.args else None, reason="transient")
    return FATAL


def run(op: Callable[[], str], policy: RetryPolicy, sleeps: list[float], **kw: object) -> str:
    now = [0.0]

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    return call_with_retry(
        op,
        classify=classify,
        policy=policy,
        sleep=sleep,
        clock=lambda: now[0],
        rng=lambda: 0.0,
        **kw,  # type: ignore[arg-type]
    )


def test_backoff_doubles_up_to_the_cap() -> None:
    sleeps: list[float] = []
    op = Flaky([Transient()] * 5)
    policy = RetryPolicy(max_attempts=6, backoff=Backoff(1, 2, 5), max_elapsed=100)
    assert run(op, policy, sleeps) == "ok"
    assert sleeps == [1, 2, 4, 5, 5]


def test_server_requested_delay_is_used_as_given() -> None:
    sleeps: list[float] = []
    assert run(Flaky([Transient(42.0)]), RetryPolicy(backoff=Backoff(2, 2, 5)), sleeps) == "ok"
    assert sleeps == [42.0]


def test_fatal_failures_are_raised_at_once() -> None:
    sleeps: list[float] = []
    op = Flaky([Permanent("no")])
    with pytest.raises(Permanent):
        run(op, RetryPolicy(), sleeps)
    assert op.calls == 1 and sleeps == []


def test_attempts_are_capped() -> None:
    sleeps: list[float] = []
    op = Flaky([Transient()] * 10)
    with pytest.raises(RetryExhausted) as info:
        run(op, RetryPolicy(max_attempts=3, backoff=Backoff(1, 2, 60)), sleeps)
    assert op.calls == 3 and info.value.attempts == 3
    assert isinstance(info.value.last, Transient)


def test_total_time_is_capped() -> None:
    sleeps: list[float] = []
    op = Flaky([Transient()] * 10)
    with pytest.raises(RetryExhausted):
        run(op, RetryPolicy(max_attempts=10, backoff=Backoff(10, 1, 60), max_elapsed=25), sleeps)
    assert sleeps == [10, 10]


def test_jitter_stays_within_its_band() -> None:
    policy = RetryPolicy(backoff=Backoff(8, 2, 60), jitter=0.25)
    assert policy.delay(1, lambda: 0.0) == 8
    assert policy.delay(1, lambda: 1.0) == 6
    assert policy.delay(4, lambda: 0.5) == pytest.approx(52.5)  # capped at 60, then jittered


def test_unsafe_failures_of_non_idempotent_work_are_not_repeated_blindly() -> None:
    sleeps: list[float] = []
    op = Flaky([Transient()])
    with pytest.raises(Transient):
        run(op, RetryPolicy(), sleeps, idempotent=False)
    assert op.calls == 1


def test_recover_finds_work_that_was_done_before_the_failure() -> None:
    sleeps: list[float] = []
    op = Flaky([Transient()])
    assert (
        run(
            op,
            RetryPolicy(backoff=Backoff(1, 2, 60)),
            sleeps,
            idempotent=False,
            recover=lambda: "already done",
        )
        == "already done"
    )
    assert op.calls == 1 and sleeps == [1]


def test_recover_that_finds_nothing_lets_the_retry_happen() -> None:
    sleeps: list[float] = []
    op = Flaky([Transient()])
    assert (
        run(op, RetryPolicy(backoff=Backoff(1, 2, 60)), sleeps, idempotent=False, recover=lambda: None)
        == "ok"
    )
    assert op.calls == 2


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)
