"""A wheel (not only an editable install) carries the stages, templates and kernel-metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_carries_pipeline_files_and_finds_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("kernelgen-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "kernelgen/cli.py",
        "stages/stage5_submission.py",
        "stages/lib/rle.py",
        "kernelgen/_data/templates/parameters.py.j2",
        "kernelgen/_data/kernel-metadata/stage1.toml",
        "kernelgen/_data/kernel-metadata/datasets.toml",
    ):
        assert expected in names, expected

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "from kernelgen.resources import metadata_dir, stages_dir, templates_dir\n"
        "print(templates_dir()); print(metadata_dir()); print(stages_dir())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    found = [Path(line) for line in out.stdout.splitlines()]
    assert found == [site / "kernelgen/_data/templates", site / "kernelgen/_data/kernel-metadata", site / "stages"]
