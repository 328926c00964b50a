"""What a chain run changed in a work folder: the state it started from
(`state.previous.json`, kept by the chain) against the state now."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kernelgen.run.state import ChainState, StageRecord

_ABSENT = object()


@dataclass(frozen=True)
class ParamChange:
    name: str
    before: Any
    after: Any
    source: str


@dataclass(frozen=True)
class StageChange:
    number: int
    what: str
    params: tuple[ParamChange, ...] = ()
    cell: str = ""

    @property
    def label(self) -> str:
        return f"stage {self.number} {self.cell}" if self.cell else f"stage {self.number}"

    @property
    def rerun(self) -> bool:
        return self.what.startswith(("rerun", "first run"))


def _what(before: StageRecord | None, after: StageRecord | None) -> str:
    ran_before = before is not None and bool(before.kernel)
    ran_now = after is not None and bool(after.kernel)
    if not ran_now:
        return "not run"
    assert after is not None
    if not ran_before:
        return f"first run (version {after.version})"
    assert before is not None
    if (before.kernel, before.version) != (after.kernel, after.version):
        reason = "" if before.key != after.key else " with the same kernel and inputs"
        return f"rerun{reason}: version {before.version} -> {after.version}"
    if before.status is not after.status:
        was = before.status.value if before.status else "unknown"
        now = after.status.value if after.status else "unknown"
        return f"same version {after.version}, {was} -> {now}"
    return f"unchanged (version {after.version})"


def _params(before: StageRecord | None, after: StageRecord | None) -> tuple[ParamChange, ...]:
    old = before.params if before else {}
    new = after.params if after else {}
    if not old:
        return ()
    changes = []
    for name in [*new, *(n for n in old if n not in new)]:
        a, b = old.get(name, _ABSENT), new.get(name, _ABSENT)
        if a != b or type(a) is not type(b):
            source = after.sources.get(name, "") if after else ""
            changes.append(
                ParamChange(name, None if a is _ABSENT else a, None if b is _ABSENT else b, source)
            )
    return tuple(changes)


def compare_states(previous: ChainState, current: ChainState, stages: Iterable[int]) -> list[StageChange]:
    """Per stage (per cell of a matrix stage): whether it ran again, and which of its
    parameters changed."""
    found = []
    for number in stages:
        for cell in current.cells_of(number):
            before, after = previous.find(cell), current.find(cell)
            found.append(StageChange(number, _what(before, after), _params(before, after), cell.name))
    return found
