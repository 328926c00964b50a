"""The main job end to end: `kernelgen chain --local` on synthetic data, every stage a real notebook."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from click.testing import CliRunner

from kernelgen.cli import main
from stages.lib.submission import read_submission
from tests.conftest import LocalChain

# Tests reading the session's one local chain share a worker, so it runs once.
pytestmark = pytest.mark.xdist_group("local-chain")


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
