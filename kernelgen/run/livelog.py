"""Follow a running kernel's log while the poll loop does its work.

Kaggle streams a running session's log over one long response that it cuts after
a few idle minutes, and every new connection replays the log from the start. A
reader thread therefore holds the stream and counts events, skipping on each
reconnection those already read; the poll loop takes what arrived at each poll
and never blocks on the stream beyond a short wait for a fresh connection.
Following a log is a convenience: a failure to follow never fails a run, and the
whole log is still downloaded when the run ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Ended:
    """The connection ended: cut or finished (`error` None), or failed."""

    error: BaseException | None = None


class LogFollower:
    """One run's log, read from `open_stream()` (text chunks from the log's start).

    `take()` returns the lines that arrived since the last call. A fresh connection
    is given up to `wait` seconds between chunks and `budget` seconds in all before
    `take()` returns; after `max_failures` failed connections in a row without new
    text, following stops.
    """

    def __init__(
        self,
        open_stream: Callable[[], Iterable[str]],
        *,
        wait: float = 2.0,
        budget: float = 10.0,
        max_failures: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_stream = open_stream
        self.wait = wait
        self.budget = budget
        self.max_failures = max_failures
        self._clock = clock
        self._events: queue.Queue[str | _Ended] = queue.Queue()
        self._stop = threading.Event()
        self._connected = False
        self._read = 0
        self._failures = 0
        self._partial = ""

    @property
    def following(self) -> bool:
        return not self._stop.is_set() and self._failures < self.max_failures

    def take(self) -> list[str]:
        """Complete, non-blank lines that arrived since the last call, oldest first."""
        if not self.following:
            return []
        chunks: list[str] = []
        if not self._connected:
            self._connect()
            deadline = self._clock() + self.budget
            while (remaining := deadline - self._clock()) > 0:
                try:
                    item = self._events.get(timeout=min(self.wait, remaining))
                except queue.Empty:
                    break
                if self._ended(item, chunks):
                    return self._lines(chunks)
        for _ in range(self._events.qsize()):
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
            if self._ended(item, chunks):
                break
        return self._lines(chunks)

    def _ended(self, item: str | _Ended, chunks: list[str]) -> bool:
        """Keep a chunk, or note the end of the connection (True)."""
        if not isinstance(item, _Ended):
            chunks.append(item)
            return False
        self._connected = False
        self._count_failure(item, progressed=bool(chunks))
        return True

    def close(self) -> None:
        """Stop following; a reader blocked on the stream ends with its connection."""
        self._stop.set()

    def _connect(self) -> None:
        self._connected = True
        threading.Thread(target=self._reader, name="kernelgen-log", daemon=True).start()

    def _reader(self) -> None:
        """Read one connection, skipping what earlier connections already delivered."""
        try:
            for index, chunk in enumerate(self._open_stream()):
                if self._stop.is_set():
                    return
                if index < self._read:
                    continue
                self._read = index + 1
                self._events.put(chunk)
        except Exception as exc:
            self._events.put(_Ended(exc))
        else:
            self._events.put(_Ended())

    def _count_failure(self, ended: _Ended, *, progressed: bool) -> None:
        if ended.error is None or progressed:
            self._failures = 0
            return
        self._failures += 1
        _log.debug("log stream failed (%d in a row): %s", self._failures, ended.error)

    def _lines(self, chunks: list[str]) -> list[str]:
        """Whole lines of the text so far, each as a terminal would leave it after `\\r`."""
        *whole, self._partial = (self._partial + "".join(chunks)).split("\n")
        shown = []
        for line in whole:
            segments = [part.strip() for part in line.split("\r") if part.strip()]
            if segments:
                shown.append(segments[-1])
        return shown


def latest(lines: list[str]) -> str:
    """The line to show for a poll: the newest one, if any arrived."""
    return lines[-1] if lines else ""
