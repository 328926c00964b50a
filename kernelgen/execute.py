"""Run a rendered notebook here, the way Kaggle would: a fresh interpreter, a Kaggle-shaped root.

The kernel runs with a guard that makes `kernelgen` and `stages` unimportable, so a
notebook that still leans on the project fails here rather than on Kaggle.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

_GUARD = '''
import sys
class _ProjectImportGuard:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kernelgen", "stages"):
            raise ModuleNotFoundError(f"No module named {name!r} (a kernel must not import it)")
        return None
sys.meta_path.insert(0, _ProjectImportGuard())
for _name in [m for m in sys.modules if m.split(".")[0] in ("kernelgen", "stages")]:
    del sys.modules[_name]
'''
GUARD_CELL = f"exec(compile({_GUARD!r}, '<kernelgen guard>', 'exec'), {{}})"


@dataclass(frozen=True)
class ExecutionResult:
    ok: bool
    log: str
    error: str = ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.rstrip().splitlines()[-lines:])


def _log_text(notebook: nbformat.NotebookNode) -> str:
    parts: list[str] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif output.get("output_type") == "error":
                parts.append("\n".join(output.get("traceback", [])) + "\n")
    return "".join(parts)


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
    kernel_name: str = "python3",
) -> ExecutionResult:
    """Execute a notebook with `root` as its `/kaggle`; outputs land in `working` (default root/working)."""
    root = root.resolve()
    working = working.resolve() if working is not None else None
    notebook = nbformat.reads(notebook_bytes.decode("utf-8"), as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(GUARD_CELL))
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


