"""Progress of a chain: a live table on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Protocol, TextIO

from kernelgen.clock import format_elapsed


@dataclass(frozen=True)
class StageRow:
    stage: int
    title: str
    status: str
    version: int | None
    elapsed: float
    note: str = ""
    log: str = ""
    cell: str = ""

    @property
    def label(self) -> str:
        """`stage 4`, or `stage 4 fold-0` for a cell of a matrix stage."""
        return f"stage {self.stage} {self.cell}" if self.cell else f"stage {self.stage}"

    @property
    def last_line(self) -> str:
        """The note's last line, else the latest line of a running kernel's log."""
        lines = [line for line in self.note.splitlines() if line.strip()]
        return lines[-1] if lines else self.log


class Reporter(Protocol):
    def update(self, rows: list[StageRow]) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainReporter:
    """One line per change of a stage's status or of its latest log line, for logs and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._seen: dict[str, tuple[str, int | None, str]] = {}

    def update(self, rows: list[StageRow]) -> None:
        for row in rows:
            key = (row.status, row.version, row.last_line)
            if self._seen.get(row.label) != key:
                self._seen[row.label] = key
                version = f" v{row.version}" if row.version is not None else ""
                extra = f" - {row.last_line}" if row.last_line else ""
                print(f"{row.label}{version}: {row.status} [{format_elapsed(row.elapsed)}]{extra}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        return None


class LiveReporter:
    """A table redrawn in place with rich while the chain runs."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self._live = Live(console=self.console, refresh_per_second=4, transient=False)
        self._live.start()

    def _table(self, rows: list[StageRow]):  # type: ignore[no-untyped-def]
        from rich.table import Table

        table = Table(title="kernelgen chain")
        for column in ("stage", "title", "status", "version", "elapsed", "last log line"):
            table.add_column(column)
        styles = {"complete": "green", "unchanged": "green", "error": "red", "cancelled": "red", "blocked": "yellow", "running": "cyan"}
        for row in rows:
            table.add_row(
                row.label.removeprefix("stage "),
                row.title,
                f"[{styles.get(row.status, 'white')}]{row.status}[/]",
                "" if row.version is None else str(row.version),
                format_elapsed(row.elapsed),
                row.last_line,
            )
        return table

    def update(self, rows: list[StageRow]) -> None:
        self._live.update(self._table(rows))

    def message(self, text: str) -> None:
        self._live.console.print(text)

    def close(self) -> None:
        self._live.stop()


def make_reporter(stream: TextIO | None = None) -> Reporter:
    target = stream or sys.stdout
    return LiveReporter() if target.isatty() else PlainReporter(target)
