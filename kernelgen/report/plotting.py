"""Charts for the report with matplotlib, imported only when a chart is drawn.

The core install has no matplotlib; without it the tool's panels fall back to tables
and say so in one line.
"""

from __future__ import annotations

import io
from functools import cache
from typing import TYPE_CHECKING, Any

from kernelgen.report.panel import Figure, Note

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

NO_MATPLOTLIB = Note("matplotlib is not installed here, so this panel shows tables instead of charts (pip install matplotlib).")


@cache
def has_matplotlib() -> bool:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float, height: float) -> MplFigure | None:
    """A figure of `width` x `height` inches not tied to any pyplot state; None without matplotlib."""
    if not has_matplotlib():
        return None
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), layout="constrained")


def figure_block(
    fig: Any, *, alt: str, caption: str = "", fmt: str = "png", dpi: int = 100, quality: int = 82
) -> Figure:
    """A matplotlib figure as an embedded picture: PNG for charts, JPEG for photographs."""
    buffer = io.BytesIO()
    if fmt == "png":
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        mime = "image/png"
    elif fmt == "jpeg":
        fig.savefig(buffer, format="jpeg", dpi=dpi, pil_kwargs={"quality": quality, "optimize": True})
        mime = "image/jpeg"
    else:
        raise ValueError(f"figure format must be png or jpeg, got {fmt!r}")
    return Figure(buffer.getvalue(), mime, alt, caption)
