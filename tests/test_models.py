"""Kaggle Models between stages, and the leaderboard loop: publish a stage's files as a model
instance version, pin it in readers' `model_sources`, mount it where Kaggle does; submit,
wait for the score, list submissions. The official client against the stand-in, on the
engine's fixture pipeline (tests/fixtures/chainpipe) with stage 4's files as a model."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kernelgen.cli import main
from kernelgen.clock import Timing
from kernelgen.runtime import InputError, Layout
from kernelgen.spec.pipeline import Via, load_pipeline
from tests.fakes import (
    CHAINPIPE,
    FakeClock,
    declared_outputs,
    quick_executor,
    severstal_with_stage4_as_model,
)
from tests.kaggle_standin import (
    KaggleStandIn,
    KernelScript,
    ModelScript,
    SubmissionScript,
    use_standin,
)

USER = "model-user"
KEY = "model-secret-key-8910"
INSTANCE = f"{USER}/stage4/pytorch/default"
MODEL_ENTRY = """[stage4]
title = "Chain Pipe Stage4"
files = ["stage4/submission.csv", "stage4/segmenter.json"]
via = "model"
framework = "PyTorch"
"""


def with_model(folder: Path) -> None:
    """Declare the project's stage4 entry a Kaggle Model (PyTorch, variation `default`)."""
    datasets = folder / "kernel-metadata" / "datasets.toml"
    text = datasets.read_text()
    start = text.index("[stage4]")
    datasets.write_text(text[:start] + MODEL_ENTRY)


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(CHAINPIPE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    with_model(folder)
    monkeypatch.chdir(folder)
    return folder


@contextmanager
def standin_for(
    project: Path, server_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KaggleStandIn]:
    """The stand-in, its kernels leaving the outputs `project` declares, as this test's Kaggle."""
    outputs = declared_outputs(load_pipeline(project))
    with KaggleStandIn(
        server_dir,
        executor=quick_executor(set(), outputs),
        credentials={USER: KEY},
        kernel_script=KernelScript(running_polls=0),
    ) as server:
        use_standin(monkeypatch, server, username=USER, key=KEY)
        yield server
        assert server.count("CONNECT") == 0


@pytest.fixture
def kaggle(
    tmp_path: Path, project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KaggleStandIn]:
    with standin_for(project_dir, tmp_path / "server", monkeypatch) as server:
        yield server


def invoke(*args: str) -> Result:
    clock = FakeClock()
    return CliRunner().invoke(main, list(args), obj=Timing(clock.clock, clock.sleep))


def test_a_model_entry_is_read_as_one(project_dir: Path) -> None:
    spec = load_pipeline(project_dir).datasets["stage4"]
    assert (spec.via, spec.framework, spec.variation, spec.producer) == (
        Via.MODEL,
        "pytorch",
        "default",
        4,
    )
    assert spec.model_instance(USER) == INSTANCE


def test_layout_finds_a_model_in_either_mount(tmp_path: Path) -> None:
    version = f"{INSTANCE}/3"
    older = tmp_path / "old" / "input" / "stage4" / "pytorch" / "default" / "3"
    newer = tmp_path / "new" / "input" / "models" / USER / "stage4" / "pytorch" / "default" / "3"
    for folder in (older, newer):
        folder.mkdir(parents=True)
    assert Layout(tmp_path / "old", models={"stage4": version}).input("stage4") == older
    assert Layout(tmp_path / "new", models={"stage4": version}).input("stage4") == newer
    with pytest.raises(InputError) as caught:
        Layout(tmp_path / "none", models={"stage4": version}).input("stage4")
    assert str(
        tmp_path / "none" / "input" / "models" / USER / "stage4" / "pytorch" / "default" / "3"
    ) in str(caught.value)


def test_the_chain_publishes_a_model_version_pins_it_submits_and_waits_for_the_score(
    kaggle: KaggleStandIn, project_dir: Path
) -> None:
    kaggle.script_model(INSTANCE, ModelScript(processing_polls=2))
    kaggle.submission_script = SubmissionScript(pending_polls=2, public_score=0.88536)
    done = invoke("chain", "--to", "6", "--submit", "--workdir", "work")
    assert done.exit_code == 0, done.output
    assert kaggle.count("CreateModel") == 1 and kaggle.count("CreateModelInstance") == 1
    assert sorted(kaggle.datasets) == [f"{USER}/stage1", f"{USER}/stage2"]  # no stage4 dataset
    assert f"dataset stage4: created model {INSTANCE} version 1" in done.output
    for stage in (5, 6):
        meta = json.loads(
            (
                project_dir / "work" / "kernels" / f"stage{stage}" / "kernel-metadata.json"
            ).read_text()
        )
        assert meta["model_sources"] == [f"{INSTANCE}/1"]
        assert f"{USER}/stage4" not in meta["dataset_sources"]
        saved = next(
            c.body
            for c in reversed(kaggle.calls("SaveKernel"))
            if c.body["slug"].endswith(f"stage{stage}-" + ("submit" if stage == 5 else "infer"))
        )
        assert saved["modelDataSources"] == [f"{INSTANCE}/1"]
    notebook = (project_dir / "work" / "kernels" / "stage6" / "stage6.ipynb").read_text()
    assert (
        f'\\"stage4\\": \\"{INSTANCE}/1\\"' in notebook or f"'stage4': '{INSTANCE}/1'" in notebook
    )
    assert "submission 1: complete, public score 0.88536" in done.output
    state = json.loads((project_dir / "work" / "state.json").read_text())
    assert state["submissions"] == [
        {
            "competition": "chain-comp",
            "kernel": f"{USER}/chain-pipe-stage6-infer",
            "version": 1,
            "ref": 1,
            "submitted": state["submissions"][0]["submitted"],
            "status": "complete",
            "public_score": 0.88536,
            "private_score": None,
            "message": "",
        }
    ]
    listed = invoke("submissions")
    assert listed.exit_code == 0, listed.output
    (line,) = listed.output.splitlines()
    assert re.match(
        r"1  \S+  complete  public 0\.88536  private -  kernelgen: model-user/chain-pipe-stage6-infer version 1$",
        line,
    )
    runs = json.loads(invoke("runs", "--json", "--workdir", "work").output)
    assert runs[0]["public_score"] == 0.88536
    assert runs[0]["submission"]["ref"] == f"{USER}/chain-pipe-stage6-infer/1"

    again = invoke("chain", "--to", "6", "--workdir", "work")
    assert again.exit_code == 0, again.output
    assert kaggle.count("CreateModelInstanceVersion") == 0  # unchanged files publish nothing
    assert "unchanged" in again.output


def test_publish_makes_a_new_model_version_and_waits_for_it(
    kaggle: KaggleStandIn, project_dir: Path
) -> None:
    outputs = project_dir / "work" / "outputs" / "stage4"
    outputs.mkdir(parents=True)
    (outputs / "submission.csv").write_text("id,prediction\n")
    (outputs / "segmenter.json").write_text('{"epochs": 1}')
    first = invoke("publish", "stage4", "--workdir", "work")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0].startswith(f"created {INSTANCE}")
    assert first.output.splitlines()[-1] == "stage4: ready"
    (outputs / "segmenter.json").write_text('{"epochs": 2}')
    kaggle.script_model(INSTANCE, ModelScript(processing_polls=3))
    second = invoke("publish", "stage4", "--workdir", "work")
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[0].startswith(f"new version of {INSTANCE}")
    assert kaggle.count("CreateModelInstanceVersion") == 1
    assert (kaggle.model_dir(f"{INSTANCE}/2") / "segmenter.json").read_text() == '{"epochs": 2}'
    assert (
        json.loads((project_dir / "work" / "state.json").read_text())["datasets"]["stage4"][
            "version"
        ]
        == 2
    )


def test_a_model_version_that_never_becomes_available_stops_its_readers_in_one_line(
    kaggle: KaggleStandIn, project_dir: Path
) -> None:
    kaggle.script_model(INSTANCE, ModelScript(fail=True))
    failed = invoke("chain", "--workdir", "work")
    assert failed.exit_code == 1
    error = [line for line in failed.stderr.splitlines() if line.startswith("kernelgen: error:")]
    assert error == [
        f"kernelgen: error: dataset stage4: model {INSTANCE} version 1 is not available after 3600 s: "
        "Kaggle reports no processing state for models, so it may have failed to process"
    ]
    assert not any(c.body["slug"].endswith("stage5-submit") for c in kaggle.calls("SaveKernel"))


def test_a_submission_that_errors_is_one_line(kaggle: KaggleStandIn) -> None:
    kaggle.submission_script = SubmissionScript(
        pending_polls=1, error="Submission Scoring Error: 3 rows missing"
    )
    failed = invoke("chain", "--submit", "--workdir", "work")
    assert failed.exit_code == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        f"kernelgen: error: submission 1 ({USER}/chain-pipe-stage5-submit version 1) failed: "
        "Submission Scoring Error: 3 rows missing"
    )
    state = json.loads(Path("work/state.json").read_text())
    assert state["submissions"][0]["status"] == "error"


def test_a_submission_not_scored_in_time_is_one_line(kaggle: KaggleStandIn) -> None:
    kaggle.submission_script = SubmissionScript(pending_polls=10_000)
    failed = invoke("chain", "--submit", "--score-timeout", "600", "--workdir", "work")
    assert failed.exit_code == 1
    line = failed.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"kernelgen: error: submission 1 \({USER}/chain-pipe-stage5-submit version 1\) did not finish within 10:00 "
        r"\(last state: pending, \d+ polls\)",
        line,
    )


def test_submit_sends_the_last_collected_version_and_prints_the_score(
    kaggle: KaggleStandIn,
) -> None:
    nothing = invoke("submit", "--workdir", "work")
    assert nothing.exit_code == 1 and "has a submission.csv to submit" in nothing.stderr
    assert invoke("chain", "--workdir", "work").exit_code == 0
    kaggle.submission_script = SubmissionScript(
        pending_polls=1, public_score=0.9, private_score=0.89
    )
    done = invoke("submit", "--workdir", "work")
    assert done.exit_code == 0, done.output
    assert (
        done.output.splitlines()[-1]
        == "submission 1: complete, public score 0.90000, private score 0.89000"
    )
    ((competition, kernel, version),) = [
        (s.competition, s.kernel, s.version) for s in kaggle.submissions
    ]
    assert (competition, kernel, version) == ("chain-comp", f"{USER}/chain-pipe-stage5-submit", 1)
    listed = json.loads(invoke("submissions", "--json").output)
    assert [
        (row["ref"], row["status"], row["public_score"], row["private_score"]) for row in listed
    ] == [(1, "complete", 0.9, 0.89)]


def test_an_entry_switched_from_dataset_to_model_is_published_as_a_model(
    kaggle: KaggleStandIn, project_dir: Path
) -> None:
    datasets = project_dir / "kernel-metadata" / "datasets.toml"
    as_model = datasets.read_text()
    datasets.write_text(as_model.replace('via = "model"\nframework = "PyTorch"\n', ""))
    first = invoke("chain", "--workdir", "work")
    assert first.exit_code == 0, first.output
    assert f"{USER}/stage4" in kaggle.datasets and kaggle.count("CreateModel") == 0
    datasets.write_text(as_model)
    switched = invoke("chain", "--workdir", "work")
    assert switched.exit_code == 0, switched.output
    assert f"dataset stage4: created model {INSTANCE} version 1" in switched.output
    meta = json.loads(
        (project_dir / "work" / "kernels" / "stage5" / "kernel-metadata.json").read_text()
    )
    assert (meta["model_sources"], f"{USER}/stage4" in meta["dataset_sources"]) == (
        [f"{INSTANCE}/1"],
        False,
    )


def test_the_severstal_chain_with_stage4_as_a_model_submits_stage6_and_lists_its_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled project, its stage4 entry declared a PyTorch model: `chain --to 6 --submit`
    through the official client makes a model instance version (no stage4 dataset), pins it in
    stages 5 and 6, submits stage 6 and prints its score, which `submissions` lists."""
    project = severstal_with_stage4_as_model(tmp_path / "severstal")
    monkeypatch.chdir(tmp_path)
    with standin_for(project, tmp_path / "server", monkeypatch) as kaggle:
        kaggle.script_model(INSTANCE, ModelScript(processing_polls=1))
        kaggle.submission_script = SubmissionScript(pending_polls=2, public_score=0.88536)
        done = invoke(
            "chain", "--to", "6", "--submit", "--project", str(project), "--workdir", "work"
        )
        assert done.exit_code == 0, done.output
        assert sorted(kaggle.datasets) == [f"{USER}/stage1", f"{USER}/stage2"]
        assert f"dataset stage4: created model {INSTANCE} version 1" in done.output
        assert (
            kaggle.count("CreateModelInstanceVersion") == 0
            and kaggle.count("CreateModelInstance") == 1
        )
        for stage in (5, 6):
            meta = json.loads(
                (
                    tmp_path / "work" / "kernels" / f"stage{stage}" / "kernel-metadata.json"
                ).read_text()
            )
            (source,) = meta["model_sources"]
            assert re.fullmatch(rf"{INSTANCE}/\d+", source) and source.count("/") == 4
            assert f"{USER}/stage4" not in meta["dataset_sources"]
        (submission,) = kaggle.submissions
        assert submission.kernel.endswith("-stage6-inference")
        assert "submission 1: complete, public score 0.88536" in done.output
        listed = invoke("submissions", "--project", str(project), "--workdir", "work")
    assert listed.exit_code == 0, listed.output
    assert "public 0.88536" in listed.output and "-stage6-inference version 1" in listed.output
