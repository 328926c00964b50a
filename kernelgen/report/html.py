"""The report as one HTML file: `templates/report.html.j2`, every value escaped."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING

import jinja2

from kernelgen.clock import format_elapsed
from kernelgen.errors import RenderError
from kernelgen.report.charts import PHASE_COLOURS
from kernelgen.spec.resources import templates_dir

if TYPE_CHECKING:
    from kernelgen.report.build import Report

TEMPLATE = "report.html.j2"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def _duration(seconds: float | None) -> str:
    return format_elapsed(seconds) if seconds is not None else ""


def _hours(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else ""


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["hours"] = _hours
    return env


def render_html(report: Report) -> str:
    colours = {phase.value: colour for phase, colour in PHASE_COLOURS.items()}
    try:
        return _environment().get_template(TEMPLATE).render(report=report, colours=colours)
    except jinja2.TemplateError as exc:
        raise RenderError(str(exc), template=TEMPLATE) from None
