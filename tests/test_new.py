"""`kernelgen new`: the scaffolded project is complete, passes its own tests and runs its
local chain; bad destinations and names are refused with nothing left behind."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernelgen import scaffold
from kernelgen.cli import main
from kernelgen.errors import KernelgenError
from kernelgen.scaffold import create_project
from kernelgen.spec.project import Project
from tests.rendering import render

EXPECTED_FILES = {
    ".gitignore",
    "README.md",
    "kernelgen.toml",
    "pyproject.toml",
    "kernel-metadata/datasets.toml",
    "kernel-metadata/pipeline.toml",
    "kernel-metadata/stage1.toml",
    "kernel-metadata/stage2.toml",
    "my_comp/__init__.py",
    "my_comp/fit.py",
    "my_comp/submit.py",
    "my_comp/synth.py",
    "my_comp/lib/__init__.py",
    "my_comp/lib/data.py",
    "my_comp/lib/model.py",
    "tests/test_pipeline.py",
}


def _listing(folder: Path) -> set[str]:
    """Files under `folder`, bytecode caches left out."""
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _ids(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [row[0] for row in list(csv.reader(fh))[1:]]


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The local chain imports the project's generator in this process; undo that afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] == "my_comp":
            del sys.modules[name]


def test_a_new_project_has_every_file_and_renders(tmp_path: Path) -> None:
    project = create_project(tmp_path / "my-comp")
    assert project == (tmp_path / "my-comp").resolve()
    assert _listing(project) == EXPECTED_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["my-comp"]
    for path in project.rglob("*"):
        if path.is_file():
            assert "{{" not in path.read_text(encoding="utf-8"), path

    loaded = Project.load(cwd=project)
    assert loaded.pipeline.root == project
    assert loaded.config.competition == "my-comp"
    assert loaded.pipeline.local.generator == "my_comp.synth:generate"
    assert sorted(loaded.pipeline.datasets) == ["my-comp-model"]
    assert loaded.pipeline.dependencies == {1: (), 2: (1,)}
    kernels = render(loaded, [1, 2], username="someone")
    assert [k.kernel_id for k in kernels] == ["someone/my-comp-fit", "someone/my-comp-submit"]
    meta = json.loads(kernels[1].files["kernel-metadata.json"])
    assert meta["enable_internet"] is False
    assert meta["dataset_sources"] == ["someone/my-comp-model"]


@pytest.mark.parametrize(
    ("folder", "name", "package"),
    [
        ("my-comp", None, "my_comp"),
        ("My Comp.2", None, "my_comp_2"),
        ("whatever", "titanic_v2", "titanic_v2"),
    ],
)
def test_the_package_name_comes_from_the_folder_unless_given(
    tmp_path: Path, folder: str, name: str | None, package: str
) -> None:
    project = create_project(tmp_path / folder, name=name)
    assert (project / package / "fit.py").is_file()
    assert f'module = "{package}.fit"' in (project / "kernel-metadata" / "stage1.toml").read_text()


def test_an_existing_empty_folder_is_filled_in_place(tmp_path: Path) -> None:
    dest = tmp_path / "my-comp"
    dest.mkdir()
    inode = dest.stat().st_ino
    create_project(dest)
    assert dest.stat().st_ino == inode
    assert _listing(dest) == EXPECTED_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["my-comp"]


@pytest.mark.parametrize("content", ["file", "hidden", "folder"])
def test_a_folder_that_holds_anything_is_refused(tmp_path: Path, content: str) -> None:
    dest = tmp_path / "my-comp"
    dest.mkdir()
    {
        "file": lambda: (dest / "notes.txt").write_text("mine"),
        "hidden": lambda: (dest / ".git").mkdir(),
        "folder": lambda: (dest / "data").mkdir(),
    }[content]()
    before = _listing(tmp_path)
    with pytest.raises(KernelgenError, match="is not empty"):
        create_project(dest)
    assert _listing(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["my-comp"]


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "my-comp").write_text("mine")
    with pytest.raises(KernelgenError, match="not a folder"):
        create_project(tmp_path / "my-comp")
    assert (tmp_path / "my-comp").read_text() == "mine"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("my-comp", "not a valid Python identifier"),
        ("2fast", "not a valid Python identifier"),
        ("class", "not a valid Python identifier"),
        ("café", "not a valid Python identifier"),
        ("", "not a valid Python identifier"),
        ("kernelgen", "kernelgen's own package"),
        ("tests", "tests folder"),
        ("json", "standard library module 'json'"),
        ("os", "standard library module 'os'"),
        ("click", "installed module 'click'"),
        ("_", "at least one letter or digit"),
        ("a" * 41, "longer than 40"),
    ],
)
def test_a_bad_name_is_refused_and_nothing_is_written(
    tmp_path: Path, name: str, message: str
) -> None:
    with pytest.raises(KernelgenError, match=message) as info:
        create_project(tmp_path / "project", name=name)
    assert len(str(info.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("folder", "message"), [("123", "not a valid Python identifier"), ("json", "standard library")]
)
def test_a_folder_name_that_makes_a_bad_package_name_asks_for_one(
    tmp_path: Path, folder: str, message: str
) -> None:
    with pytest.raises(KernelgenError, match=message) as info:
        create_project(tmp_path / folder)
    assert "--name" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_while_writing_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    dest = tmp_path / "deeper" / "my-comp"
    if existing:
        dest.mkdir(parents=True)
    real_write = Path.write_text
    calls = []

    def failing_write(self: Path, *args: object, **kwargs: object) -> int:
        calls.append(self)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real_write(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", failing_write)
    with pytest.raises(KernelgenError, match=r"cannot create .*No space left on device"):
        create_project(dest)
    monkeypatch.undo()
    if existing:
        assert list(dest.iterdir()) == []
        assert [p.name for p in dest.parent.iterdir()] == ["my-comp"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_the_templates_cover_what_the_project_needs() -> None:
    files = scaffold.render_files("my_comp")
    assert {p.as_posix() for p in files} == EXPECTED_FILES
    assert all(not p.name.endswith(scaffold.TEMPLATE_SUFFIX) for p in files)


def test_the_new_command(tmp_path: Path) -> None:
    if "new" not in main.commands:
        pytest.skip("`kernelgen new` is not in kernelgen.cli yet")
    runner = CliRunner()
    dest = tmp_path / "my-comp"
    result = runner.invoke(main, ["new", str(dest)])
    assert result.exit_code == 0, result.output
    assert str(dest.resolve()) in result.output
    assert "kernelgen chain --local" in result.output
    assert "pytest" in result.output
    assert _listing(dest) == EXPECTED_FILES
    again = runner.invoke(main, ["new", str(dest)])
    assert again.exit_code == 1
    assert "is not empty" in again.output


@pytest.mark.slow
def test_the_projects_own_tests_pass(tmp_path: Path) -> None:
    project = create_project(tmp_path / "my-comp")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
    assert "failed" not in done.stdout and "error" not in done.stdout


@pytest.mark.slow
def test_the_local_chain_of_a_new_project_ends_in_a_submission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> None:
    project = create_project(tmp_path / "my-comp")
    monkeypatch.chdir(project)
    work = tmp_path / "work"
    result = CliRunner().invoke(
        main, ["chain", "--local", "--workdir", str(work)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    submission = work.resolve() / "outputs" / "stage2" / "submission.csv"
    assert result.stdout.strip().splitlines()[-1] == f"submission: {submission}"

    data = work / "synthetic-data"
    sample = data / "input" / "my-comp" / "sample_submission.csv"
    assert _ids(submission) == _ids(sample)
    with submission.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "target"]

    threshold = json.loads((work / "outputs" / "stage1" / "threshold.json").read_text())[
        "threshold"
    ]
    notebook = json.loads((work / "kernels" / "stage2" / "stage2.ipynb").read_text())
    params = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert f"threshold = {threshold!r}  # from stage 1, version 1" in "".join(params["source"])

    with (data / "truth" / "test_truth.csv").open(newline="", encoding="utf-8") as fh:
        truth = dict(list(csv.reader(fh))[1:])
    predicted = dict(rows[1:])
    ones = sum(label == "1" for label in truth.values())
    majority = max(ones, len(truth) - ones) / len(truth)
    accuracy = sum(predicted[i] == label for i, label in truth.items()) / len(truth)
    assert accuracy >= majority + 0.15, (accuracy, majority)
    assert _listing(project) == EXPECTED_FILES  # the run wrote nothing into the project
