"""Stage 4 profiles compared on the competition metric: `full` (2019) against `best`.

Run from the repository root:

    python benchmarks/bench_profiles.py                         # defaults below, on cpu
    python benchmarks/bench_profiles.py --n-train 64 --n-test 48 --epochs 14 \\
        --variant "tuned:tune_postprocess=true"

Synthetic competition data (`synth.generate`, full 256x1600 images, defect sizes and
class mix as in the real train set) is written once to a temporary folder; every
profile trains stage 4 on the same images at the same small training size, batch and
epoch budget (`--height`, `--width`, `--epochs`; no pretrained weights), predicts the
same unseen test images, and is scored with the competition metric (mean Dice over
(image, class) pairs, 1 for empty-empty) against the hidden truth. The all-empty
submission's score is printed for reference.

A profile is the defaults of `Params` (the 2019 `full` values) plus the profile's table
in kernel-metadata/stage4.toml; the bench's size settings then replace its sizes, and a
`crop_width` is scaled by width/1600 (rounded to a multiple of 32). `--variant
"name:key=value;key=value"` adds a profile of the defaults plus those values, to try one
lever at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from kernelgen.runtime import Layout  # noqa: E402
from kernelgen.spec.params import coerce_value, parse_text, read_param_fields  # noqa: E402
from stages.lib.metrics import mean_dice_rle  # noqa: E402
from stages.lib.submission import read_submission  # noqa: E402
from stages.lib.traincsv import read_train_csv  # noqa: E402
from stages.stage4_segmentation import SIZE_MULTIPLE, Params, run  # noqa: E402
from stages.synth import generate  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOML = HERE.parent / "kernel-metadata" / "stage4.toml"
FIELDS = {f.name: f for f in read_param_fields(HERE.parent / "stages" / "stage4_segmentation.py", 4)}


def profile(name: str) -> dict:
    """The profile's values as `Params` takes them (TOML arrays become tuples)."""
    if name == "full":
        return {}
    with TOML.open("rb") as handle:
        table = tomllib.load(handle)["profiles"][name]
    return {key: coerce_value(value, FIELDS[key].type, name=key, stage=4) for key, value in table.items()}


def parse_variant(text: str) -> tuple[str, dict]:
    """`name:key=value;key=value`, each value read as `--set` reads it (lists as `[2, 2, 1, 1.5]`)."""
    name, _, body = text.partition(":")
    values: dict = {}
    for item in filter(None, (part.strip() for part in body.split(";"))):
        key, _, raw = item.partition("=")
        field = FIELDS[key.strip()]
        values[field.name] = parse_text(raw.strip(), field.type, name=field.name, stage=4)
    return name, values


def add_budget_arguments(parser: argparse.ArgumentParser, threads: int) -> None:
    """The data and the training budget every stage 4 run of a benchmark shares."""
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-test", type=int, default=48)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--threads", type=int, default=threads)


def budget(args: argparse.Namespace) -> dict:
    """The `Params` values of that budget: size, batch, epochs, a fixed learning rate
    schedule, no pretrained weights, CPU settings."""
    return {
        "train_height": args.height, "train_width": args.width, "batch_size": 4,
        "accumulate_to": 4, "epochs": args.epochs, "lr": 1e-3, "lr_patience": 100,
        "pretrained": False, "workers": 0, "amp": False,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_arguments(parser, threads=1)
    parser.add_argument("--profiles", default="full,best")
    parser.add_argument("--variant", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bench = budget(args)
    runs = [(name, profile(name)) for name in args.profiles.split(",") if name]
    runs += [parse_variant(text) for text in args.variant]

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = generate(base / "data", n_train=args.n_train, n_test=args.n_test, seed=args.seed)
        truth = read_train_csv(data.test_truth)
        print(
            f"synthetic data: {args.n_train} train / {args.n_test} test images (seed "
            f"{args.seed}); training at {args.height}x{args.width}, {args.epochs} epochs, "
            f"cpu threads {args.threads}"
        )
        empty = None
        for name, values in runs:
            values = dict(values)
            if values.get("crop_width"):
                crop = round(values["crop_width"] * args.width / 1600 / SIZE_MULTIPLE)
                values["crop_width"] = max(1, crop) * SIZE_MULTIPLE
            params = replace(Params(), **{**values, **bench})
            working = base / f"working-{name}"
            start = time.perf_counter()
            log = io.StringIO()
            with contextlib.redirect_stdout(log):
                run(params, Layout(data.root, working))
            seconds = time.perf_counter() - start
            sub = read_submission(working / "submission.csv").frame
            if empty is None:
                empty = mean_dice_rle(sub.assign(EncodedPixels=""), truth)
                print(f"{'all-empty':>12}: {empty:.4f}")
            score = mean_dice_rle(sub, truth)
            post = working / "postprocess.json"
            extra = f"  postprocess.json {post.read_text().strip()}" if post.exists() else ""
            shown = ", ".join(f"{k}={v}" for k, v in values.items()) or "defaults (2019 full)"
            print(f"{name:>12}: {score:.4f}  ({seconds:.0f} s; {shown}){extra}".replace("\n", " "))


if __name__ == "__main__":
    main()
