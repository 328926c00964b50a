"""The Severstal pipeline's report panels (stages/report.py): the threshold sweep, the
classifier gate and mask overlays, on synthetic data whose truth is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kernelgen.backends.base import RunStatus
from kernelgen.clock import timestamp
from kernelgen.report import build_report, write_report
from kernelgen.report.panel import Figure, Panel, Stats, Table
from kernelgen.run.localdata import LOCAL_DATA_DIR
from kernelgen.run.state import STATE_FILE, ChainState
from kernelgen.spec.project import Project
from stages.lib.severstal import CLASS_IDS
from stages.stage3_threshold import choose_threshold, threshold_sweep
from stages.synth import generate
from tests.fakes import FakeBackend, FakeClock
from tests.test_report import DURATIONS, run_chain

N_TEST = 5


def panel(report, key: str) -> Panel:
    return next(p for p in report.panels if p.key == key)


def stats(found: Panel) -> dict[str, str]:
    return dict(next(b for b in found.blocks if isinstance(b, Stats)).items)


def write_submission(rows: list[tuple[str, int, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"])
    frame[["ImageId", "EncodedPixels", "ClassId"]].to_csv(path, index=False, lineterminator="\n")


@pytest.fixture
def work(tmp_path: Path) -> tuple[Path, str, pd.DataFrame]:
    """A work folder whose stage 4 predicted the truth exactly and whose stage 5 blanked
    one image with defects (its classifier score 0.9 is above the threshold 0.5)."""
    work = tmp_path / "work"
    data = generate(work / LOCAL_DATA_DIR, n_train=1, n_test=N_TEST, seed=3)
    truth = pd.read_csv(data.test_truth, dtype={"EncodedPixels": str})
    ids = sorted(p.name for p in (data.competition_dir / "test_images").iterdir())
    known = {(i, c): r for i, c, r in truth[["ImageId", "ClassId", "EncodedPixels"]].itertuples(index=False)}
    blanked = truth["ImageId"].value_counts().idxmax()  # the image with the most defect classes
    raw = [(i, c, known.get((i, c), "")) for i in ids for c in CLASS_IDS]
    final = [(i, c, "" if i == blanked else rle) for i, c, rle in raw]
    outputs = work / "outputs"
    write_submission(raw, outputs / "stage4" / "submission.csv")
    write_submission(final, outputs / "stage5" / "submission.csv")
    (outputs / "stage1").mkdir(parents=True)
    scores = pd.DataFrame({"ImageId": ids, "allMissing": [0.9 if i == blanked else 0.1 for i in ids]})
    scores.to_csv(outputs / "stage1" / "test_missing_count.csv", index=False)
    rng = np.random.default_rng(0)
    positive = rng.random(40) < 0.5
    sweep = threshold_sweep(np.where(positive, rng.uniform(0, 0.6, 40), rng.uniform(0.4, 1, 40)), positive)
    chosen = choose_threshold(sweep, "f1")
    (outputs / "stage3").mkdir(parents=True)
    sweep.to_csv(outputs / "stage3" / "threshold_sweep.csv", index=False)
    (outputs / "stage3" / "threshold.json").write_text(json.dumps(chosen))
    state = ChainState.load(work / STATE_FILE, "local")
    for number in (1, 2, 3, 4, 5):
        record = state.stage(number)
        record.mark_pushed(key="k", kernel=f"local/stage{number}", version=1, url="", at=timestamp(0))
        record.mark_status(RunStatus.COMPLETE, "", at=timestamp(60))
    state.stages[5].params, state.stages[5].sources = {"threshold": 0.5}, {"threshold": "--set"}
    state.save()
    return work, blanked, truth


def test_the_gate_panel_counts_masks_per_class_and_the_images_blanked(work) -> None:
    folder, blanked, truth = work
    found = panel(build_report(Project.load(), folder), "submission")
    removed = int((truth["ImageId"] == blanked).sum())
    assert stats(found) == {
        "test images": str(N_TEST),
        "images with a defect": str(truth["ImageId"].nunique() - 1),
        "blanked by the gate": f"1 of {N_TEST}",
        "masks the gate removed": str(removed),
    }
    table = next(b for b in found.blocks if isinstance(b, Table))
    for class_id, before, after, _ in [(int(r[0].split()[1]), *r[1:]) for r in table.rows]:
        in_truth = truth[truth["ClassId"] == class_id]
        assert before == len(in_truth)
        assert after == len(in_truth[in_truth["ImageId"] != blanked])
    assert found.intro.endswith("above 0.500.")  # the threshold stage 5 ran with, not stage 3's choice


def test_overlays_show_every_image_with_its_truth_and_score(work) -> None:
    folder, blanked, truth = work
    found = panel(build_report(Project.load(), folder), "overlays")
    pairs = N_TEST * len(CLASS_IDS)
    lost = int((truth["ImageId"] == blanked).sum())  # blanked true masks score 0, every other pair 1
    assert stats(found) == {
        "final score (mean Dice)": f"{(pairs - lost) / pairs:.4f}",
        "stage 4 before the gate": "1.0000",
    }
    figures = [b for b in found.blocks if isinstance(b, Figure)]
    assert len(figures) == N_TEST and {f.mime for f in figures} == {"image/jpeg"}
    shown = {f.caption.split(":")[0]: f.caption for f in figures}
    assert "predicted classes none; true classes" in shown[blanked]
    assert shown[blanked].endswith(f"mean Dice {(4 - lost) / 4:.3f}")
    assert all(c.endswith("mean Dice 1.000") for i, c in shown.items() if i != blanked)


def test_the_threshold_panel_marks_the_choice_and_notes_a_different_threshold_used(work) -> None:
    folder, _, _ = work
    chosen = json.loads((folder / "outputs" / "stage3" / "threshold.json").read_text())
    found = panel(build_report(Project.load(), folder), "threshold")
    assert stats(found)["chosen threshold"] == f"{chosen['threshold']:.3f}"
    assert stats(found)["rule"] == "f1"
    assert "where F1 is highest" in found.intro
    assert found.missing == ("Stage 5 last ran with threshold 0.5, not this choice.",)
    assert any(isinstance(b, Figure) and b.mime == "image/png" for b in found.blocks)


def test_per_class_gates_are_tabled_and_named_in_the_gate_panel(work) -> None:
    folder, _, _ = work
    path = folder / "outputs" / "stage3" / "threshold.json"
    chosen = json.loads(path.read_text())
    gates = {str(c): {"threshold": 0.4 + c / 10, "rule": "accuracy", "accuracy": 0.9, "recall": 0.8,
                      "precision": 0.7, "f1": 0.75} for c in CLASS_IDS}
    chosen.update(images=40, class_rule="accuracy", classes=gates, class_thresholds=[0.5, 0.6, 0.7, 0.8])
    chosen.update(swept_threshold=0.42, threshold=1.0, image_gate=False)
    path.write_text(json.dumps(chosen))
    state = json.loads((folder / "state.json").read_text())
    state["stages"]["5"]["params"]["class_thresholds"] = [0.5, 0.6, 0.7, 0.9]
    (folder / "state.json").write_text(json.dumps(state))
    report = build_report(Project.load(), folder)
    found = panel(report, "threshold")
    table = next(b for b in found.blocks if isinstance(b, Table))
    assert table.columns == ("class", "gate", "accuracy", "recall", "precision", "f1")
    assert [row[:2] for row in table.rows] == [("class 1", "0.500"), ("class 2", "0.600"), ("class 3", "0.700"), ("class 4", "0.800")]
    assert "the 40 train images stage 1 held out of training" in found.intro
    notes = [b.text for b in found.blocks if type(b).__name__ == "Note"]
    assert "The image gate is off (image_gate = false): stage 5 blanks no whole image; the sweep chose 0.420." in notes
    assert "Stage 5 last ran with class_thresholds [0.5, 0.6, 0.7, 0.9], not these gates." in found.missing
    gate = panel(report, "submission")
    assert "With per-class gates [0.5, 0.6, 0.7, 0.9] (classes 1 to 4)" in gate.intro
    state["stages"]["5"]["params"]["class_thresholds"] = [0.5, 0.6, 0.7, 0.8]  # the same gates, chained
    (folder / "state.json").write_text(json.dumps(state))
    assert not any("class_thresholds" in note for note in panel(build_report(Project.load(), folder), "threshold").missing)


def test_the_whole_page_stays_small(work) -> None:
    folder, _, _ = work
    page = write_report(Project.load(), folder)
    assert page.stat().st_size < 2_000_000


# -- outputs that are not what the stages write ----------------------------------------------
def test_bad_outputs_become_notes_not_tracebacks(tmp_path: Path) -> None:
    """The fake backend's stage outputs are not real Severstal files: each of the
    pipeline's panels says what it lacks, and the tool's panels are all there."""
    clock = FakeClock()
    run_chain(tmp_path, clock, FakeBackend(clock, durations=DURATIONS))
    (tmp_path / "outputs" / "stage4" / "submission.csv").unlink()
    report = build_report(Project.load(), tmp_path)
    keys = [p.key for p in report.panels]
    assert keys == ["changes", "threshold", "submission", "overlays", "parameters"]
    assert panel(report, "threshold").missing == (
        f"stage 3's sweep: {tmp_path / 'outputs' / 'stage3' / 'threshold_sweep.csv'} is missing",
    )
    assert "cannot be drawn" in panel(report, "submission").missing[0]
    assert "no test images here" in panel(report, "overlays").missing[0]
    assert any("dataset stage4 is declared with files the outputs lack: stage4/submission.csv" in p for p in report.problems)
    write_report(Project.load(), tmp_path)
