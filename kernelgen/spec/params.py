"""Stage parameters: read from the stage's `Params` dataclass, overridden in layers.

The fields are read from the module's source with `ast`, so rendering never imports
TensorFlow or PyTorch just to learn that `epochs` is an int defaulting to 45.
Layers, lowest first: dataclass default, profile, config file, `--set`, chain.

A field is a scalar (`int`, `float`, `bool`, `str`) or a list of one scalar type,
declared `tuple[float, ...]`: values are tuples in Python, lists in TOML, JSON and the
parameters cell, and `[0.5, 0.6]` on the command line.
"""

from __future__ import annotations

import ast
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelgen.errors import ParameterError, RenderError
from kernelgen.spec.source import parse_source

SCALAR_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_LIST_ANNOTATION = re.compile(r"^tuple\[(int|float|bool|str), \.\.\.\]$")


@dataclass(frozen=True)
class ListOf:
    """The type of a list parameter: a `tuple[item, ...]` field."""

    item: type

    @property
    def __name__(self) -> str:
        return f"a list of {self.item.__name__}"

    def example(self, like: Any = None) -> str:
        """How such a value is written: `like` (a comma string, say) in list form when it has
        parts, else a sample."""
        parts = [part.strip() for part in like.strip("[]()").split(",")] if isinstance(like, str) else []
        if parts and all(parts):
            return "[" + ", ".join(repr(p) if self.item is str else p for p in parts) + "]"
        samples = {int: "[1, 2]", float: "[0.5, 0.75]", bool: "[true, false]", str: '["a", "b"]'}
        return samples[self.item]


ParamType = type | ListOf
"""A field's type: one of SCALAR_TYPES, or a list of one of them."""


@dataclass(frozen=True)
class ParamField:
    name: str
    type: ParamType
    default: Any


def annotation_type(annotation: str) -> ParamType | None:
    """The parameter type an annotation (as `ast.unparse` writes it) declares, or None."""
    if annotation in SCALAR_TYPES:
        return SCALAR_TYPES[annotation]
    match = _LIST_ANNOTATION.match(annotation)
    return ListOf(SCALAR_TYPES[match.group(1)]) if match else None


@dataclass(frozen=True)
class ParamValue:
    """A resolved parameter and where its value came from (shown in the parameters cell)."""

    name: str
    value: Any
    source: str


def read_param_fields(source: Path, stage: int) -> list[ParamField]:
    """The fields of `class Params` in a stage module, in declaration order."""
    if not source.is_file():
        raise RenderError(f"stage module {source} not found", stage=stage)
    tree = parse_source(source)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Params"]
    if not classes:
        raise RenderError(f"{source} defines no top-level 'class Params'", stage=stage)
    fields = []
    for node in classes[0].body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        name = node.target.id
        annotation = ast.unparse(node.annotation)
        kind = annotation_type(annotation)
        if kind is None:
            raise RenderError(
                f"{source}: Params.{name} has type {annotation}; use one of {', '.join(SCALAR_TYPES)}, "
                "or a list of one as tuple[float, ...]",
                stage=stage,
            )
        if node.value is None:
            raise RenderError(f"{source}: Params.{name} needs a default value", stage=stage)
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise RenderError(
                f"{source}: Params.{name} default must be a literal, got {ast.unparse(node.value)}",
                stage=stage,
            ) from None
        fields.append(ParamField(name, kind, coerce_value(default, kind, name=name, stage=stage)))
    return fields


def _standard_import(node: ast.stmt) -> bool:
    if isinstance(node, ast.Import):
        return all(a.name.split(".")[0] in sys.stdlib_module_names for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return not node.level and (node.module or "").split(".")[0] in sys.stdlib_module_names
    return False


def _literal_assignment(node: ast.stmt) -> bool:
    value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
    if value is None:
        return False
    try:
        ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError):
        return False
    return True


def params_class(source: Path, stage: int) -> type:
    """The stage's `Params`, built without importing the module (it may need TensorFlow):
    only its standard-library imports, its literal constants and `class Params` run,
    in a namespace of their own."""
    tree = parse_source(source)
    kept = [
        node
        for node in tree.body
        if _standard_import(node)
        or _literal_assignment(node)
        or (isinstance(node, ast.ClassDef) and node.name == "Params")
    ]
    namespace: dict[str, Any] = {"__name__": f"kernelgen_params_stage{stage}"}
    # dont_inherit: this module's `from __future__ import annotations` must not reach the class.
    exec(compile(ast.Module(body=kept, type_ignores=[]), str(source), "exec", dont_inherit=True), namespace)
    return namespace["Params"]


def check_values(source: Path, values: Mapping[str, Any], stage: int) -> None:
    """Build the stage's `Params` with `values`, so whatever it refuses fails at render."""
    try:
        params_class(source, stage)(**values)
    except (ValueError, TypeError) as exc:
        raise ParameterError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, stage=stage) from None
    except NameError as exc:
        raise RenderError(
            f"{source}: Params may use only the standard library and the module's literal constants ({exc})",
            stage=stage,
        ) from None


def coerce_value(value: Any, kind: ParamType, *, name: str, stage: int | None) -> Any:
    """Check a typed value (from TOML, JSON or code) against a field type; ints widen to
    floats, and a list parameter's list or tuple becomes a tuple."""
    if isinstance(kind, ListOf):
        if not isinstance(value, (list, tuple)):
            raise ParameterError(
                f"{name} must be {kind.__name__}, written {kind.example(value)}, got {value!r}", stage=stage
            )
        return tuple(coerce_value(item, kind.item, name=f"{name}[{i}]", stage=stage) for i, item in enumerate(value))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (kind is not bool and isinstance(value, bool)) or not isinstance(value, kind):
        raise ParameterError(f"{name} must be {kind.__name__}, got {value!r}", stage=stage)
    if kind is float and not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}", stage=stage)
    return value


def parse_text(text: str, kind: ParamType, *, name: str, stage: int | None) -> Any:
    """Turn a command-line string into a value of the field's type."""
    if isinstance(kind, ListOf):
        return _parse_list(text, kind, name=name, stage=stage)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        return text
    except ValueError:
        raise ParameterError(f"{name} must be {kind.__name__}, got {text!r}", stage=stage) from None


def _parse_list(text: str, kind: ListOf, *, name: str, stage: int | None) -> tuple[Any, ...]:
    """`[a, b, ...]`, each item as the scalar type reads it (`true`/`false` for bools,
    strings quoted); a bare comma string is refused, since its meaning would be a guess."""
    body = text.strip()
    refused = ParameterError(
        f"{name} takes {kind.__name__} in brackets: {name}={kind.example(text)}; got {text!r}", stage=stage
    )
    if not (body.startswith("[") and body.endswith("]")):
        raise refused
    if kind.item is str:
        try:
            items = ast.literal_eval(body)
        except (ValueError, SyntaxError):
            raise refused from None
        return coerce_value(items, kind, name=name, stage=stage)
    inner = body[1:-1].strip()
    parts = [part.strip() for part in inner.split(",")] if inner else []
    if parts and not parts[-1]:
        parts.pop()  # a trailing comma
    if any(not part for part in parts):
        raise refused
    return tuple(parse_text(part, kind.item, name=f"{name}[{i}]", stage=stage) for i, part in enumerate(parts))


@dataclass(frozen=True)
class Override:
    """One `--set`: `stage` is None when the name carried no `stageN.` prefix."""

    stage: int | None
    name: str
    text: str


def parse_overrides(items: Iterable[str]) -> list[Override]:
    found = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"--set {item!r}: expected NAME=VALUE or stageN.NAME=VALUE")
        stage: int | None = None
        if "." in key:
            prefix, _, key = key.partition(".")
            if not prefix.startswith("stage") or not prefix[5:].isdigit() or not key:
                raise ParameterError(f"--set {item!r}: expected stageN.NAME=VALUE")
            stage = int(prefix[5:])
        found.append(Override(stage, key, text))
    return found


def assign_overrides(overrides: Iterable[Override], stages: Iterable[int], known: Iterable[int]) -> dict[int, dict[str, str]]:
    """Route overrides to stages; an unprefixed name needs exactly one stage selected."""
    selected = list(stages)
    known_set = set(known)
    routed: dict[int, dict[str, str]] = {}
    for item in overrides:
        if item.stage is None:
            if len(selected) != 1:
                raise ParameterError(
                    f"--set {item.name}={item.text}: name the stage (stageN.{item.name}=...) "
                    "when more than one stage is selected"
                )
            stage = selected[0]
        else:
            stage = item.stage
            if stage not in known_set:
                raise ParameterError(f"--set stage{stage}.{item.name}: unknown stage {stage}")
            if stage not in selected:
                raise ParameterError(f"--set stage{stage}.{item.name}: stage {stage} is not selected")
        routed.setdefault(stage, {})[item.name] = item.text
    return routed


def resolve_params(
    fields: list[ParamField],
    *,
    stage: int,
    layers: Iterable[tuple[str, Mapping[str, Any]]] = (),
    texts: Mapping[str, str] | None = None,
    extra: Iterable[ParamValue] = (),
) -> list[ParamValue]:
    """Apply typed layers (name, values), then command-line texts, then values from other stages."""
    by_name = {f.name: f for f in fields}
    valid = list(by_name)
    current = {f.name: ParamValue(f.name, f.default, "default") for f in fields}

    def check(name: str) -> ParamField:
        if name not in by_name:
            raise ParameterError(f"unknown parameter {name!r}", stage=stage, valid=valid)
        return by_name[name]

    for source, values in layers:
        for name, value in values.items():
            field = check(name)
            current[name] = ParamValue(name, coerce_value(value, field.type, name=name, stage=stage), source)
    for name, text in (texts or {}).items():
        field = check(name)
        current[name] = ParamValue(name, parse_text(text, field.type, name=name, stage=stage), "--set")
    for item in extra:
        field = check(item.name)
        if not (texts and item.name in texts):
            value = coerce_value(item.value, field.type, name=item.name, stage=stage)
            current[item.name] = ParamValue(item.name, value, item.source)
    return [current[f.name] for f in fields]
