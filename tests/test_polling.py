"""Polling with backoff and deadlines, on a fake clock: nothing here waits for real."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelgen.backends.base import DatasetStatus, KernelState, RunStatus
from kernelgen.errors import BackendError, PollTimeoutError
from kernelgen.run.backoff import max_polls, poll_until, wait_dataset_ready, wait_kernel_finished
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


class FakeBackend:
    """Only the two status calls the wait helpers use."""

    name = "fake"

    def __init__(
        self, kernel: Iterable[RunStatus] = (), dataset: Iterable[DatasetStatus] = ()
    ) -> None:
        self.kernel = Sequence(KernelState(s) for s in kernel)
        self.dataset = Sequence(dataset)
        self.asked: list[str] = []

    def status(self, kernel: str) -> KernelState:
        self.asked.append(kernel)
        return self.kernel()  # type: ignore[return-value]

    def dataset_status(self, dataset: str) -> DatasetStatus:
        self.asked.append(dataset)
        return self.dataset()  # type: ignore[return-value]

    def push(self, folder: Path) -> object:
        raise NotImplementedError


def test_returns_the_first_accepted_value_without_waiting_first() -> None:
    time = FakeClock()
    fetch = Sequence(["a", "b", "done", "never"])
    assert (
        poll_until(
            fetch,
            lambda v: v == "done",
            timeout=100,
            clock=time.clock,
            sleep=time.sleep,
            initial=1,
            factor=2,
            max_interval=10,
        )
        == "done"
    )
    assert fetch.calls == 3
    assert time.sleeps == [1, 2]


def test_intervals_grow_to_the_cap() -> None:
    time = FakeClock()
    fetch = Sequence([0] * 7 + [1])
    poll_until(
        fetch,
        bool,
        timeout=1000,
        clock=time.clock,
        sleep=time.sleep,
        initial=1,
        factor=2,
        max_interval=8,
    )
    assert time.sleeps == [1, 2, 4, 8, 8, 8, 8]


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
            initial=10,
            factor=2,
            max_interval=40,
            what="kernel alice/stage1",
        )
    message = str(info.value)
    assert "kernel alice/stage1" in message and "1m 30s" in message and "running" in message
    # 10 + 20 + 40 + 20 (cut at the deadline): the last poll lands exactly on it
    assert time.sleeps == [10, 20, 40, 20]
    assert time.now == 90
    assert fetch.calls == 5 == max_polls(90, initial=10, factor=2, max_interval=40)


def test_on_poll_sees_every_value_and_the_elapsed_time() -> None:
    time = FakeClock()
    seen: list[tuple[object, float]] = []
    poll_until(
        Sequence(["q", "r", "c"]),
        lambda v: v == "c",
        timeout=60,
        clock=time.clock,
        sleep=time.sleep,
        initial=5,
        factor=1,
        max_interval=5,
        on_poll=lambda v, t: seen.append((v, t)),
    )
    assert seen == [("q", 0), ("r", 5), ("c", 10)]


def test_a_sleep_that_does_not_move_the_clock_still_ends() -> None:
    slept: list[float] = []
    fetch = Sequence([False])
    with pytest.raises(PollTimeoutError):
        poll_until(
            fetch,
            bool,
            timeout=30,
            clock=lambda: 0.0,
            sleep=slept.append,
            initial=10,
            factor=1,
            max_interval=10,
        )
    assert slept == [10, 10, 10]
    assert fetch.calls == 4


def test_a_zero_timeout_polls_once() -> None:
    time = FakeClock()
    fetch = Sequence([False])
    with pytest.raises(PollTimeoutError):
        poll_until(fetch, bool, timeout=0, clock=time.clock, sleep=time.sleep)
    assert fetch.calls == 1 and time.sleeps == []


@pytest.mark.parametrize(
    "kwargs", [{"timeout": -1}, {"initial": 0}, {"factor": 0.5}, {"max_interval": 0}]
)
def test_rejects_settings_that_would_never_end(kwargs: dict[str, float]) -> None:
    settings_ = {"timeout": 10.0, "initial": 1.0, "factor": 2.0, "max_interval": 5.0, **kwargs}
    with pytest.raises(ValueError):
        poll_until(lambda: 1, bool, clock=lambda: 0.0, sleep=lambda s: None, **settings_)


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
    with pytest.raises(PollTimeoutError):
        poll_until(
            fetch,
            bool,
            timeout=timeout,
            clock=time.clock,
            sleep=time.sleep,
            initial=initial,
            factor=factor,
            max_interval=cap,
        )
    assert fetch.calls == max_polls(timeout, initial=initial, factor=factor, max_interval=cap)
    assert time.now == pytest.approx(timeout)
    assert all(s <= max(initial, cap) + 1e-9 for s in time.sleeps)


def test_a_two_hour_kernel_wait_makes_few_calls() -> None:
    assert max_polls(2 * 3600) <= 70


def test_wait_dataset_ready_polls_until_ready() -> None:
    time = FakeClock()
    backend = FakeBackend(dataset=[DatasetStatus.PROCESSING] * 3 + [DatasetStatus.READY])
    status = wait_dataset_ready(
        backend, "alice/stage1", timeout=600, clock=time.clock, sleep=time.sleep
    )
    assert status is DatasetStatus.READY
    assert backend.asked == ["alice/stage1"] * 4
    assert time.sleeps == [5, 7.5, 11.25]


def test_wait_dataset_ready_raises_on_failed_processing() -> None:
    time = FakeClock()
    backend = FakeBackend(dataset=[DatasetStatus.PROCESSING, DatasetStatus.ERROR])
    with pytest.raises(BackendError, match="dataset alice/stage2: processing"):
        wait_dataset_ready(backend, "alice/stage2", timeout=600, clock=time.clock, sleep=time.sleep)


def test_wait_dataset_ready_times_out() -> None:
    time = FakeClock()
    backend = FakeBackend(dataset=[DatasetStatus.PROCESSING])
    with pytest.raises(PollTimeoutError, match="dataset alice/stage4 did not finish within 5m 00s"):
        wait_dataset_ready(backend, "alice/stage4", timeout=300, clock=time.clock, sleep=time.sleep)
    assert time.now == 300


def test_wait_kernel_finished_returns_the_final_state() -> None:
    time = FakeClock()
    backend = FakeBackend(kernel=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.ERROR])
    progress: list[RunStatus] = []
    state = wait_kernel_finished(
        backend,
        "alice/stage1/3",
        timeout=600,
        clock=time.clock,
        sleep=time.sleep,
        on_poll=lambda s, _t: progress.append(s.status),
    )
    assert state.status is RunStatus.ERROR
    assert progress == [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.ERROR]
    assert backend.asked == ["alice/stage1/3"] * 3
