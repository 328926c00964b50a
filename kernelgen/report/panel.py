"""What a report panel is made of: figures, tables, notes and key figures.

The tool's template turns these into HTML, so a pipeline adding panels of its own
(`[report] panels = "package.module:function"` in `kernel-metadata/pipeline.toml`)
builds them from plain values and never writes markup; every text is escaped in one
place.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

IMAGE_TYPES = ("image/png", "image/jpeg")


@dataclass(frozen=True)
class Figure:
    """A picture embedded in the page: PNG or JPEG bytes, with text for screen readers."""

    kind: ClassVar[str] = "figure"
    data: bytes
    mime: str
    alt: str
    caption: str = ""

    def __post_init__(self) -> None:
        if self.mime not in IMAGE_TYPES:
            raise ValueError(f"figure type must be one of {', '.join(IMAGE_TYPES)}, got {self.mime!r}")

    @property
    def src(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class Table:
    kind: ClassVar[str] = "table"
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    caption: str = ""

    @classmethod
    def of(cls, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> Table:
        return cls(tuple(columns), tuple(tuple(row) for row in rows), caption)


@dataclass(frozen=True)
class Note:
    """A sentence for the reader; `missing` notes say what the work folder lacks."""

    kind: ClassVar[str] = "note"
    text: str
    level: Literal["info", "missing"] = "info"


@dataclass(frozen=True)
class Stats:
    """Key figures shown large: (label, value) pairs."""

    kind: ClassVar[str] = "stats"
    items: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, items: Sequence[tuple[str, str]]) -> Stats:
        return cls(tuple((str(label), str(value)) for label, value in items))


Block = Figure | Table | Note | Stats


@dataclass(frozen=True)
class Panel:
    """One section of the page; `key` becomes its HTML id (`panel-<key>`)."""

    key: str
    title: str
    blocks: tuple[Block, ...]
    intro: str = ""

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(b.text for b in self.blocks if isinstance(b, Note) and b.level == "missing")
