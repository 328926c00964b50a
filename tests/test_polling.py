"""Waiting with one backoff and a deadline, on a fake clock: nothing here waits for real."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelgen.backoff import DATASET_BACKOFF, KERNEL_BACKOFF, Backoff, poll_until
from kernelgen.errors import PollTimeoutError
from tests.fakes import FakeClock


class Sequence:
    """Answers the given values in order, then repeats the last one; counts calls."""

    def __init__(self, values: Iterable[object]) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self) -> object:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return value


def polls_within(timeout: float, backoff: Backoff) -> int:
    """The calls a wait that never succeeds makes: one at once, one after each wait that
    fits before the deadline, the last one right at it."""
    calls, waited, interval = 1, 0.0, backoff.first
    while waited < timeout:
        waited += min(interval, timeout - waited)
        calls += 1
        interval = backoff.after(interval)
    return calls


def test_returns_the_first_accepted_value_without_waiting_first() -> None:
    time = FakeClock()
    fetch = Sequence(["a", "b", "done", "never"])
    found = poll_until(
        fetch, lambda v: v == "done", timeout=100, clock=time.clock, sleep=time.sleep, backoff=Backoff(1, 2, 10)
    )
    assert found == "done"
    assert fetch.calls == 3
    assert time.sleeps == [1, 2]


def test_intervals_grow_to_the_cap() -> None:
    time = FakeClock()
    poll_until(Sequence([0] * 7 + [1]), bool, timeout=1000, clock=time.clock, sleep=time.sleep, backoff=Backoff(1, 2, 8))
    assert time.sleeps == [1, 2, 4, 8, 8, 8, 8]


def test_the_delay_before_each_retry_follows_the_same_backoff() -> None:
    backoff = Backoff(2, 2, 60)
    assert [backoff.delay(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


def test_timeout_names_what_was_polled_and_for_how_long() -> None:
    time = FakeClock()
    fetch = Sequence(["running"])
    with pytest.raises(PollTimeoutError) as info:
        poll_until(
            fetch,
            lambda v: False,
            timeout=90,
            clock=time.clock,
            sleep=time.sleep,
            backoff=Backoff(10, 2, 40),
            what="kernel alice/stage1",
        )
    message = str(info.value)
    assert "kernel alice/stage1" in message and "1:30" in message and "running" in message
    # 10 + 20 + 40 + 20 (cut at the deadline): the last poll lands exactly on it
    assert time.sleeps == [10, 20, 40, 20]
    assert time.now == 90
    assert fetch.calls == 5 == polls_within(90, Backoff(10, 2, 40))


def test_on_poll_sees_every_value_and_the_elapsed_time() -> None:
    time = FakeClock()
    seen: list[tuple[object, float]] = []
    poll_until(
        Sequence(["q", "r", "c"]),
        lambda v: v == "c",
        timeout=60,
        clock=time.clock,
        sleep=time.sleep,
        backoff=Backoff(5, 1, 5),
        on_poll=lambda v, t: seen.append((v, t)),
    )
    assert seen == [("q", 0), ("r", 5), ("c", 10)]


def test_a_sleep_that_does_not_move_the_clock_still_ends() -> None:
    slept: list[float] = []
    fetch = Sequence([False])
    with pytest.raises(PollTimeoutError):
        poll_until(fetch, bool, timeout=30, clock=lambda: 0.0, sleep=slept.append, backoff=Backoff(10, 1, 10))
    assert slept == [10, 10, 10]
    assert fetch.calls == 4


def test_a_zero_timeout_polls_once() -> None:
    time = FakeClock()
    fetch = Sequence([False])
    with pytest.raises(PollTimeoutError):
        poll_until(fetch, bool, timeout=0, clock=time.clock, sleep=time.sleep)
    assert fetch.calls == 1 and time.sleeps == []


@pytest.mark.parametrize("settings_", [{"initial": 0}, {"factor": 0.5}, {"maximum": 0}])
def test_backoffs_that_would_never_end_are_refused(settings_: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**{"initial": 1.0, "factor": 2.0, "maximum": 5.0, **settings_})


def test_a_negative_timeout_is_refused() -> None:
    with pytest.raises(ValueError):
        poll_until(lambda: 1, bool, timeout=-1, clock=lambda: 0.0, sleep=lambda s: None)


@settings(max_examples=60, deadline=None)
@given(
    timeout=st.floats(min_value=0, max_value=20_000),
    initial=st.floats(min_value=0.5, max_value=100),
    factor=st.floats(min_value=1, max_value=3),
    cap=st.floats(min_value=1, max_value=600),
)
def test_calls_are_bounded_and_waits_never_pass_the_deadline(
    timeout: float, initial: float, factor: float, cap: float
) -> None:
    time = FakeClock()
    fetch = Sequence([False])
    backoff = Backoff(initial, factor, cap)
    with pytest.raises(PollTimeoutError):
        poll_until(fetch, bool, timeout=timeout, clock=time.clock, sleep=time.sleep, backoff=backoff)
    assert fetch.calls == polls_within(timeout, backoff)
    assert time.now == pytest.approx(timeout)
    assert all(s <= max(initial, cap) + 1e-9 for s in time.sleeps)


def test_a_two_hour_kernel_wait_makes_few_calls() -> None:
    assert polls_within(2 * 3600, KERNEL_BACKOFF) <= 70


def test_a_dataset_wait_starts_short() -> None:
    time = FakeClock()
    poll_until(Sequence([0, 0, 0, 1]), bool, timeout=600, clock=time.clock, sleep=time.sleep, backoff=DATASET_BACKOFF)
    assert time.sleeps == [5, 7.5, 11.25]
