"""The Jinja environment that renders kernel cells and metadata.

Values reach generated code only through `pyliteral`, which accepts plain scalars
(and lists of them) and proves the text reads back to the same value; nothing is pasted into code.
"""

from __future__ import annotations

import ast
import json
import math
from functools import cache
from typing import Any

import jinja2

from kernelgen.errors import RenderError
from kernelgen.spec.resources import templates_dir


def pyliteral(value: Any) -> str:
    """A Python literal for a parameter value: a scalar, or a list of scalars (a tuple is
    written as a list, the form papermill and JSON give it); an error for anything else."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar_literal(item) for item in value) + "]"
    return _scalar_literal(value)


def _scalar_literal(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no Python literal")
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"{type(value).__name__} values cannot be written as parameters")
    text = repr(value)
    if ast.literal_eval(text) != value:
        raise ValueError(f"{value!r} does not read back as itself")
    return text


def comment(text: Any) -> str:
    """Text safe to put after `#`: one line, no control characters."""
    return " ".join(str(text).split())


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pyliteral"] = pyliteral
    env.filters["comment"] = comment
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    env.tests["listvalue"] = lambda value: isinstance(value, (list, tuple))
    return env


def render_template(name: str, *, stage: int | None = None, **context: Any) -> str:
    """Render `templates/<name>`, naming the template and stage when it fails."""
    try:
        return environment().get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise RenderError(f"template not found in {templates_dir()}", stage=stage, template=name) from None
    except jinja2.TemplateError as exc:
        raise RenderError(str(exc), stage=stage, template=name) from None
    except ValueError as exc:
        raise RenderError(str(exc), stage=stage, template=name) from None
