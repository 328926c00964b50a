"""kernelgen's layers import one way: spec <- build <- backends <- run <- report, cli.

Read from the source with `ast` (imports inside functions count too), so a module that
reaches up a layer fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kernelgen

PACKAGE = Path(kernelgen.__file__).resolve().parent
BASE = "base"
ORDER = [BASE, "spec", "build", "backends", "run", "report", "cli"]
"""Each layer may import its own and those before it, and the kernel runtime; the runtime
(which travels inside every kernel) and the scaffold stand alone."""
ALONE = {"runtime": {"runtime"}, "scaffold": {BASE, "scaffold"}}
BASE_MODULES = {"errors", "files", "clock", "backoff", "__init__"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return BASE
    head = parts[1]
    if head == "__main__":
        return "cli"
    if head in BASE_MODULES:
        return BASE
    return head


def allowed(layer: str) -> set[str]:
    if layer in ALONE:
        return ALONE[layer]
    below = set(ORDER[: ORDER.index(layer) + 1])
    extra = {"runtime"} if layer != BASE else set()
    return below | extra | ({"scaffold"} if layer == "cli" else set())


def kernelgen_modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
            found.extend((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)
    return found


def test_every_kernelgen_module_has_a_layer() -> None:
    layers = {layer_of(name) for name in kernelgen_modules()}
    assert layers <= set(ORDER) | set(ALONE), layers


def test_imports_go_one_way() -> None:
    modules = kernelgen_modules()
    wrong = []
    for name, path in sorted(modules.items()):
        mine = layer_of(name)
        for target, line in imports_of(path):
            if target.split(".")[0] != "kernelgen" or target not in modules:
                continue
            theirs = layer_of(target)
            if theirs not in allowed(mine):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {mine} imports {target} ({theirs})")
    assert wrong == []


def test_the_report_reads_run_states_not_the_scheduler() -> None:
    for name, path in kernelgen_modules().items():
        if layer_of(name) != "report":
            continue
        for target, line in imports_of(path):
            assert not target.startswith(("kernelgen.run.scheduler", "kernelgen.run.steps", "kernelgen.run.commands")), (
                f"{path}:{line} imports {target}"
            )


def test_the_tool_never_imports_a_pipeline_and_only_the_kaggle_backend_imports_kaggle() -> None:
    for name, path in kernelgen_modules().items():
        for target, line in imports_of(path):
            top = target.split(".")[0]
            assert top != "stages", f"{path}:{line} imports the bundled pipeline"
            if top in ("kaggle", "kagglesdk"):
                assert name == "kernelgen.backends.kaggle", f"{path}:{line} imports {target}"
