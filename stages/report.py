"""The Severstal pipeline's own panels for `kernelgen report`.

Declared in `kernel-metadata/pipeline.toml` as `[report] panels = "stages.report:panels"`.
They read the chain's downloaded outputs: stage 3's sweep and choice, the raw (stage 4)
and final (stage 5) submissions, stage 1's test scores, and, where the competition
data is here, the test images and (for synthetic data) their true masks. Each panel
says what it lacks instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from PIL import Image

from kernelgen.report.hooks import ReportContext
from kernelgen.report.panel import Block, Note, Panel, Stats, Table
from kernelgen.report.plotting import figure_block, new_figure
from kernelgen.runtime import InputError
from stages.lib.metrics import batch_dice, mean_dice_rle
from stages.lib.scores import read_scores
from stages.lib.severstal import CLASS_IDS, COMPETITION
from stages.lib.submission import read_submission
from stages.lib.traincsv import image_masks, read_train_csv

CLASSIFIER, THRESHOLD, SEGMENTATION, SUBMISSION = 1, 3, 4, 5
CLASS_COLOURS = {1: "#ffd60a", 2: "#00b4d8", 3: "#ff006e", 4: "#70e000"}
COLOUR_NAMES = {1: "yellow", 2: "blue", 3: "pink", 4: "green"}
OVERLAY_IMAGES = 6
METRICS = ("accuracy", "recall", "precision", "f1")
RULES = {
    "consistency": "where accuracy, recall, precision and F1 agree most closely "
    "(the smallest |acc-rec| + |rec-prec| + |prec-f1|)",
    "f1": "where F1 is highest",
    "accuracy": "where accuracy is highest",
    "recall": "the lowest threshold that still finds the chosen share of defective images",
}


class Missing(Exception):
    """A file a panel needs is not in the work folder."""


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise Missing(f"{what}: {path} is missing")
    return path


def _gates(value: object) -> object:
    """Per-class gates as a list of floats, so a chained list and stage 3's compare equal;
    an empty or missing value is [], anything else is kept as it is."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return value if value else []


def _guarded(key: str, title: str, build: Callable[[ReportContext], Panel], context: ReportContext) -> Panel:
    try:
        return build(context)
    except Missing as exc:
        return Panel(key, title, (Note(str(exc), "missing"),))
    except (InputError, OSError, ValueError, KeyError) as exc:
        return Panel(key, title, (Note(f"cannot be drawn: {exc}", "missing"),))


def panels(context: ReportContext) -> list[Panel]:
    return [
        _guarded("threshold", "Threshold sweep", threshold_panel, context),
        _guarded("submission", "Submission and the classifier gate", submission_panel, context),
        _guarded("overlays", "Predicted masks on test images", overlays_panel, context),
    ]


# -- stage 3 -----------------------------------------------------------------------------
def threshold_panel(context: ReportContext) -> Panel:
    folder = context.outputs(THRESHOLD)
    sweep = pd.read_csv(_need(folder / "threshold_sweep.csv", "stage 3's sweep"))
    chosen = json.loads(_need(folder / "threshold.json", "stage 3's choice").read_text(encoding="utf-8"))
    threshold, rule = float(chosen["threshold"]), str(chosen.get("rule", ""))
    used = context.params(SUBMISSION).get("threshold")
    blocks: list[Block] = [
        Stats.of(
            [("chosen threshold", f"{threshold:.3f}"), ("rule", rule or "unknown")]
            + [(m, f"{float(chosen[m]):.3f}") for m in METRICS if m in chosen]
        )
    ]
    fig = new_figure(10, 3.6)
    if fig is not None:
        ax = fig.add_subplot()
        for metric in METRICS:
            ax.plot(sweep["threshold"], sweep[metric], label=metric)
            row = sweep.iloc[(sweep["threshold"] - threshold).abs().argmin()]
            ax.plot([threshold], [row[metric]], "o", color=ax.lines[-1].get_color())
        ax.axvline(threshold, color="black", linestyle="--", label=f"chosen {threshold:.3f}")
        ax.set_xlabel("allMissing threshold (an image is predicted defective below it)")
        ax.set_ylabel("over held-out train images")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        blocks.append(
            figure_block(
                fig,
                alt=f"Threshold sweep: accuracy, recall, precision and F1 against the threshold; "
                f"{threshold:.3f} chosen by rule {rule}",
            )
        )
    if used is not None and abs(float(used) - threshold) > 1e-9:
        blocks.append(Note(f"Stage 5 last ran with threshold {used}, not this choice.", "missing"))
    if chosen.get("image_gate") is False:
        swept = float(chosen.get("swept_threshold", threshold))
        blocks.append(
            Note(f"The image gate is off (image_gate = false): stage 5 blanks no whole image; the sweep chose {swept:.3f}.")
        )
    classes = chosen.get("classes")
    if isinstance(classes, dict) and classes:
        class_rule = str(chosen.get("class_rule", ""))
        rows = [
            (f"class {c}", *(f"{float(classes[str(c)][m]):.3f}" for m in ("threshold", *METRICS)))
            for c in CLASS_IDS
            if str(c) in classes
        ]
        blocks.append(
            Table.of(
                ("class", "gate", *METRICS),
                rows,
                caption=f"Per-class gates, each chosen by rule {class_rule or 'unknown'}: "
                "a class is blanked where its missing score is above its gate.",
            )
        )
        used_gates = context.params(SUBMISSION).get("class_thresholds")
        if used_gates is not None and _gates(used_gates) != _gates(chosen.get("class_thresholds")):
            blocks.append(Note(f"Stage 5 last ran with class_thresholds {_gates(used_gates)}, not these gates.", "missing"))
    why = RULES.get(rule, f"by rule {rule!r}")
    images = chosen.get("images")
    held_out = f"the {images} train images stage 1 held out of training" if images else "held-out train images"
    return Panel(
        "threshold",
        "Threshold sweep",
        tuple(blocks),
        f"Stage 3 tried every threshold from 0.001 to 0.999 on the classifier scores of "
        f"{held_out} and chose {threshold:.3f}, {why}.",
    )


# -- stages 4 and 5 ----------------------------------------------------------------------
def _filled(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a mask."""
    return frame[frame["EncodedPixels"].astype(str).str.strip() != ""]


def _gate_threshold(context: ReportContext) -> float:
    used = context.params(SUBMISSION).get("threshold")
    if used is not None:
        return float(used)
    chosen = _need(context.outputs(THRESHOLD) / "threshold.json", "stage 3's choice")
    return float(json.loads(chosen.read_text(encoding="utf-8"))["threshold"])


def submission_panel(context: ReportContext) -> Panel:
    final = read_submission(_need(context.outputs(SUBMISSION) / "submission.csv", "the final submission"))
    raw = read_submission(_need(context.outputs(SEGMENTATION) / "submission.csv", "stage 4's submission"))
    scores = read_scores(
        _need(context.outputs(CLASSIFIER) / "test_missing_count.csv", "stage 1's test scores"),
        expected_ids=final.frame["ImageId"],
    )
    threshold = _gate_threshold(context)
    images = final.frame["ImageId"].unique()
    blanked = int((scores.reindex(images) > threshold).sum())
    before, after = _filled(raw.frame), _filled(final.frame)
    removed = len(before.merge(final.frame[final.frame["EncodedPixels"] == ""], on=["ImageId", "ClassId"]))
    counts_before = before["ClassId"].value_counts().reindex(CLASS_IDS, fill_value=0)
    counts_after = after["ClassId"].value_counts().reindex(CLASS_IDS, fill_value=0)
    blocks: list[Block] = [
        Stats.of(
            [
                ("test images", str(len(images))),
                ("images with a defect", str(after["ImageId"].nunique())),
                ("blanked by the gate", f"{blanked} of {len(images)}"),
                ("masks the gate removed", str(removed)),
            ]
        )
    ]
    fig = new_figure(10, 3.2)
    if fig is not None:
        bars, hist = fig.subplots(1, 2, width_ratios=(1, 1.3))
        x = np.arange(len(CLASS_IDS))
        bars.bar(x - 0.2, counts_before.to_numpy(), 0.4, label="stage 4 (before the gate)", color="#9aa5b1")
        bars.bar(x + 0.2, counts_after.to_numpy(), 0.4, label="final (stage 5)", color=[CLASS_COLOURS[c] for c in CLASS_IDS], edgecolor="#333333")
        bars.set_xticks(x, [f"class {c}" for c in CLASS_IDS])
        bars.set_ylabel("predicted defects (masks)")
        bars.legend(fontsize=8)
        bars.set_title("Predicted defects per class", fontsize=10)
        hist.hist(scores.reindex(images).to_numpy(), bins=np.linspace(0, 1, 41), color="#7fb2ff", edgecolor="#333333")
        hist.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
        hist.set_xlabel("test image allMissing score (blanked above the threshold)")
        hist.set_ylabel("test images")
        hist.set_title("Classifier gate", fontsize=10)
        hist.legend(fontsize=8)
        blocks.append(
            figure_block(
                fig,
                alt=f"Predicted defects per class before and after the gate; {blanked} of {len(images)} "
                f"test images blanked at threshold {threshold:.3f}",
            )
        )
    rows = [
        (f"class {c}", int(counts_before[c]), int(counts_after[c]), int(after[after["ClassId"] == c]["ImageId"].nunique()))
        for c in CLASS_IDS
    ]
    blocks.append(Table.of(("class", "masks before the gate", "masks in the final submission", "images"), rows))
    gates = _gates(context.params(SUBMISSION).get("class_thresholds"))
    per_class = (
        f" With per-class gates {gates} (classes 1 to 4) it also blanks each class whose own score is above its gate."
        if gates
        else ""
    )
    return Panel(
        "submission",
        "Submission and the classifier gate",
        tuple(blocks),
        f"Stage 5 blanks every class of each test image whose classifier score is above {threshold:.3f}.{per_class}",
    )


# -- overlays ----------------------------------------------------------------------------
def _truth(competition: Path) -> pd.DataFrame | None:
    """Synthetic data keeps the test images' true masks beside the competition folder."""
    path = competition.parent.parent / "truth" / "test_truth.csv"
    return read_train_csv(path) if path.is_file() else None


def _pick(final: pd.DataFrame, truth: pd.DataFrame | None) -> list[str]:
    """A handful of images, those with a predicted defect first, then those with a true one."""
    ids = sorted(final["ImageId"].unique())
    predicted = set(_filled(final)["ImageId"])
    actual = set(truth["ImageId"]) if truth is not None else set()
    return sorted(ids, key=lambda i: (i not in predicted, i not in actual, i))[:OVERLAY_IMAGES]


def _overlay(ax: Axes, gray: np.ndarray, masks: np.ndarray, title: str) -> None:
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    layer = np.zeros((*gray.shape, 4))
    for index, class_id in enumerate(CLASS_IDS):
        mask = masks[index].astype(bool)
        if mask.any():
            layer[mask] = (*to_rgb(CLASS_COLOURS[class_id]), 0.45)
            ax.contour(mask, levels=[0.5], colors=[CLASS_COLOURS[class_id]], linewidths=1.0)
    ax.imshow(layer, interpolation="nearest")
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_axis_off()


def _classes(masks: np.ndarray) -> str:
    found = [f"{c} ({int(masks[i].sum()):,} px)" for i, c in enumerate(CLASS_IDS) if masks[i].any()]
    return ", ".join(found) if found else "none"


def overlays_panel(context: ReportContext) -> Panel:
    key, title = "overlays", "Predicted masks on test images"
    competition = context.competition_dirs.get(COMPETITION)
    if competition is None or not (competition / "test_images").is_dir():
        raise Missing("no test images here: the competition data is not in this work folder or the config's data folder")
    final = read_submission(_need(context.outputs(SUBMISSION) / "submission.csv", "the final submission")).frame
    truth = _truth(competition)
    blocks: list[Block] = []
    if truth is not None:
        stats = [("final score (mean Dice)", f"{mean_dice_rle(final, truth):.4f}")]
        raw_path = context.outputs(SEGMENTATION) / "submission.csv"
        if raw_path.is_file():
            stats.append(("stage 4 before the gate", f"{mean_dice_rle(read_submission(raw_path).frame, truth):.4f}"))
        blocks.append(Stats.of(stats))
    legend = ", ".join(f"class {c} {name}" for c, name in COLOUR_NAMES.items())
    for image_id in _pick(final, truth):
        path = competition / "test_images" / image_id
        if not path.is_file():
            blocks.append(Note(f"{image_id}: image missing from {path.parent}", "missing"))
            continue
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"))
        shape = gray.shape
        predicted = image_masks(final, image_id, shape)
        rows = 2 if truth is not None else 1
        fig = new_figure(12, 2.05 * rows + 0.2)
        if fig is None:
            blocks.append(Note("matplotlib is not installed: no overlays drawn.", "missing"))
            break
        axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
        _overlay(axes[0], gray, predicted, f"{image_id}: predicted {_classes(predicted)}")
        caption = f"{image_id}: predicted classes {_classes(predicted)}"
        if truth is not None:
            actual = image_masks(truth, image_id, shape)
            score = float(batch_dice(predicted[None], actual[None]).mean())
            _overlay(axes[1], gray, actual, f"truth {_classes(actual)}; mean Dice over the four classes {score:.3f}")
            caption += f"; true classes {_classes(actual)}; mean Dice {score:.3f}"
        blocks.append(figure_block(fig, alt=caption, caption=caption, fmt="jpeg", dpi=100, quality=80))
    intro = f"Masks of the final submission drawn on test images, one colour per class ({legend})"
    intro += ", with the synthetic data's true masks below each." if truth is not None else "; no true masks here."
    return Panel(key, title, tuple(blocks), intro)
