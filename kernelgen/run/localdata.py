"""Competition data for `--local` runs: a folder the config names, or the pipeline's generator.

A pipeline declares its generator in `kernel-metadata/pipeline.toml`
(`[local] generator = "package.module:function"`, with `[local.options]`). The
generator is called as `function(out, **options)` and writes a Kaggle-shaped root:
`out/input/<competition>/` for each competition the stages read. A pipeline with
neither a generator nor a configured folder gets no data at all, never another's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kernelgen.errors import ConfigError, LocalDataError
from kernelgen.runtime import InputError
from kernelgen.spec.imports import load_project_function
from kernelgen.spec.params import SCALAR_TYPES, coerce_value, parse_text
from kernelgen.spec.pipeline import PIPELINE_FILE, Pipeline

LOCAL_DATA_DIR = "synthetic-data"


def competitions(pipeline: Pipeline) -> list[str]:
    return sorted({slug for spec in pipeline.stages.values() for slug in spec.competition_sources})


def _generator(pipeline: Pipeline) -> tuple[str, Callable[..., Any]]:
    name = pipeline.local.generator
    if name is None:
        raise ConfigError(
            f"the pipeline in {pipeline.root} has no local data: set data = \"<folder>\" in kernelgen.toml, "
            f"or [local] generator = \"package.module:function\" in {pipeline.source / PIPELINE_FILE}"
        )
    return name, load_project_function(pipeline, name, purpose=f"{pipeline.source / PIPELINE_FILE}: local.generator")


def _options(function: Callable[..., Any], declared: Mapping[str, Any], texts: Mapping[str, str]) -> dict[str, Any]:
    """The declared options overridden by `--set NAME=VALUE` texts, typed by the generator's defaults."""
    parameters = inspect.signature(function).parameters
    options = dict(declared)
    for name, text in texts.items():
        param = parameters.get(name)
        if param is None or param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL, param.VAR_KEYWORD):
            known = [p for p, v in parameters.items() if type(v.default).__name__ in SCALAR_TYPES]
            raise ConfigError(f"the generator takes no option {name!r} (options: {', '.join(known)})")
        kind = type(param.default) if type(param.default).__name__ in SCALAR_TYPES else str
        options[name] = parse_text(text, kind, name=name, stage=None)
    for name, value in options.items():
        param = parameters.get(name)
        if param is not None and type(param.default).__name__ in SCALAR_TYPES:
            options[name] = coerce_value(value, type(param.default), name=name, stage=None)
    return options


def generate_data(pipeline: Pipeline, out: Path, texts: Mapping[str, str] | None = None) -> Path:
    """Run the pipeline's generator into `out`; returns `out`, checked to hold every competition."""
    name, function = _generator(pipeline)
    options = _options(function, pipeline.local.options, texts or {})
    try:
        function(out, **options)
    except (ValueError, TypeError, InputError) as exc:
        raise LocalDataError(f"{name}: {exc}") from None
    for slug in competitions(pipeline):
        if not (out / "input" / slug).is_dir():
            raise LocalDataError(f"{name} made no {out / 'input' / slug}")
    return out


def local_competition_data(
    pipeline: Pipeline, data: Path | None, generated: Path, *, log: Callable[[str], None] = print
) -> dict[str, Path]:
    """Each competition's folder for local runs: the configured `data` folder, else data the
    pipeline's generator makes in `generated` (once: it is kept there for later runs)."""
    slugs = competitions(pipeline)
    if data is not None:
        if not data.is_dir():
            raise ConfigError(f"data folder {data} does not exist")
        return dict.fromkeys(slugs, data)
    root = generated
    if not slugs:
        return {}
    if not all((root / "input" / slug).is_dir() for slug in slugs):
        name, _ = _generator(pipeline)
        log(f"making local competition data in {root} with {name}")
        generate_data(pipeline, root)
    return {slug: root / "input" / slug for slug in slugs}
