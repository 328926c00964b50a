"""Wheel houses for internet-off stages: the helper kernel, its wiring, and the offline install.

Nothing here reaches an index: the tiny package is built into a wheel from a project
written by the test (`pip wheel --no-index`), and every pip call the kernels make runs
with `--no-index` or with pip's own PIP_NO_INDEX/PIP_FIND_LINKS pointing at that wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernelgen.build.kernel import write_kernels
from kernelgen.build.wheels import wheel_house, wheel_houses
from kernelgen.cli import main
from kernelgen.spec.pipeline import load_pipeline
from kernelgen.spec.project import Project
from tests.rendering import render

FIXTURE = Path(__file__).parent / "fixtures" / "tinypipe"
PIP_ENTRY = '\n[[pip]]\nmodule = "tinywheel"\nrequirement = "tinywheel==0.1"\n'
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """tinypipe with an internet-off stage 1 that needs the package `tinywheel`."""
    project = tmp_path / "my-project"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("__pycache__"))
    stage1 = project / "kernel-metadata" / "stage1.toml"
    text = stage1.read_text()
    head, _, profiles = text.partition("[profiles.smoke]")
    stage1.write_text(head + PIP_ENTRY + "\n[profiles.smoke]" + profiles)
    return project


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    """A folder holding one tiny wheel, built here without an index."""
    source = tmp_path / "tinywheel-src"
    (source / "tinywheel").mkdir(parents=True)
    (source / "tinywheel" / "__init__.py").write_text("ANSWER = 42\n")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "tinywheel"\nversion = "0.1"\n\n[tool.setuptools]\npackages = ["tinywheel"]\n'
    )
    house = tmp_path / "source-wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--wheel-dir", str(house), str(source)],
        check=True, capture_output=True, timeout=120,
    )
    assert [p.name for p in house.iterdir()] == ["tinywheel-0.1-py3-none-any.whl"]
    return house


def pip_cell(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and "pip" in "".join(c["source"]))


def test_an_offline_stage_with_pip_reads_a_wheel_house_and_online_stages_do_not(tiny: Path) -> None:
    pipeline = load_pipeline(tiny)
    house = wheel_house(pipeline, pipeline.stage(1))
    assert house is not None and house.slug.startswith("tiny-wheels-")
    assert wheel_house(pipeline, pipeline.stage(2)) is None  # no pip
    assert [h.slug for h in wheel_houses(pipeline, [1, 2])] == [house.slug]
    kernel = render(Project.load(project_dir=tiny, cwd=tiny), [1], username="me", wheel_versions={house.slug: 3})[0]
    meta = json.loads(kernel.files["kernel-metadata.json"])
    assert meta["enable_internet"] is False
    assert meta["kernel_sources"] == [f"me/{house.slug}/3"]
    stage1 = tiny / "kernel-metadata" / "stage1.toml"
    stage1.write_text(stage1.read_text().replace("tinywheel==0.1", "tinywheel==0.2"))
    other = wheel_house(load_pipeline(tiny), load_pipeline(tiny).stage(1))
    assert other is not None and other.slug != house.slug  # new requirements, new house


def test_the_pip_cell_installs_from_the_wheel_house_with_no_index(tiny: Path, wheel: Path, tmp_path: Path) -> None:
    """The rendered pip cell, run as the kernel runs it, installs the package with the
    index unreachable; without the house attached it stops with one line."""
    out = tmp_path / "kernels"
    write_kernels(render(Project.load(project_dir=tiny, cwd=tiny), [1], username="me"), out)
    cell = pip_cell(out / "stage1" / "stage1.ipynb")
    assert "--no-index" in cell and cell.count('"install"') == 1
    pipeline = load_pipeline(tiny)
    house = wheel_house(pipeline, pipeline.stage(1))
    assert house is not None
    root = tmp_path / "kaggle"
    mount = root / "input" / "notebooks" / "me" / house.slug  # where a kernel_sources input is mounted
    shutil.copytree(wheel, mount)
    target = tmp_path / "site"
    env = {**os.environ, "KERNELGEN_ROOT": str(root), "PIP_TARGET": str(target), "PIP_INDEX_URL": UNREACHABLE_INDEX}
    run = subprocess.run([sys.executable, "-c", cell], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    check = subprocess.run(
        [sys.executable, "-c", "import tinywheel; print(tinywheel.ANSWER, tinywheel.__file__)"],
        env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True, timeout=60,
    )
    assert check.stdout.split()[0] == "42" and check.stdout.split()[1].startswith(str(target))

    shutil.rmtree(root / "input")
    (root / "input").mkdir()
    missing = subprocess.run(
        [sys.executable, "-c", cell], env={**env, "PIP_TARGET": str(tmp_path / "other")},
        capture_output=True, text=True, timeout=120,
    )
    assert missing.returncode != 0
    assert f"RuntimeError: tinywheel==0.1 is not installed and the wheel house {house.slug} is not attached" in missing.stderr


@pytest.mark.slow
def test_a_local_chain_builds_the_wheel_house_once_and_installs_from_it(
    tiny: Path, wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheels kernel runs like any kernel (pip's own settings point it at the tiny
    wheel instead of an index); the stage installs from its output with --no-index; a
    rerun with the same requirements builds nothing."""
    target = tmp_path / "site"
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel))
    monkeypatch.setenv("PIP_TARGET", str(target))
    monkeypatch.chdir(tiny)
    result = CliRunner().invoke(main, ["chain", "--local", "--workdir", "work"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    pipeline = load_pipeline(tiny)
    house = wheel_house(pipeline, pipeline.stage(1))
    assert house is not None
    assert f"wheels {house.slug}: built version 1" in result.output
    store = tiny / "work" / "local-store" / "kernels" / "local"
    made = store / house.slug / "1" / "root" / "working"
    assert (made / "tinywheel-0.1-py3-none-any.whl").is_file()
    assert (made / "requirements.txt").read_text() == "tinywheel==0.1\n"
    meta = json.loads((tiny / "work" / "kernels" / "stage1" / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == [f"local/{house.slug}/1"]
    assert (target / "tinywheel" / "__init__.py").is_file()  # installed by stage 1's pip cell

    again = CliRunner().invoke(main, ["chain", "--local", "--workdir", "work"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert f"wheels {house.slug}: unchanged, reused version 1" in again.output
    assert "pushed" not in again.output
    assert sorted(p.name for p in (store / house.slug).iterdir() if p.name.isdigit()) == ["1"]
