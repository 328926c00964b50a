"""The `kernelgen` command: help for every command, render, and one-line errors for bad input.

Every test runs in its own empty working folder, so no kernelgen.toml or
pyproject.toml of the checkout is picked up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kernelgen.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kernelgen: error: ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def test_help_on_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: ")
    assert main.commands, "no commands registered"
    for name, command in main.commands.items():
        assert name in result.output
        sub = invoke(name, "--help")
        assert sub.exit_code == 0, sub.output
        assert f" {name} " in sub.output
        assert command.help
        first_words = " ".join(command.help.split()[:4])
        assert first_words in " ".join(sub.output.split())
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in sub.output
    assert invoke("-h").exit_code == 0


def test_render_writes_out_stage_folders(tmp_path: Path) -> None:
    out = tmp_path / "build" / "kernels"
    result = invoke("render", "--stage", "5", "--out", str(out), "--user", "cli-user")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["stage5"]
    assert sorted(p.name for p in (out / "stage5").iterdir()) == [
        "kernel-metadata.json",
        "stage5.ipynb",
    ]
    meta = json.loads((out / "stage5" / "kernel-metadata.json").read_text())
    assert meta["id"] == "cli-user/severstal-stage5-submission"
    assert result.output.strip() == (
        f"stage 5: {out / 'stage5'}/stage5.ipynb (cli-user/severstal-stage5-submission)"
    )


def test_render_set_profile_and_config(tmp_path: Path) -> None:
    (tmp_path / "kernelgen.toml").write_text(
        'username = "from-config"\n[stages.stage5]\nthreshold = 0.6\n'
    )
    result = invoke(
        "render", "--stage", "5", "--out", "out", "--set", "threshold=0.25", "--profile", "smoke"
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "stage5" / "kernel-metadata.json").read_text())
    assert meta["id"].startswith("from-config/")
    notebook = (tmp_path / "out" / "stage5" / "stage5.ipynb").read_text()
    assert "threshold = 0.25  # --set" in notebook
    assert "`smoke` profile" in notebook


def test_render_user_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    assert invoke("render", "--stage", "5", "--out", "out").exit_code == 0
    meta = json.loads((tmp_path / "out" / "stage5" / "kernel-metadata.json").read_text())
    assert meta["id"] == "env-user/severstal-stage5-submission"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--stage", "9", "--user", "u"], ["unknown stage 9", "known stages: 1, 2, 3, 4, 5"]),
        (
            ["--stage", "5", "--user", "u", "--set", "threshold"],
            ["--set 'threshold'", "NAME=VALUE"],
        ),
        (
            ["--stage", "5", "--user", "u", "--set", "thresold=0.5"],
            ["unknown parameter 'thresold'", "valid: threshold"],
        ),
        (
            ["--stage", "5", "--user", "u", "--set", "threshold=high"],
            ["threshold must be float, got 'high'"],
        ),
        (["--stage", "5", "--user", "u", "--set", "threshold=nan"], ["threshold must be float"]),
        (["--stage", "5", "--user", "u", "--profile", "nope"], ["unknown profile 'nope'"]),
        (["--stage", "5", "--user", "bad user"], ["Kaggle username 'bad user' is not valid"]),
        (["--stage", "5"], ["no Kaggle username", "--user", "KAGGLE_USERNAME"]),
        (
            ["--stage", "3", "--stage", "5", "--user", "u", "--set", "threshold=0.5"],
            ["stageN.threshold"],
        ),
    ],
)
def test_render_bad_input(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    result = invoke("render", "--out", "out", *args)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ('usrname = "me"\n', "unknown key 'usrname'"),
        ("username = = 1\n", "invalid TOML"),
        ('profile = "fast"\n', "profile 'fast' is not defined"),
    ],
)
def test_invalid_config_file(tmp_path: Path, config: str, needle: str) -> None:
    (tmp_path / "kernelgen.toml").write_text(config)
    result = invoke("render", "--stage", "5", "--out", "out", "--user", "u")
    assert_one_line_error(result, needle, "kernelgen.toml")
    assert not (tmp_path / "out").exists()


def test_explicit_config_file_missing(tmp_path: Path) -> None:
    result = invoke(
        "render", "--stage", "5", "--out", "out", "--user", "u", "--config", "nope.toml"
    )
    assert_one_line_error(result, "nope.toml", "config file not found")
    assert not (tmp_path / "out").exists()


def test_stage_and_all_are_mutually_exclusive(tmp_path: Path) -> None:
    both = invoke("render", "--stage", "5", "--all", "--out", "out", "--user", "u")
    neither = invoke("render", "--out", "out", "--user", "u")
    for result in (both, neither):
        assert result.exit_code == 2
        assert "--stage N (repeatable) or --all" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_render_needs_out(tmp_path: Path) -> None:
    result = invoke("render", "--stage", "5", "--user", "u")
    assert result.exit_code == 2
    assert "--out" in result.output


def test_run_unknown_stage_and_bad_set(tmp_path: Path) -> None:
    assert_one_line_error(invoke("run", "--stage", "9", "--root", "root"), "unknown stage 9")
    assert_one_line_error(
        invoke("run", "--stage", "5", "--root", "root", "--set", "stage5.nope=1"),
        "unknown parameter 'nope'",
    )
    assert not (tmp_path / "root").exists()


def test_run_missing_input_is_one_line(tmp_path: Path) -> None:
    result = invoke("run", "--stage", "5", "--root", "root")
    assert_one_line_error(result, "stage 5 failed: ", "input 'stage4' not found")
    assert not (tmp_path / "root" / "working").exists()
    assert [p.name for p in (tmp_path / "root").iterdir()] == []


def test_run_writes_outputs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "input" / "stage4").mkdir(parents=True)
    (root / "input" / "stage2").mkdir(parents=True)
    (root / "input" / "stage4" / "submission.csv").write_text(
        "ImageId,EncodedPixels,ClassId\na.jpg,1 3,1\n"
    )
    (root / "input" / "stage2" / "test_missing_count.csv").write_text(
        "ImageId,allMissing\na.jpg,0.1\n"
    )
    result = invoke("run", "--stage", "5", "--root", str(root), "--set", "threshold=0.05")
    assert result.exit_code == 0, result.output
    assert f"stage 5: outputs in {root / 'working'}" in result.output
    assert (root / "working" / "submission.csv").read_text().splitlines() == [
        "ImageId,EncodedPixels,ClassId",
        "a.jpg,,1",
    ]


def test_jupyter_kernel_is_checked_before_anything_runs(tmp_path: Path) -> None:
    work = tmp_path / "work"
    assert_one_line_error(
        invoke("chain", "--local", "--workdir", str(work), "--jupyter-kernel", "nowhere"),
        "no Jupyter kernel named 'nowhere'",
    )
    assert not work.exists()
    assert_one_line_error(
        invoke("run", "--stage", "5", "--root", "root", "--notebook", "--jupyter-kernel", "nowhere"),
        "no Jupyter kernel named 'nowhere'",
    )
    assert not (tmp_path / "root").exists()
    for args in (
        ["chain", "--workdir", str(work), "--jupyter-kernel", "python3"],
        ["run", "--stage", "5", "--root", "root", "--jupyter-kernel", "python3"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2
        assert "--jupyter-kernel needs" in result.output


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kernelgen", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: kernelgen ")
    assert "render" in done.stdout and "run" in done.stdout
