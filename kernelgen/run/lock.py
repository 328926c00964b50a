"""One command at a time on a work folder.

Two chains on one folder would each push every stage (twice the GPU hours), and a
`push` beside a running chain would push again what the chain follows. A command that
changes the folder therefore holds an exclusive lock on it for as long as it runs.
The operating system drops the lock when its process ends, however it ends, so a
killed command never leaves the folder stuck; the holder's description stays in the
lock file until released, which tells the next command that it took over from one
that did not finish.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from kernelgen.errors import WorkFolderBusy

LOCK_FILE = ".kernelgen.lock"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a work folder."""

    pid: int
    command: str
    since: str

    def describe(self) -> str:
        return f"`kernelgen {self.command}` (pid {self.pid}, since {self.since})"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            raw = json.loads(text)
            return cls(int(raw["pid"]), str(raw["command"]), str(raw["since"]))
        except (ValueError, KeyError, TypeError):
            return None


class WorkLock:
    """An exclusive hold on a work folder, released by `release()` or by the process ending."""

    def __init__(self, folder: Path, fd: int, taken_over: Holder | None) -> None:
        self.folder = folder
        self._fd: int | None = fd
        self.taken_over = taken_over
        """The earlier holder whose process ended without letting go, if there was one."""

    @classmethod
    def acquire(cls, folder: Path, *, command: str, since: str) -> WorkLock:
        """Hold `folder` (made if absent) for `command`, or raise WorkFolderBusy naming its holder."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = Holder.parse(path.read_text(encoding="utf-8", errors="replace"))
            os.close(fd)
            raise WorkFolderBusy(folder, holder.describe() if holder else "another kernelgen command")
        stale = Holder.parse(os.read(fd, 4096).decode("utf-8", errors="replace"))
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        mine = {"pid": os.getpid(), "command": command, "since": since}
        os.write(fd, json.dumps(mine).encode())
        os.fsync(fd)
        return cls(folder, fd, stale)

    def release(self) -> None:
        """Let go, clearing the holder's description: the next command finds a clean folder."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)
