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
        "kernelgen/runtime/layout.py",
        "kernelgen/_data/pipeline/stages/stage5_submission.py",
        "kernelgen/_data/pipeline/stages/lib/rle.py",
        "kernelgen/_data/templates/parameters.py.j2",
        "kernelgen/_data/templates/report.html.j2",
        "kernelgen/report/build.py",
        "kernelgen/_data/pipeline/stages/report.py",
        "kernelgen/_data/pipeline/kernel-metadata/stage1.toml",
        "kernelgen/_data/pipeline/kernel-metadata/datasets.toml",
        "kernelgen/scaffold/template/kernel-metadata/stage1.toml.tmpl",
        "kernelgen/scaffold/template/package/fit.py.tmpl",
    ):
        assert expected in names, expected

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "from kernelgen.spec.project import Project\n"
        "from kernelgen.build.kernel import render_stages\n"
        "from kernelgen.spec.resources import bundled_project, templates_dir\n"
        "print(templates_dir()); print(bundled_project())\n"
        "print(render_stages(Project.load(), [5], username='someone')[0].kernel_id)\n"
        "from pathlib import Path\n"
        "from kernelgen.report import build_report, write_report\n"
        "print([p.key for p in build_report(Project.load(), Path('.')).panels])\n"
        "print(write_report(Project.load(), Path('.')).name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert [Path(line) for line in lines[:2]] == [site / "kernelgen/_data/templates", site / "kernelgen/_data/pipeline"]
    assert lines[2] == "someone/severstal-stage5-submission"
    assert lines[3:] == ["['changes', 'threshold', 'submission', 'overlays', 'parameters']", "report.html"]
    assert not any(name.startswith("stages/") for name in names)
