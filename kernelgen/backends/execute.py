"""Run a rendered notebook here, the way Kaggle would: a fresh interpreter, a Kaggle-shaped root.

The kernel runs with a guard that lets `kernelgen` and the project's packages load only
from the module folder the kernel writes itself, so a notebook that still leans on the
installed tool or the project's source fails here rather than on Kaggle.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from kernelgen.errors import ConfigError

_GUARD = """
import sys
from importlib.machinery import PathFinder


class _ProjectImportGuard:
    def __init__(self, names):
        self.names = names
        self.installed = set(sys.path)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in self.names:
            return None
        if path is None:
            path = [entry for entry in sys.path if entry not in self.installed]
        spec = PathFinder.find_spec(name, path)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (a kernel imports only the modules it writes)")
        return spec


sys.meta_path.insert(0, _ProjectImportGuard(GUARDED))
for _name in [m for m in sys.modules if m.split(".")[0] in GUARDED]:
    del sys.modules[_name]
"""
TOOL_PACKAGES = ("kernelgen",)
DEFAULT_JUPYTER_KERNEL = "python3"
"""The kernel of the interpreter kernelgen runs in (or the `python3` kernelspec Jupyter finds)."""


def check_jupyter_kernel(name: str) -> None:
    """Refuse, in one line, a Jupyter kernel name no kernelspec on the Jupyter path defines."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise ConfigError(
            f"no Jupyter kernel named {name!r} (`jupyter kernelspec list` shows those installed; "
            "JUPYTER_PATH adds folders to look in)"
        ) from None


def guard_cell(packages: Sequence[str]) -> str:
    """A first cell that lets the project's packages load only from folders the kernel adds."""
    names = tuple(sorted({*TOOL_PACKAGES, *packages}))
    source = _GUARD.replace("GUARDED", repr(names))
    return f"exec(compile({source!r}, '<kernelgen guard>', 'exec'), {{}})"


@dataclass(frozen=True)
class ExecutionResult:
    ok: bool
    log: str
    error: str = ""


def _cell_log(cell: nbformat.NotebookNode) -> str:
    parts: list[str] = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif output.get("output_type") == "error":
            parts.append("\n".join(output.get("traceback", [])) + "\n")
    return "".join(parts)


def _log_text(notebook: nbformat.NotebookNode) -> str:
    return "".join(_cell_log(cell) for cell in notebook.cells)


def kernel_env(root: Path, working: Path | None = None) -> dict[str, str]:
    """The environment a local kernel sees: the project's paths removed, the root named."""
    dropped = ("PYTHONPATH", "PYTHONSTARTUP", "KERNELGEN_WORKING")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["KERNELGEN_ROOT"] = str(root)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    if working is not None:
        env["KERNELGEN_WORKING"] = str(working)
    return env


def execute_notebook(
    notebook_bytes: bytes,
    root: Path,
    *,
    working: Path | None = None,
    timeout: int | None = None,
    kernel_name: str = DEFAULT_JUPYTER_KERNEL,
    packages: Sequence[str] = (),
    live_log: Path | None = None,
) -> ExecutionResult:
    """Execute a notebook with `root` as its `/kaggle`; outputs land in `working` (default root/working).

    `kernel_name` is the Jupyter kernelspec that runs it (another interpreter, e.g. one
    pinned to Kaggle's image, has its own); `packages` names the project's packages,
    guarded like kernelgen itself. Each cell's output is appended to `live_log` as soon
    as the cell has run.
    """
    root = root.resolve()
    working = working.resolve() if working is not None else None
    notebook = nbformat.reads(notebook_bytes.decode("utf-8"), as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(guard_cell(packages)))
    cwd = working or root / "working"
    cwd.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        kernel_name=kernel_name,
        allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    if live_log is not None:
        live_log.write_text("", encoding="utf-8")

        def append_output(cell: nbformat.NotebookNode, **_: object) -> None:
            with live_log.open("a", encoding="utf-8") as fh:
                fh.write(_cell_log(cell))

        client.on_cell_executed = append_output
    with tempfile.TemporaryFile() as process_output:
        try:
            client.execute(env=kernel_env(root, working), stdout=process_output, stderr=process_output)
        except CellExecutionError as exc:
            outcome = (False, _one_line(exc))
        except CellTimeoutError:
            outcome = (False, f"a cell ran longer than {timeout} s")
        except DeadKernelError as exc:
            outcome = (False, f"the kernel died: {exc}")
        else:
            outcome = (True, "")
        process_output.seek(0)
        stray = process_output.read().decode("utf-8", errors="replace")
    log = _log_text(notebook)
    if stray.strip():
        log += "\n[kernel process output]\n" + stray
    return ExecutionResult(outcome[0], log, outcome[1])


def _one_line(exc: CellExecutionError) -> str:
    name = getattr(exc, "ename", "") or "Error"
    value = getattr(exc, "evalue", "") or str(exc).strip().splitlines()[-1]
    return f"{name}: {value}"


