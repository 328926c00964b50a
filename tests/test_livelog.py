"""Following a live log: replays skipped, cuts and failures survived, a held stream never blocks."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from kernelgen.run.livelog import LogFollower, latest


class Server:
    """A log stream whose connections replay everything printed so far, then end or fail."""

    def __init__(self) -> None:
        self.printed: list[str] = []
        self.fail_next: list[BaseException] = []
        self.connections = 0

    def open(self) -> Iterator[str]:
        self.connections += 1
        failure = self.fail_next.pop(0) if self.fail_next else None
        for index, chunk in enumerate(list(self.printed)):
            if failure is not None and index == 1:
                raise failure
            yield chunk
        if failure is not None:
            raise failure


def test_each_poll_gets_only_the_new_lines_although_every_connection_replays() -> None:
    server = Server()
    follower = LogFollower(server.open)
    server.printed += ["epoch 1\n", "epoch 2\n"]
    assert follower.take() == ["epoch 1", "epoch 2"]
    assert follower.take() == []
    server.printed += ["epoch 3\n"]
    assert follower.take() == ["epoch 3"]
    assert server.connections == 3


def test_a_connection_cut_midway_is_resumed_without_repeating_lines() -> None:
    server = Server()
    follower = LogFollower(server.open)
    server.printed += ["a\n", "b\n", "c\n"]
    server.fail_next.append(ConnectionError("cut"))
    assert follower.take() == ["a"]
    assert follower.take() == ["b", "c"]


def test_partial_lines_wait_for_their_end_and_carriage_returns_keep_the_last_state() -> None:
    server = Server()
    follower = LogFollower(server.open)
    server.printed += ["loss 0.5", "0\n", "10%\r50%\r100%\r\n", "\n", "  \n"]
    assert follower.take() == ["loss 0.50", "100%"]
    server.printed += ["done"]
    assert follower.take() == []
    server.printed += ["\n"]
    assert follower.take() == ["done"]


def test_repeated_failures_stop_the_following_and_never_raise() -> None:
    server = Server()
    follower = LogFollower(server.open, max_failures=3)
    server.fail_next += [RuntimeError("HTTP 404")] * 3
    for _ in range(3):
        assert follower.take() == []
    assert not follower.following
    server.printed += ["late\n"]
    assert follower.take() == []
    assert server.connections == 3


def test_progress_resets_the_failure_count() -> None:
    server = Server()
    follower = LogFollower(server.open, max_failures=2)
    server.fail_next.append(RuntimeError("503"))
    assert follower.take() == []
    server.printed += ["one\n", "two\n"]
    server.fail_next.append(RuntimeError("cut after one"))
    assert follower.take() == ["one"]
    server.fail_next.append(RuntimeError("503"))
    assert follower.take() == []
    assert follower.following


def test_a_held_connection_is_drained_at_each_poll_without_blocking() -> None:
    more = threading.Event()
    release = threading.Event()
    delivered = threading.Semaphore(0)

    def held() -> Iterator[str]:
        yield "first\n"
        delivered.release()
        more.wait(5)
        yield "second\n"
        delivered.release()
        release.wait(5)

    follower = LogFollower(held, wait=0.05, budget=1.0)
    assert follower.take() == ["first"]  # a fresh connection: its replay is read, then the idle wait ends it
    more.set()
    assert delivered.acquire(timeout=5) and delivered.acquire(timeout=5)
    assert follower.take() == ["second"]  # the same connection, drained without waiting
    assert follower.take() == []
    follower.close()
    release.set()
    assert not follower.following


def test_latest() -> None:
    assert latest([]) == ""
    assert latest(["a", "b"]) == "b"
