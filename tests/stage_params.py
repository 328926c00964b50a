"""Stage `Params` built the way rendering builds them, and the stages' smoke profiles.

Rendering checks parameter values without importing the stage module (it may need
TensorFlow or PyTorch); `params_alone` gives a test the same `Params`, so it can show
that a stage's checks work with nothing else of the module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kernelgen.params import params_class

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
