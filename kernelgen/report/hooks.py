"""The pipeline's own panels: `[report] panels = "package.module:function"` in
`kernel-metadata/pipeline.toml`, called as `function(context)` with a `ReportContext`.

The hook is imported from the project's folder the way the local data generator is.
A hook that cannot be loaded or that fails costs its panels, never the report: the
failure is shown as one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelgen.errors import KernelgenError
from kernelgen.report.panel import Panel
from kernelgen.report.workfolder import StageFacts, WorkFolder
from kernelgen.run.localdata import competitions
from kernelgen.run.workspace import WorkPaths
from kernelgen.spec.config import Config
from kernelgen.spec.imports import load_project_function
from kernelgen.spec.pipeline import PIPELINE_FILE, Pipeline


@dataclass(frozen=True)
class ReportContext:
    """What a pipeline's panels may read: the work folder's stages and where data lies."""

    pipeline: Pipeline
    workdir: Path
    stages: Mapping[int, StageFacts]
    competition_dirs: Mapping[str, Path]

    def outputs(self, number: int) -> Path:
        """Where stage `number`'s downloaded outputs are (the folder may not exist)."""
        return WorkPaths(self.workdir).outputs(number)

    def params(self, number: int) -> dict[str, Any]:
        """The parameters stage `number` last ran with; empty when it has not run."""
        facts = self.stages.get(number)
        return {p.name: p.value for p in facts.params} if facts else {}


def competition_dirs(pipeline: Pipeline, config: Config, workdir: Path) -> dict[str, Path]:
    """Competition folders already here: the configured `data`, else the generated local data.

    Nothing is generated: a report only reads.
    """
    found = {}
    for slug in competitions(pipeline):
        candidates = [config.data] if config.data is not None else []
        candidates.append(WorkPaths(workdir).local_data / "input" / slug)
        for folder in candidates:
            if folder is not None and folder.is_dir():
                found[slug] = folder.resolve()
                break
    return found


def pipeline_panels(context: ReportContext) -> tuple[list[Panel], list[str]]:
    """The pipeline's panels, and a problem line when its hook cannot give them."""
    name = context.pipeline.report.panels
    if name is None:
        return [], []
    where = context.pipeline.source / PIPELINE_FILE
    try:
        hook = load_project_function(context.pipeline, name, purpose="report.panels")
    except KernelgenError as exc:
        return [], [f"{exc} ({where})"]
    try:
        panels = list(hook(context))
    except Exception as exc:  # the pipeline's code: its failure is reported, the report still written
        return [], [f"report.panels {name!r} failed: {type(exc).__name__}: {exc}"]
    wrong = [type(p).__name__ for p in panels if not isinstance(p, Panel)]
    if wrong:
        return [], [f"report.panels {name!r} returned {wrong[0]} where a kernelgen.report.panel.Panel belongs"]
    return panels, []


def context_for(folder: WorkFolder, pipeline: Pipeline, config: Config) -> ReportContext:
    return ReportContext(pipeline, folder.path, folder.stages, competition_dirs(pipeline, config, folder.path))
