"""Collect a stage module and the stage-library modules it uses, ready to inline.

A stage imports shared code as `from stages.lib.X import a, b`. The kernel must
run without `stages` installed, so each used library module is inlined once,
before the modules that import it, and every `stages` import line is removed.
All inlined code shares one namespace, so a top-level name defined twice is refused.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from kernelgen.errors import RenderError

PACKAGE = "stages"


@dataclass(frozen=True)
class SourceUnit:
    """One module's text with its `stages` imports removed, and what it defines."""

    module: str
    path: Path
    text: str
    names: frozenset[str]
    imports: tuple[str, ...]
    imported_names: tuple[tuple[str, str], ...] = ()


def _module_path(module: str, stages_root: Path, stage: int) -> Path:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise RenderError(f"module {module!r} is outside the {PACKAGE!r} package", stage=stage)
    path = stages_root.joinpath(*parts[1:]).with_suffix(".py")
    if not path.is_file():
        raise RenderError(f"module {module!r} not found at {path}", stage=stage)
    return path


def _bound_names(target: ast.expr) -> set[str]:
    """Names an assignment target binds; `a.b = ...` and `a[k] = ...` bind none."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_bound_names(element) for element in target.elts))
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    return set()


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names |= _bound_names(target)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def read_unit(module: str, stages_root: Path, stage: int) -> SourceUnit:
    path = _module_path(module, stages_root, stage)
    text = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise RenderError(f"{path}:{exc.lineno}: syntax error: {exc.msg}", stage=stage) from None
    drop: set[int] = set()
    imports: list[str] = []
    imported: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            raise RenderError(f"{path}:{node.lineno}: 'from __future__' cannot be inlined", stage=stage)
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names):
            raise RenderError(
                f"{path}:{node.lineno}: use 'from stages.lib.X import name' so it can be inlined",
                stage=stage,
            )
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == PACKAGE):
            if node not in tree.body:
                raise RenderError(f"{path}:{node.lineno}: stage-library imports must be at top level", stage=stage)
            if node.level or not node.module or not node.module.startswith(f"{PACKAGE}.lib."):
                raise RenderError(
                    f"{path}:{node.lineno}: only 'from stages.lib.X import ...' can be inlined", stage=stage
                )
            for alias in node.names:
                if alias.asname or alias.name == "*":
                    raise RenderError(
                        f"{path}:{node.lineno}: import names from stages.lib plainly (no 'as', no '*')",
                        stage=stage,
                    )
                imported.append((node.module, alias.name))
            imports.append(node.module)
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = text.splitlines(keepends=True)
    kept = "".join(line for number, line in enumerate(lines, start=1) if number not in drop)
    kept = re.sub(r"\n{4,}", "\n\n\n", kept)  # no wider gaps where imports were
    return SourceUnit(
        module=module,
        path=path,
        text=kept,
        names=frozenset(_top_level_names(tree)),
        imports=tuple(dict.fromkeys(imports)),
        imported_names=tuple(imported),
    )


def collect_units(module: str, stages_root: Path, stage: int) -> tuple[list[SourceUnit], SourceUnit]:
    """The library modules a stage needs (dependencies first) and the stage module itself."""
    main = read_unit(module, stages_root, stage)
    units: dict[str, SourceUnit] = {}
    ordered: list[SourceUnit] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in units:
            return
        if name in visiting:
            chain = " -> ".join([*visiting, name])
            raise RenderError(f"library modules import each other in a cycle: {chain}", stage=stage)
        visiting.append(name)
        unit = read_unit(name, stages_root, stage)
        for dep in sorted(unit.imports):
            visit(dep)
        visiting.pop()
        units[name] = unit
        ordered.append(unit)

    for dep in sorted(main.imports):
        visit(dep)
    for unit in [*ordered, main]:
        for source, name in unit.imported_names:
            if name not in units[source].names:
                raise RenderError(f"{unit.path}: {source} defines no top-level {name!r}", stage=stage)
    owners: dict[str, str] = {}
    for unit in [*ordered, main]:
        for name in sorted(unit.names):
            if name in owners:
                raise RenderError(
                    f"top-level name {name!r} is defined in both {owners[name]} and {unit.module}; "
                    "inlined modules share one namespace",
                    stage=stage,
                )
            owners[name] = unit.module
    return ordered, main
