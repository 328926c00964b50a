"""Stage 3 against a hand-computed sweep on held-out images, its per-class gates, and its
refusals of bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kernelgen.runtime import InputError, Layout
from stages.lib.severstal import COMPETITION
from stages.stage3_threshold import Params, choose_threshold, run, threshold_sweep
from tests.stage_params import (
    assert_renderer_checks,
    params_alone,
    smoke_profile,
)

# Params as the kernel builds it (module imported) and as rendering does (module not run).
PARAMS_CLASSES = [
    pytest.param(Params, id="imported"),
    pytest.param(params_alone("stages.stage3_threshold"), id="alone"),
]

# Eight train images. Positives (with defects): a (two classes, counted once), b, d, g.
SCORES = {
    "a.jpg": "0.10",
    "b.jpg": "0.30",
    "c.jpg": "0.50",
    "d.jpg": "0.60",
    "e.jpg": "0.80",
    "f.jpg": "0.90",
    "g.jpg": "0.95",
    "h.jpg": "0.99",
}
DEFECT_ROWS = [
    ("a.jpg", 1, "1 5"),
    ("a.jpg", 3, "100 20"),
    ("b.jpg", 3, "7 3"),
    ("d.jpg", 4, "409590 11"),
    ("g.jpg", 2, "1000 1"),
    ("x.jpg", 3, "50 5"),
]
# Images stage 1 trained on (validation 0). Swept, they would change every row of the
# table below (x, defective, at 0.02; y, clean, at 0.05), so they must not be.
TRAINED = {"x.jpg": "0.02", "y.jpg": "0.05"}

# Worked out by hand: an image is predicted defective when score < threshold, so each
# score s enters the predicted set at the first threshold above it (0.10 at 0.101).
# P = 4, N = 4. Columns: first k, last k (threshold = k/1000), tp, fp, tn, fn,
# accuracy, recall, precision, f1 (= 2tp / (2tp + fp + fn)); 0/0 counts as 0.
EXPECTED = [
    (1, 100, 0, 0, 4, 4, 4 / 8, 0.0, 0.0, 0.0),  # precision 0/0, f1 0/4
    (101, 300, 1, 0, 4, 3, 5 / 8, 1 / 4, 1.0, 2 / 5),  # a
    (301, 500, 2, 0, 4, 2, 6 / 8, 2 / 4, 1.0, 4 / 6),  # a, b
    (501, 600, 2, 1, 3, 2, 5 / 8, 2 / 4, 2 / 3, 4 / 7),  # + c
    (601, 800, 3, 1, 3, 1, 6 / 8, 3 / 4, 3 / 4, 6 / 8),  # + d: all four metrics agree
    (801, 900, 3, 2, 2, 1, 5 / 8, 3 / 4, 3 / 5, 6 / 9),  # + e
    (901, 950, 3, 3, 1, 1, 4 / 8, 3 / 4, 3 / 6, 6 / 10),  # + f
    (951, 990, 4, 3, 1, 0, 5 / 8, 4 / 4, 4 / 7, 8 / 11),  # + g
    (991, 999, 4, 4, 0, 0, 4 / 8, 4 / 4, 4 / 8, 8 / 12),  # + h
]


def expected_table() -> pd.DataFrame:
    rows = []
    for first, last, *values in EXPECTED:
        for k in range(first, last + 1):
            rows.append((k / 1000, *values))
    return pd.DataFrame(
        rows,
        columns=["threshold", "tp", "fp", "tn", "fn", "accuracy", "recall", "precision", "f1"],
    )


def write_scores(path: Path, scores: dict[str, str], trained: dict[str, str] | None = None) -> None:
    """Held-out `scores` (validation 1), then `trained` ones (validation 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{image},{score},1" for image, score in scores.items()]
    rows += [f"{image},{score},0" for image, score in (TRAINED if trained is None else trained).items()]
    path.write_text("\n".join(["ImageId,allMissing,validation", *rows]) + "\n")


def write_train(path: Path, rows: list[tuple[str, int, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["ImageId,ClassId,EncodedPixels"] + [f"{i},{c},{r}" for i, c, r in rows]
    path.write_text("\n".join(lines) + "\n")


def make_root(tmp_path: Path, scores=None, defects=None, trained=None) -> Path:
    root = tmp_path / "kaggle"
    write_scores(root / "input" / "stage2" / "train_missing_count.csv", SCORES if scores is None else scores, trained)
    write_train(
        root / "input" / COMPETITION / "train.csv", DEFECT_ROWS if defects is None else defects
    )
    return root


def outputs(root: Path) -> list[str]:
    working = root / "working"
    return sorted(p.name for p in working.iterdir()) if working.is_dir() else []


def test_sweep_matches_hand_computed_table(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    run(Params(), Layout(root))
    text = (root / "working" / "threshold_sweep.csv").read_text()
    header, first, *_ = text.splitlines()
    assert header == "threshold,tp,fp,tn,fn,accuracy,recall,precision,f1"
    assert first.startswith("0.001,0,0,4,4,0.5,0.0,0.0,0.0")
    assert text.splitlines()[100].startswith("0.100,0,0,4,4,")  # 0.10 is not below 0.100
    assert text.splitlines()[101].startswith("0.101,1,0,4,3,")
    table = pd.read_csv(root / "working" / "threshold_sweep.csv")
    pd.testing.assert_frame_equal(table, expected_table(), check_exact=False, rtol=1e-12)


def test_consistency_rule_picks_where_metrics_agree(tmp_path: Path, capsys) -> None:
    root = make_root(tmp_path)
    run(Params(), Layout(root))
    chosen = json.loads((root / "working" / "threshold.json").read_text())
    assert chosen == {
        "threshold": 0.601,
        "rule": "consistency",
        "accuracy": 0.75,
        "recall": 0.75,
        "precision": 0.75,
        "f1": 0.75,
        "images": 8,
        "class_thresholds": [],
    }
    assert json.loads((root / "working" / "metrics.json").read_text()) == {"f1": 0.75, "threshold": 0.601}
    out = capsys.readouterr().out
    assert "8 held-out train images, 4 with defects" in out and "threshold 0.601" in out
    assert {"threshold_sweep.png", "threshold_counts.png"} <= set(outputs(root))
    assert (root / "working" / "threshold_sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("rule", "threshold", "metric", "value"),
    [
        ("accuracy", 0.301, "accuracy", 0.75),  # 0.75 also at 0.601..0.800: lowest wins
        ("f1", 0.601, "f1", 0.75),
    ],
)
def test_other_rules_and_ties(
    tmp_path: Path, rule: str, threshold: float, metric: str, value: float
) -> None:
    root = make_root(tmp_path)
    run(Params(rule=rule), Layout(root))
    chosen = json.loads((root / "working" / "threshold.json").read_text())
    assert chosen["rule"] == rule
    assert chosen["threshold"] == threshold
    assert chosen[metric] == pytest.approx(value)


def test_no_defects_gives_zero_not_nan(tmp_path: Path) -> None:
    root = make_root(tmp_path, scores={"x.jpg": "0.2", "y.jpg": "0.7"}, defects=[], trained={})
    run(Params(), Layout(root))
    table = pd.read_csv(root / "working" / "threshold_sweep.csv")
    assert not table.isna().any().any()
    low = table.iloc[0]  # nothing predicted: recall 0/0, precision 0/0, f1 0/0
    assert (low["tp"], low["fp"], low["tn"], low["fn"]) == (0, 0, 2, 0)
    assert (low["accuracy"], low["recall"], low["precision"], low["f1"]) == (1.0, 0.0, 0.0, 0.0)
    assert (table["recall"] == 0).all() and (table["f1"] == 0).all()


def test_pure_sweep_counts_strictly_below() -> None:
    sweep = threshold_sweep(np.array([0.5, 0.5, 0.25]), np.array([True, False, True]))
    at = sweep.set_index("threshold")
    assert tuple(at.loc[0.5, ["tp", "fp", "tn", "fn"]]) == (1, 0, 1, 1)
    assert tuple(at.loc[0.501, ["tp", "fp", "tn", "fn"]]) == (2, 1, 0, 0)
    assert len(sweep) == 999 and sweep["threshold"].iloc[-1] == 0.999
    assert choose_threshold(sweep, "f1")["threshold"] == 0.501


def test_ties_can_go_to_the_middle_of_the_first_best_range() -> None:
    # Perfectly separated at any threshold in (0.2, 0.8]: accuracy 1 from 0.201 to 0.800.
    sweep = threshold_sweep(np.array([0.1, 0.2, 0.8, 0.9]), np.array([True, True, False, False]))
    assert choose_threshold(sweep, "accuracy")["threshold"] == 0.201
    assert choose_threshold(sweep, "accuracy", ties="middle")["threshold"] == 0.5
    with pytest.raises(ValueError, match="ties must be lowest or middle"):
        choose_threshold(sweep, "accuracy", ties="highest")


# ---------------------------------------------------------------------------------------
# Held-out images only, and per-class gates

CLASS_HEADER = "ImageId,allMissing,missing1,missing2,missing3,missing4,validation"


def write_class_scores(root: Path, rows: list[tuple[str, tuple[float, ...], int]]) -> None:
    """Per-class score rows (image, four missing<c> scores, validation flag)."""
    lines = [CLASS_HEADER]
    for image, missing, flag in rows:
        lines.append(",".join([image, f"{np.prod(missing):.6f}", *(f"{m}" for m in missing), str(flag)]))
    (root / "input" / "stage2" / "train_missing_count.csv").write_text("\n".join(lines) + "\n")


def test_images_stage1_trained_on_are_not_swept(tmp_path: Path) -> None:
    # Put the trained images where they would dominate every row: the table must not move.
    root = make_root(tmp_path, trained={"x.jpg": "0.99", "y.jpg": "0.001"})
    run(Params(), Layout(root))
    table = pd.read_csv(root / "working" / "threshold_sweep.csv")
    pd.testing.assert_frame_equal(table, expected_table(), check_exact=False, rtol=1e-12)


def test_per_class_thresholds_recover_planted_separations(tmp_path: Path, capsys) -> None:
    """Class 3 images score missing3 <= 0.3 and the rest >= 0.7; class 1 images <= 0.1
    and the rest >= 0.5. Each gate lands mid-way in its class's perfect range."""
    root = make_root(tmp_path)
    rng = np.random.default_rng(0)
    rows = []
    for n in range(40):
        name = f"i{n:02d}.jpg"
        has1, has3 = n % 5 == 0, n % 2 == 0
        m1 = rng.uniform(0.0, 0.1) if has1 else rng.uniform(0.5, 1.0)
        m3 = rng.uniform(0.0, 0.3) if has3 else rng.uniform(0.7, 1.0)
        rows.append((name, (round(m1, 4), 0.99, round(m3, 4), 0.95), 1))
    # A trained image whose class-3 score contradicts its label: it must not count.
    rows.append(("t.jpg", (0.9, 0.99, 0.99, 0.95), 0))
    write_class_scores(root, rows)
    defects = [(f"i{n:02d}.jpg", 1, "1 5") for n in range(40) if n % 5 == 0]
    defects += [(f"i{n:02d}.jpg", 3, "10 5") for n in range(40) if n % 2 == 0] + [("t.jpg", 3, "10 5")]
    (root / "input" / COMPETITION / "train.csv").write_text(
        "ImageId,ClassId,EncodedPixels\n" + "".join(f"{i},{c},{r}\n" for i, c, r in defects)
    )
    run(Params(class_rule="accuracy"), Layout(root))
    chosen = json.loads((root / "working" / "threshold.json").read_text())
    held = [r for r in rows if r[2] == 1]
    top1 = max(r[1][0] for r in held if int(r[0][1:3]) % 5 == 0)
    low1 = min(r[1][0] for r in held if int(r[0][1:3]) % 5 != 0)
    top3 = max(r[1][2] for r in held if int(r[0][1:3]) % 2 == 0)
    low3 = min(r[1][2] for r in held if int(r[0][1:3]) % 2 != 0)
    gate1, gate3 = chosen["classes"]["1"], chosen["classes"]["3"]
    assert gate1["accuracy"] == gate3["accuracy"] == 1.0
    assert top1 < gate1["threshold"] <= low1 and top3 < gate3["threshold"] <= low3
    # The middle of the perfect range, not its edge.
    assert abs(gate3["threshold"] - (top3 + low3) / 2) <= 0.002
    assert abs(gate1["threshold"] - (top1 + low1) / 2) <= 0.002
    assert chosen["class_rule"] == "accuracy" and chosen["images"] == 40
    assert chosen["class_thresholds"] == [chosen["classes"][str(c)]["threshold"] for c in (1, 2, 3, 4)]
    assert all(type(v) is float for v in chosen["class_thresholds"])
    table = pd.read_csv(root / "working" / "class_threshold_sweep.csv")
    assert list(table.columns[:2]) == ["class", "threshold"] and len(table) == 4 * 999
    assert (root / "working" / "class_threshold_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert f"per-class gates (accuracy): {chosen['class_thresholds']}" in capsys.readouterr().out


def test_recall_rule_blanks_all_it_can_while_keeping_the_recall() -> None:
    # Ten positives at 0.1, 0.2, ..., 1.0 (clipped to 0.99); negatives all at 0.95.
    positives = np.minimum(np.arange(1, 11) / 10, 0.99)
    scores = np.concatenate([positives, np.full(5, 0.95)])
    sweep = threshold_sweep(scores, np.arange(15) < 10)
    # Recall 0.9 needs nine positives below the threshold: 0.9 is below 0.901.
    pick = choose_threshold(sweep, "recall", min_recall=0.9)
    assert (pick["threshold"], pick["recall"], pick["min_recall"]) == (0.901, 0.9, 0.9)
    assert choose_threshold(sweep, "recall", min_recall=0.5)["threshold"] == 0.501
    assert choose_threshold(sweep, "recall", min_recall=1.0)["threshold"] == 0.991
    # No threshold reaches the recall (no positive at all): the highest, which blanks least.
    nothing = threshold_sweep(np.array([0.2, 0.7]), np.array([False, False]))
    assert choose_threshold(nothing, "recall")["threshold"] == 0.999


def test_class_gates_default_to_the_recall_rule(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    rows = [(f"i{n}.jpg", (0.9, 0.9, n / 20, 0.9), 1) for n in range(1, 21)]
    write_class_scores(root, rows)
    # Class 3 on the ten lowest-scoring images: recall 0.95 needs all ten (0.5 < 0.501).
    defects = "".join(f"i{n}.jpg,3,1 5\n" for n in range(1, 11))
    (root / "input" / COMPETITION / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n" + defects)
    run(Params(), Layout(root))
    chosen = json.loads((root / "working" / "threshold.json").read_text())
    assert chosen["class_rule"] == "recall"
    assert chosen["classes"]["3"]["threshold"] == 0.501
    assert chosen["classes"]["3"]["min_recall"] == 0.95
    # No image has classes 1, 2 or 4: their gates blank as little as the sweep allows.
    assert chosen["class_thresholds"] == [0.999, 0.999, 0.501, 0.999]


def test_image_gate_off_writes_threshold_one_and_keeps_the_sweep(tmp_path: Path, capsys) -> None:
    root = make_root(tmp_path)
    run(Params(image_gate=False), Layout(root))
    chosen = json.loads((root / "working" / "threshold.json").read_text())
    assert (chosen["threshold"], chosen["swept_threshold"], chosen["image_gate"]) == (1.0, 0.601, False)
    table = pd.read_csv(root / "working" / "threshold_sweep.csv")
    pd.testing.assert_frame_equal(table, expected_table(), check_exact=False, rtol=1e-12)
    assert "threshold 0.601 (image gate off: threshold 1.000 written)" in capsys.readouterr().out


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize("value", [0.0, -0.5, 1.01])
def test_min_recall_outside_zero_and_one_is_refused(params: type, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^min_recall must be above 0 and at most 1, got {re.escape(str(value))}$"):
        params(min_recall=value)


def test_score_file_without_held_out_flags_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    path = root / "input" / "stage2" / "train_missing_count.csv"
    path.write_text("ImageId,allMissing\n" + "".join(f"{i},{s}\n" for i, s in {**SCORES, **TRAINED}.items()))
    with pytest.raises(InputError) as err:
        run(Params(), Layout(root))
    message = str(err.value)
    assert message.startswith(f"{path}: missing column(s) validation")
    assert "rerun stages 1 and 2" in message
    assert outputs(root) == []


def test_no_held_out_image_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path, scores={}, trained={**SCORES, **TRAINED})
    with pytest.raises(InputError, match=r"no image is marked as held out of stage 1's training"):
        run(Params(), Layout(root))
    assert outputs(root) == []


def test_held_out_flag_other_than_0_or_1_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    path = root / "input" / "stage2" / "train_missing_count.csv"
    path.write_text(path.read_text().replace("c.jpg,0.50,1", "c.jpg,0.50,2"))
    with pytest.raises(InputError, match=r"validation must be 0 or 1, got 2\.0 for image c\.jpg"):
        run(Params(), Layout(root))


# ---------------------------------------------------------------------------------------
# Parameters: checked when Params is built, at render time and in the kernel


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize("rule", ["best", "", "F1", "consistency "])
def test_unknown_rule_is_refused_naming_it(params: type, rule: str) -> None:
    message = f"rule must be one of consistency, f1, accuracy, recall, got {rule!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        params(rule=rule)


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize("rule", ["consistency", "f1", "accuracy", "recall"])
def test_every_rule_is_accepted(params: type, rule: str) -> None:
    assert params(rule=rule).rule == rule


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_unknown_class_rule_is_refused_naming_it(params: type) -> None:
    with pytest.raises(ValueError, match=r"^class_rule must be one of consistency, f1, accuracy, recall, got 'max'$"):
        params(class_rule="max")


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_defaults_and_smoke_profile_are_accepted(params: type) -> None:
    assert params() == params(**smoke_profile(3))
    assert params().rule == Params().rule == "consistency"


def test_renderer_checks_values_with_this_params() -> None:
    assert_renderer_checks("stages.stage3_threshold", 3, {"rule": "best"}, "rule must be one of consistency, f1, accuracy, recall, got 'best'")


def test_choose_threshold_refuses_an_unknown_rule() -> None:
    sweep = threshold_sweep(np.array([0.5]), np.array([True]))
    with pytest.raises(ValueError, match="rule must be one of consistency, f1, accuracy, recall"):
        choose_threshold(sweep, "median")


def test_missing_stage2_folder_names_places_tried(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "input" / "stage2" / "train_missing_count.csv").unlink()
    (root / "input" / "stage2").rmdir()
    with pytest.raises(InputError) as err:
        run(Params(), Layout(root))
    message = str(err.value)
    assert str(root / "input" / "stage2") in message
    assert str(root / "input" / "competitions" / "stage2") in message
    assert outputs(root) == []


def test_missing_score_file_names_path(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "input" / "stage2" / "train_missing_count.csv").unlink()
    with pytest.raises(InputError, match=r"train_missing_count\.csv"):
        run(Params(), Layout(root))


def test_missing_train_csv_names_path(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "input" / COMPETITION / "train.csv").unlink()
    with pytest.raises(InputError, match=r"severstal-steel-defect-detection.train\.csv"):
        run(Params(), Layout(root))
    assert outputs(root) == []


def test_score_file_missing_columns(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "input" / "stage2" / "train_missing_count.csv").write_text("ImageId,score\na.jpg,0.1\n")
    with pytest.raises(
        InputError, match=r"train_missing_count\.csv: missing column\(s\) allMissing"
    ):
        run(Params(), Layout(root))


def test_defect_image_without_score_is_refused(tmp_path: Path) -> None:
    scores = {k: v for k, v in SCORES.items() if k not in ("b.jpg", "g.jpg")}
    root = make_root(tmp_path, scores=scores)
    with pytest.raises(InputError) as err:
        run(Params(), Layout(root))
    message = str(err.value)
    assert "train_missing_count.csv" in message and "train.csv" in message
    assert "no score for 2 of 5 image(s)" in message
    assert "b.jpg" in message and "g.jpg" in message
    assert outputs(root) == []


def test_non_numeric_score_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path, scores={**SCORES, "c.jpg": "high"})
    with pytest.raises(InputError, match=r"line 4: allMissing 'high' for image c\.jpg"):
        run(Params(), Layout(root))


def test_empty_score_file_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path, scores={}, defects=[])
    (root / "input" / "stage2" / "train_missing_count.csv").write_text("ImageId,allMissing,validation\n")
    with pytest.raises(InputError, match="no images scored"):
        run(Params(), Layout(root))


def test_old_format_train_csv_gives_same_sweep(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    defects = {(image, cls): rle for image, cls, rle in DEFECT_ROWS}
    lines = ["ImageId_ClassId,EncodedPixels"] + [
        f"{image}_{cls},{defects.get((image, cls), '')}" for image in SCORES for cls in range(1, 5)
    ]
    (root / "input" / COMPETITION / "train.csv").write_text("\n".join(lines) + "\n")
    run(Params(), Layout(root))
    table = pd.read_csv(root / "working" / "threshold_sweep.csv")
    pd.testing.assert_frame_equal(table, expected_table(), check_exact=False, rtol=1e-12)


def test_malformed_train_csv_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path, defects=[("a.jpg", 1, "5 3 6 1")])
    with pytest.raises(InputError, match=r"train\.csv"):
        run(Params(), Layout(root))
    assert outputs(root) == []
