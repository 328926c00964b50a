"""Golden files: the rendered stage 5 kernel, byte for byte.

tests/golden/stage5/ holds kernel-metadata.json and stage5.ipynb rendered with
username "golden-user", the `full` profile, no config file and default
parameters. Any change to the renderer, the templates, kernel-metadata/stage5.toml,
stage 5 or a library module it inlines shows up here as a diff to review.

After an intended change, regenerate on purpose and review the diff:

    KERNELGEN_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py
    git diff tests/golden/

With KERNELGEN_REGEN_GOLDEN=1 the test rewrites the files instead of comparing.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from kernelgen.spec.config import Config
from kernelgen.spec.pipeline import load_pipeline
from kernelgen.spec.project import Project
from tests.rendering import render

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = os.environ.get("KERNELGEN_REGEN_GOLDEN") == "1"


def first_difference(expected: bytes, actual: bytes, name: str) -> str:
    diff = difflib.unified_diff(
        expected.decode("utf-8", "replace").splitlines(),
        actual.decode("utf-8", "replace").splitlines(),
        f"golden/{name}",
        f"rendered/{name}",
        lineterm="",
        n=2,
    )
    return "\n".join(list(diff)[:40])


@pytest.mark.parametrize("stage", [5])
def test_rendered_kernel_matches_golden(stage: int) -> None:
    project = Project(pipeline=load_pipeline(), config=Config())
    (kernel,) = render(project, [stage], username="golden-user", profile="full")
    folder = GOLDEN / f"stage{stage}"
    assert set(kernel.files) == {"kernel-metadata.json", f"stage{stage}.ipynb"}
    if REGENERATE:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in kernel.files.items():
            (folder / name).write_bytes(data)
    assert sorted(p.name for p in folder.iterdir()) == sorted(kernel.files)
    for name, data in kernel.files.items():
        expected = (folder / name).read_bytes()
        assert data == expected, (
            f"{name} differs from tests/golden/stage{stage}/{name}; if the change is intended, "
            "rerun with KERNELGEN_REGEN_GOLDEN=1 and review the diff\n"
            + first_difference(expected, data, f"stage{stage}/{name}")
        )
