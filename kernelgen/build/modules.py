"""Which source files a kernel must carry: the stage module, the project modules it
imports (directly or through others), and the kernel runtime.

A kernel cannot import the pipeline's package or kernelgen, so rendering writes each
needed module into the kernel as a file of its own package and lets Python import it
as usual. Every module keeps its own namespace: two modules may both define `_check`.
Imports are read with `ast`; nothing here imports the code it reads.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from kernelgen.errors import RenderError
from kernelgen.spec.source import parse_source

TOOL_PACKAGE = "kernelgen"
RUNTIME = "kernelgen.runtime"


@dataclass(frozen=True)
class SourceModule:
    """One module as the kernel will carry it."""

    name: str
    path: Path
    text: str
    names: frozenset[str]
    needs: tuple[str, ...]

    @property
    def file(self) -> str:
        """Its path inside the kernel's module folder, e.g. `stages/lib/rle.py`."""
        parts = self.name.split(".")
        if self.path.name == "__init__.py":
            parts.append("__init__")
        return "/".join(parts) + ".py"


@dataclass(frozen=True)
class KernelModules:
    """The stage module and, dependencies first, every module written beside it."""

    main: SourceModule
    modules: tuple[SourceModule, ...]
    packages: tuple[str, ...]


class ModuleFinder:
    """Resolves dotted names of the pipeline's packages and of `kernelgen.runtime` to files."""

    def __init__(self, root: Path, packages: tuple[str, ...], stage: int) -> None:
        self.roots = {name: root for name in packages}
        self.roots[TOOL_PACKAGE] = Path(__file__).resolve().parents[2]
        self.stage = stage

    def owns(self, name: str) -> bool:
        return name.split(".")[0] in self.roots

    def file(self, name: str) -> Path | None:
        base = self.roots[name.split(".")[0]].joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def fail(self, message: str) -> RenderError:
        return RenderError(message, stage=self.stage)


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name) and _binds(target, n))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name.split(".")[0])
    return names


def _binds(target: ast.expr, name: ast.Name) -> bool:
    """Whether `name` is bound by the assignment target (`a.b = ...` and `a[k] = ...` bind none)."""
    if target is name:
        return True
    if isinstance(target, (ast.Tuple, ast.List)):
        return any(_binds(element, name) for element in target.elts)
    if isinstance(target, ast.Starred):
        return _binds(target.value, name)
    return False


def _absolute(node: ast.ImportFrom, module: str, is_package: bool, where: str, finder: ModuleFinder) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 >= len(parts):
        raise finder.fail(f"{where}: relative import goes above the top-level package")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def read_module(name: str, finder: ModuleFinder, *, main: bool = False) -> tuple[SourceModule, list[tuple[str, str, str]]]:
    """A module's text, names and project imports; also each `from X import n` to check."""
    path = finder.file(name)
    if path is None:
        raise finder.fail(f"module {name!r} not found under {finder.roots[name.split('.')[0]]}")
    text = path.read_text(encoding="utf-8")
    tree = parse_source(path, text)
    needs: list[str] = []
    checks: list[tuple[str, str, str]] = []
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            needs.extend(alias.name for alias in node.names if finder.owns(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__" and main:
                raise finder.fail(f"{where}: 'from __future__' cannot be used in a stage module, whose cells run in the notebook")
            if node.level and main:
                raise finder.fail(f"{where}: a stage module runs as notebook cells; use absolute imports")
            base = _absolute(node, name, path.name == "__init__.py", where, finder)
            if not finder.owns(base):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if alias.name != "*" and finder.file(submodule) is not None:
                    needs.append(submodule)
                else:
                    needs.append(base)
                    if alias.name != "*":
                        checks.append((base, alias.name, where))
    for needed in needs:
        if needed.split(".")[0] == TOOL_PACKAGE and not (needed == RUNTIME or needed.startswith(RUNTIME + ".")):
            raise finder.fail(f"{path}: kernels can carry only {RUNTIME} from kernelgen, not {needed}")
        if finder.file(needed) is None:
            raise finder.fail(f"{path}: module {needed!r} not found")
    module = SourceModule(
        name=name, path=path, text=text, names=frozenset(_top_level_names(tree)), needs=tuple(dict.fromkeys(needs))
    )
    return module, checks


def _packages_of(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def collect_modules(module: str, *, root: Path, packages: tuple[str, ...], stage: int) -> KernelModules:
    """The stage module `module` and every module the kernel must write for it.

    Package `__init__.py` files with code are carried like modules; empty ones are
    made by the kernel. kernelgen's own `__init__` is never carried.
    """
    finder = ModuleFinder(root, packages, stage)
    if module.split(".")[0] == TOOL_PACKAGE or not finder.owns(module):
        raise finder.fail(f"stage module {module!r} is not in the pipeline's packages ({', '.join(packages)})")
    main, checks = read_module(module, finder, main=True)
    found: dict[str, SourceModule] = {}
    ordered: list[SourceModule] = []
    folders: dict[str, None] = {}

    def visit(name: str) -> None:
        if name in found or name == module:
            return
        unit, more = read_module(name, finder)
        found[name] = unit
        checks.extend(more)
        for package in _packages_of(name) + ([name] if unit.path.name == "__init__.py" else []):
            folders[package.replace(".", "/")] = None
            if package != TOOL_PACKAGE and package != name:
                init = finder.file(package)
                if init is not None and init.read_text(encoding="utf-8").strip():
                    visit(package)
        for dep in unit.needs:
            visit(dep)
        ordered.append(unit)

    for package in _packages_of(module):
        folders[package.replace(".", "/")] = None
        init = finder.file(package)
        if init is not None and init.read_text(encoding="utf-8").strip():
            visit(package)
    for dep in (*main.needs, RUNTIME):
        visit(dep)
    for source, name, where in checks:
        if name not in found[source].names:
            raise finder.fail(f"{where}: {source} defines no top-level {name!r}")
    return KernelModules(main=main, modules=tuple(ordered), packages=tuple(sorted(folders)))
