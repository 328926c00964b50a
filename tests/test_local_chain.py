"""The main job end to end: `kernelgen chain --local` on synthetic data, every stage a real notebook."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from kernelgen.cli import main
from stages.lib.submission import read_submission
from tests.conftest import LocalChain
from tests.fakes import severstal_with_stage4_as_model


@pytest.mark.slow
def test_local_chain_ends_in_a_valid_submission_and_reruns_nothing(
    local_chain: LocalChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = local_chain.workdir
    monkeypatch.chdir(work.parent)
    runner = CliRunner()
    *_, report_line, last = local_chain.output.strip().splitlines()
    submission = work / "outputs" / "stage5" / "submission.csv"
    assert last == f"submission: {submission}"
    assert report_line == f"report: {work / 'report.html'}"

    sub = read_submission(submission)
    sample = read_submission(work / "synthetic-data" / "input" / "severstal-steel-defect-detection" / "sample_submission.csv")
    assert sub.fmt == sample.fmt
    pd.testing.assert_frame_equal(sub.frame[["ImageId", "ClassId"]], sample.frame[["ImageId", "ClassId"]])

    threshold = json.loads((work / "outputs" / "stage3" / "threshold.json").read_text())["threshold"]
    notebook = json.loads((work / "kernels" / "stage5" / "stage5.ipynb").read_text())
    params = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert f"threshold = {threshold!r}  # from stage 3, version 1" in "".join(params["source"])

    for stage, name in [(1, "model.h5"), (1, "test_missing_count.csv"), (2, "train_missing_count.csv"), (4, "model.pth")]:
        assert (work / "outputs" / f"stage{stage}" / name).is_file()
    state = json.loads((work / "state.json").read_text())
    assert {s["status"] for s in state["stages"].values()} == {"complete"}
    assert {d["status"] for d in state["datasets"].values()} == {"ready"}

    again = runner.invoke(main, ["chain", "--local", "--workdir", str(work)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert again.output.count("unchanged") >= 5
    assert "pushed" not in again.output
    assert again.output.strip().splitlines()[-2:] == [report_line, last]
    rows = re.findall(r'<tr data-stage="(\d+)" data-status="(\w+)">', (work / "report.html").read_text())
    assert rows == [(str(n), "unchanged") for n in range(1, 6)]


@pytest.mark.slow
def test_stage6_reads_stage4_as_a_kaggle_model_and_matches_stage5_row_for_row(
    local_chain: LocalChain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`chain --local --to 6` on a copy of the session's chain, from a copy of the bundled
    project whose stage4 entry is a Kaggle Model: stages 1-4 are unchanged, stage 4's files
    become version 1 of a model instance that stages 5 and 6 mount, the wheel house (nothing
    missing here: smp imports) and stage 6 run, and stage 6's own predictions, gated by the
    classifier, give stage 5's submission."""
    project = severstal_with_stage4_as_model(tmp_path / "project")
    work = tmp_path / "work"
    shutil.copytree(local_chain.workdir, work, symlinks=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no index, should any pip call try one
    args = ["chain", "--local", "--to", "6", "--workdir", str(work), "--project", str(project)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.count("unchanged") >= 4
    assert "dataset stage4: created model local/stage4/pytorch/default version 1" in result.output
    stage6 = work / "outputs" / "stage6" / "submission.csv"
    assert result.output.strip().splitlines()[-1] == f"submission: {stage6}"
    assert re.search(r"wheels severstal-wheels-[0-9a-f]{12}: built version 1", result.output)

    five = read_submission(work / "outputs" / "stage5" / "submission.csv")
    six = read_submission(stage6)
    pd.testing.assert_frame_equal(six.frame, five.frame)
    assert six.fmt == five.fmt
    for stage in (5, 6):
        meta = json.loads((work / "kernels" / f"stage{stage}" / "kernel-metadata.json").read_text())
        assert meta["model_sources"] == ["local/stage4/pytorch/default/1"]
        assert "local/stage4" not in meta["dataset_sources"]
    meta = json.loads((work / "kernels" / "stage6" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False
    assert meta["dataset_sources"] == ["local/stage1"]
    assert len(meta["kernel_sources"]) == 1 and "-wheels-" in meta["kernel_sources"][0]
    notebook = json.loads((work / "kernels" / "stage6" / "stage6.ipynb").read_text())
    pip = next("".join(c["source"]) for c in notebook["cells"] if '"pip"' in "".join(c["source"]))
    assert pip.count('"install"') == 1 and '"--no-index"' in pip
    log = (work / "outputs" / "stage6" / "severstal-stage6-inference.log").read_text()
    assert re.search(r"stage 6 on cpu: \d+ test images in [\d.]+ s \([\d.]+ images/s", log)
    assert json.loads((work / "outputs" / "stage6" / "metrics.json").read_text())["images_per_second"] > 0


@dataclass(frozen=True)
class FoldChain:
    workdir: Path
    first_runs: int  # ledger rows before this chain
    output: str


@pytest.fixture(scope="module")
def fold_chain(local_chain: LocalChain, tmp_path_factory: pytest.TempPathFactory) -> FoldChain:
    """`chain --local --to 6 --matrix stage4.fold=0,1` on a copy of the session's chain:
    stages 1-3 are unchanged, stage 4 trains one kernel per fold (one epoch each, to keep
    the suite short), stage 5 votes their submissions and stage 6 predicts with both
    models. The second run of its ledger."""
    work = tmp_path_factory.mktemp("fold-chain") / "work"
    shutil.copytree(local_chain.workdir, work, symlinks=True)
    before = len(runs(work))
    args = ["chain", "--local", "--to", "6", "--workdir", str(work), "--matrix", "stage4.fold=0,1"]
    args += ["--set", "stage4.epochs=1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work.parent)
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return FoldChain(work, before, result.output)


def runs(work: Path) -> list[dict]:
    return json.loads(CliRunner().invoke(main, ["runs", "--json", "--workdir", str(work)]).output)


@pytest.mark.slow
def test_stage4_as_two_folds_gives_a_stage6_submission_from_both_models(fold_chain: FoldChain) -> None:
    work, output = fold_chain.workdir, fold_chain.output
    assert output.count("unchanged") >= 3
    for fold in (0, 1):
        assert f"stage 4 fold-{fold}: pushed local/severstal-stage4-segmentation-fold-{fold} version 1" in output
        assert (work / "outputs" / "stage4" / f"fold-{fold}" / "model.pth").is_file()
    stage6 = work / "outputs" / "stage6" / "submission.csv"
    assert output.strip().splitlines()[-1] == f"submission: {stage6}"

    sample = read_submission(work / "synthetic-data" / "input" / "severstal-steel-defect-detection" / "sample_submission.csv")
    for stage in (5, 6):
        sub = read_submission(work / "outputs" / f"stage{stage}" / "submission.csv")
        assert sub.fmt == sample.fmt
        pd.testing.assert_frame_equal(sub.frame[["ImageId", "ClassId"]], sample.frame[["ImageId", "ClassId"]])
    log6 = (work / "outputs" / "stage6" / "severstal-stage6-inference.log").read_text()
    assert "ensemble of 2 stage 4 models; post-processing per class the median of 2 checkpoints' own" in log6
    log5 = (work / "outputs" / "stage5" / "severstal-stage5-submission.log").read_text()
    assert "majority vote of 2 stage 4 submissions" in log5
    state = json.loads((work / "state.json").read_text())
    assert sorted(state["cells"]) == ["4/fold-0", "4/fold-1"]
    assert {cell["status"] for cell in state["cells"].values()} == {"complete"}
    assert state["matrices"] == {"4": [{"fold": 0}, {"fold": 1}]}


@pytest.mark.slow
def test_a_second_chain_with_other_parameters_is_a_second_run_in_the_ledger(fold_chain: FoldChain) -> None:
    """The ledger of the bundled pipeline: the two-fold chain is the newest run, beside the
    session chain's first one, with stage 4's parameters per fold and its validation Dice
    per fold and as their mean."""
    work = fold_chain.workdir
    listed = runs(work)
    newest, first = listed[0], listed[-1]
    assert (newest["id"], first["id"], len(listed)) == (fold_chain.first_runs + 1, 1, fold_chain.first_runs + 1)
    assert (first["params"]["stage4.epochs"], newest["params"]["stage4.fold-1.epochs"]) == (6, 1)
    assert newest["params"]["stage4.fold-1.fold"] == 1
    assert newest["stages"]["4/fold-0"] == newest["stages"]["4/fold-1"] == "complete"
    assert newest["stages"]["1"] == "unchanged"
    assert isinstance(first["metrics"]["stage4.val_dice"], float)
    folds = [newest["metrics"][f"stage4.fold-{k}.val_dice"] for k in (0, 1)]
    assert newest["metrics"]["stage4.val_dice"] == pytest.approx(sum(folds) / 2)
    assert {"stage1.val_auc", "stage1.val_accuracy", "stage3.threshold", "stage3.f1"} <= set(first["metrics"])
    diff = CliRunner().invoke(main, ["runs", "diff", "1", str(newest["id"]), "--workdir", str(work)])
    assert diff.exit_code == 0 and "stage4.fold-0.epochs" in diff.output
    html = (work / "report.html").read_text()
    assert '<section id="panel-runs">' in html and 'alt="Metrics across runs: ' in html
