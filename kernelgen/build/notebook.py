"""Build a kernel notebook in memory from percent-format sources; no I/O here."""

from __future__ import annotations

import jupytext
import nbformat
from nbformat import NotebookNode

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def percent_cells(text: str) -> list[NotebookNode]:
    """Cells of a `# %%` script, empty ones dropped."""
    notebook = jupytext.reads(text, fmt="py:percent")
    return [cell for cell in notebook.cells if cell.source.strip()]


def code_cell(source: str, *, tags: tuple[str, ...] = ()) -> NotebookNode:
    cell = nbformat.v4.new_code_cell(source.rstrip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def markdown_cell(source: str) -> NotebookNode:
    return nbformat.v4.new_markdown_cell(source.rstrip("\n"))


def assemble(cells: list[NotebookNode], *, prefix: str) -> NotebookNode:
    """A v4.5 notebook with stable cell ids and no volatile metadata."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = NotebookNode(
        kernelspec=NotebookNode(KERNELSPEC), language_info=NotebookNode(name="python")
    )
    for index, cell in enumerate(cells):
        cell.id = f"{prefix}-{index:03d}"
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = []
        cell.metadata = NotebookNode({k: v for k, v in cell.metadata.items() if k == "tags"})
    notebook.cells = cells
    return notebook


def to_bytes(notebook: NotebookNode) -> bytes:
    return (nbformat.writes(notebook, version=4) + "\n").encode("utf-8")
