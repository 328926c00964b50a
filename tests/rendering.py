"""Rendering a project's stages the way the commands do, with `--set` texts routed first."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kernelgen.build.kernel import RenderedKernel, render_stages
from kernelgen.spec.project import Project


def render(
    project: Project, stages: Sequence[int], *, username: str, sets: Iterable[str] = (), **options: Any
) -> list[RenderedKernel]:
    """`stages` of `project` rendered in memory, `sets` applied as `--set` would apply them."""
    return render_stages(project, stages, username=username, overrides=project.overrides(sets, stages), **options)
