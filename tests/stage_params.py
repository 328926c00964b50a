"""Stage `Params` built the way rendering builds them, and the stages' smoke profiles.

Rendering checks parameter values without importing the stage module (it may need
TensorFlow or PyTorch); `params_alone` gives a test the same `Params`, so it can show
that a stage's checks work with nothing else of the module.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from kernelgen.errors import ParameterError
from kernelgen.spec.params import check_values, params_class

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent


def source_of(module: str) -> Path:
    """The file of dotted module `module` in this repository."""
    return REPO.joinpath(*module.split(".")).with_suffix(".py")


def params_alone(module: str) -> type:
    """`Params` of stage module `module` (dotted), run without the rest of the module."""
    return params_class(source_of(module), stage=0)


def smoke_profile(stage: int) -> dict[str, Any]:
    """The `[profiles.smoke]` values of kernel-metadata/stage<stage>.toml."""
    return stage_profile(stage, "smoke")


def stage_profile(stage: int, name: str) -> dict[str, Any]:
    """The `[profiles.<name>]` values of kernel-metadata/stage<stage>.toml."""
    with (REPO / "kernel-metadata" / f"stage{stage}.toml").open("rb") as handle:
        return tomllib.load(handle)["profiles"][name]


def assert_refused(params: type, name: str, value: object, rule: str) -> None:
    """Building `params` with `name=value` fails with exactly '<name> <rule>, got <value>'."""
    message = f"{name} {rule}, got {value}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        params(**{name: value})


def assert_renderer_checks(module: str, stage: int, bad: dict[str, Any], message: str) -> None:
    """The defaults and the smoke profile pass the render-time check; `bad` fails it with `message`."""
    source = source_of(module)
    check_values(source, {}, stage)
    check_values(source, smoke_profile(stage), stage)
    with pytest.raises(ParameterError, match=re.escape(f"stage {stage}: {message}")):
        check_values(source, bad, stage)
