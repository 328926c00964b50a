"""A stage's matrix: parameter fields that each take a list of values, every combination
of which (a cell) runs as a kernel of its own, and the cells it gives.

Declared as `[matrix]` in `kernel-metadata/stageN.toml` (`fold = [0, 1, 2]`; two fields
give their product), as `[profiles.NAME.matrix]` for a profile, or with
`--matrix stageN.FIELD=V1,V2` on the command line. A profile's matrix replaces the
declared one, and the command line's replaces both.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelgen.errors import MetadataError, ParameterError
from kernelgen.runtime.cells import cell_name

Matrix = tuple[tuple[str, tuple[Any, ...]], ...]
"""Each field with its values, in declared order."""

MATRIX_KEY = "matrix"


@dataclass(frozen=True, order=True)
class Cell:
    """One kernel of a stage: the stage's number and, for a matrix stage, one value of
    each matrix field. A stage without a matrix has one cell, without values."""

    stage: int
    values: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """`fold-0`, `fold-0-seed-1`; empty for a stage without a matrix."""
        return cell_name(dict(self.values)) if self.values else ""

    @property
    def key(self) -> str:
        """What identifies the cell in the work folder: `4`, `4/fold-0`."""
        return f"{self.stage}/{self.name}" if self.values else str(self.stage)

    @property
    def folder(self) -> str:
        """Its kernel's folder among the rendered kernels: `stage4`, `stage4-fold-0`."""
        return f"stage{self.stage}-{self.name}" if self.values else f"stage{self.stage}"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def __str__(self) -> str:
        return f"stage {self.stage} {self.name}" if self.values else f"stage {self.stage}"


def cells_of(stage: int, matrix: Matrix) -> list[Cell]:
    """The stage's cells in order: the product of its fields' values, the last field fastest."""
    if not matrix:
        return [Cell(stage)]
    names = [name for name, _ in matrix]
    return [Cell(stage, tuple(zip(names, combo, strict=True))) for combo in itertools.product(*(v for _, v in matrix))]


def parse_matrix(raw: object, *, label: str, where: Path) -> Matrix:
    """A `[matrix]` table (`label` names it in errors): each field a non-empty list of
    scalars, checked against the stage's `Params` when it renders."""
    if not isinstance(raw, Mapping):
        raise MetadataError(f"{label} must be a table of field = [values]", where=where)
    found = []
    for name, values in raw.items():
        if not isinstance(values, list) or not values:
            raise MetadataError(f"{label}.{name} must be a non-empty list of values, got {values!r}", where=where)
        for value in values:
            if not isinstance(value, (bool, int, float, str)):
                raise MetadataError(f"{label}.{name}: {value!r} is not a number, string or boolean", where=where)
        found.append((str(name), tuple(values)))
    return tuple(found)


@dataclass(frozen=True)
class MatrixOption:
    """One `--matrix stageN.FIELD=V1,V2`: the values as typed, parsed at render."""

    stage: int
    name: str
    texts: tuple[str, ...]


def parse_matrix_options(items: Iterable[str]) -> list[MatrixOption]:
    found = []
    for item in items:
        key, sep, text = item.partition("=")
        prefix, dot, name = key.strip().partition(".")
        if not sep or not dot or not prefix.startswith("stage") or not prefix[5:].isdigit() or not name:
            raise ParameterError(f"--matrix {item!r}: expected stageN.FIELD=V1,V2,...")
        texts = tuple(part.strip() for part in text.split(","))
        if not text.strip() or not all(texts):
            raise ParameterError(f"--matrix {item!r}: give one or more values, separated by commas")
        found.append(MatrixOption(int(prefix[5:]), name.strip(), texts))
    return found


MatrixOptions = Mapping[int, Mapping[str, Sequence[str]]]
"""`--matrix` values routed to their stages: stage -> field -> texts."""


def route_matrix_options(options: Iterable[MatrixOption], stages: Sequence[int], known: Iterable[int]) -> MatrixOptions:
    """The `--matrix` options by stage; each must name a selected stage."""
    routed: dict[int, dict[str, tuple[str, ...]]] = {}
    known_set = set(known)
    for option in options:
        if option.stage not in known_set:
            raise ParameterError(f"--matrix stage{option.stage}.{option.name}: unknown stage {option.stage}")
        if option.stage not in stages:
            raise ParameterError(f"--matrix stage{option.stage}.{option.name}: stage {option.stage} is not selected")
        routed.setdefault(option.stage, {})[option.name] = option.texts
    return routed


def check_matrix(matrix: Matrix, *, stage: int) -> Matrix:
    """`matrix`, refused when two of its cells would share a name (`0.5` and `0-5`)."""
    names = [cell.name for cell in cells_of(stage, matrix)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ParameterError(
            f"two cells of the matrix would both be named {repeated[0]!r}; use values that differ in letters or digits",
            stage=stage,
        )
    return matrix


def pick_cells(cells: Sequence[Cell], chosen: Mapping[str, str] | None, *, stage: int) -> list[Cell]:
    """The cells whose values match `chosen` (`--cell fold=2`: field -> value as typed;
    all of them when empty), refused in one line when a field is not the matrix's or no
    cell matches."""
    if not chosen:
        return list(cells)
    names = {name for cell in cells for name, _ in cell.values}
    unknown = sorted(set(chosen) - names)
    if unknown:
        fields = ", ".join(sorted(names)) or "none: the stage has no matrix"
        raise ParameterError(f"--cell {unknown[0]}: not a field of the stage's matrix (its fields: {fields})", stage=stage)
    found = [cell for cell in cells if all(str(value) == chosen[name] for name, value in cell.values if name in chosen)]
    if not found:
        wanted = ", ".join(f"{name}={value}" for name, value in chosen.items())
        raise ParameterError(f"no cell has {wanted}; its cells: {', '.join(c.name for c in cells)}", stage=stage)
    return found
