"""Stage 4 training throughput: the stage's loop against a loop written like the original.

Run from the repository root:

    python benchmarks/bench_stage4_train.py                 # cuda when present, else cpu
    python benchmarks/bench_stage4_train.py --device cpu --height 64 --width 384

Both loops train the same UNet-ResNet18 (no pretrained weights), same batch size and
accumulation, on the same synthetic 256x1600 JPEGs with masks from their train.csv,
written first by `kernelgen.synth` into a temporary folder: decoding, mask
building, the host-to-device copy and the training step are all timed.

- baseline, as the 2019 notebook ran: a Dataset that flips and normalises to float32
  on the CPU, `DataLoader` default settings (no workers, no pinned memory), fp32
  model in the default memory layout, `loss.item()` after every batch.
- stage 4: `make_loader` (workers, pinned memory, uint8 batches) and
  `train_epoch` (flip and normalisation on the device, float16 autocast with a
  gradient scaler and channels-last on CUDA, no per-batch host sync), the code the
  stage itself runs.

Each loop is warmed up, then the best of `--repeat` timed passes of `--steps` batches
is reported as images per second; the ratio is stage 4 over baseline, in this one run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _timing import best_of  # noqa: E402

from stages.lib.seg.device import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeviceSetup,
    grad_scaler,
    make_loader,
)
from stages.lib.seg.model import build_unet  # noqa: E402
from stages.lib.seg.train import train_epoch  # noqa: E402
from stages.lib.segdata import (  # noqa: E402
    SteelSegDataset,
    defects_by_image,
    list_images,
)
from stages.lib.traincsv import read_train_csv  # noqa: E402
from stages.stage4_segmentation import Params  # noqa: E402
from stages.synth import generate  # noqa: E402


class OriginalStyleDataset(Dataset):
    """Items as the original produced them: flipped and normalised float32 on the CPU."""

    def __init__(self, base: SteelSegDataset, seed: int) -> None:
        self.base = base
        self.rng = np.random.default_rng(seed)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, masks = self.base[index]
        if self.rng.random() < 0.5:
            image, masks = image.flip(-1), masks.flip(-1)
        image = (image.float() / 255.0 - self.mean) / self.std
        return image, masks.float()


def baseline_pass(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    accum_steps: int,
    steps: int,
) -> float:
    """`steps` batches of the original loop; returns the running loss like it did."""
    model.train()
    criterion = nn.BCEWithLogitsLoss()
    running = 0.0
    optimizer.zero_grad()
    for index, (images, masks) in enumerate(itertools.islice(loader, steps)):
        images, masks = images.to(device), masks.to(device)
        loss = criterion(model(images), masks) / accum_steps
        loss.backward()
        if (index + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
        running += loss.item()
    return running


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return call


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help=f"default {default_device}")
    parser.add_argument("--height", type=int, help="training height (cuda 256, cpu 64)")
    parser.add_argument("--width", type=int, help="training width (cuda 1600, cpu 384)")
    parser.add_argument("--batch-size", type=int, help="batch (cuda 16, cpu 4)")
    parser.add_argument("--accumulate-to", type=int, help="effective batch (default 2x batch)")
    parser.add_argument("--steps", type=int, help="timed batches per pass (cuda 40, cpu 6)")
    parser.add_argument("--warmup", type=int, help="untimed batches first (cuda 8, cpu 2)")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes, best kept")
    parser.add_argument("--images", type=int, default=64, help="distinct synthetic images")
    parser.add_argument(
        "--workers", type=int, default=Params().workers, help="stage loop's loader workers"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    for name, gpu, cpu in (
        ("height", 256, 64), ("width", 1600, 384), ("batch_size", 16, 4),
        ("steps", 40, 6), ("warmup", 8, 2),
    ):
        if getattr(args, name) is None:
            setattr(args, name, gpu if cuda else cpu)
    if args.accumulate_to is None:
        args.accumulate_to = 2 * args.batch_size
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = replace(
        Params(),
        train_height=args.height, train_width=args.width, batch_size=args.batch_size,
        accumulate_to=args.accumulate_to, pretrained=False, workers=args.workers,
    )
    setup = DeviceSetup.create(device, params.amp, params.batch_size, params.accumulate_to)
    items = (args.warmup + args.steps) * args.batch_size

    with tempfile.TemporaryDirectory(prefix="bench-stage4-") as tmp:
        start = time.perf_counter()
        data = generate(Path(tmp) / "data", n_train=args.images, n_test=1, seed=0)
        made = time.perf_counter() - start
        folder = data.competition_dir / "train_images"
        names = list_images(folder)
        defects = defects_by_image(
            read_train_csv(data.competition_dir / "train.csv"), names, Path("train.csv")
        )
        repeated = [names[i % len(names)] for i in range(items)]  # each pass decodes again
        dataset = SteelSegDataset(folder, repeated, args.height, args.width, defects=defects)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(
            f"device {device} ({name}), {args.height}x{args.width}, batch {args.batch_size}, "
            f"accumulate to {args.accumulate_to}, {args.steps} timed batches, best of "
            f"{args.repeat}; data: {args.images} synthetic 256x1600 JPEGs from kernelgen.synth "
            f"(made in {made:.1f}s), decoded every pass; torch threads {torch.get_num_threads()}"
        )

        torch.manual_seed(0)
        torch.backends.cudnn.benchmark = False
        model = build_unet(False).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        loader = DataLoader(OriginalStyleDataset(dataset, seed=0), batch_size=args.batch_size,
                            shuffle=True)
        steps = (args.warmup, args.steps)
        synchronized(lambda: baseline_pass(model, loader, optimizer, device,
                                           setup.accum_steps, steps[0]), device)()
        base_time = best_of(synchronized(lambda: baseline_pass(
            model, loader, optimizer, device, setup.accum_steps, steps[1]), device), args.repeat)
        del model, optimizer, loader

        torch.manual_seed(0)
        torch.backends.cudnn.benchmark = device.type == "cuda"
        model = build_unet(False).to(device, memory_format=setup.memory_format)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        scaler = grad_scaler(setup)
        flips = setup.flip_generator(0)
        loader = make_loader(dataset, args.batch_size, args.workers, device, shuffle_seed=0)

        def stage_pass(count: int) -> Callable[[], float]:
            return lambda: train_epoch(model, loader, optimizer, scaler, setup, flips, count)

        synchronized(stage_pass(steps[0]), device)()
        stage_time = best_of(synchronized(stage_pass(steps[1]), device), args.repeat)

    images = args.steps * args.batch_size
    base_rate, stage_rate = images / base_time, images / stage_time
    print(f"baseline (fp32, default layout, DataLoader defaults): {base_rate:8.1f} images/s")
    print(
        f"stage 4 (amp {setup.amp}, channels-last {setup.channels_last}, {args.workers} "
        f"workers, pinned {device.type == 'cuda'}, uint8 batches): {stage_rate:8.1f} images/s"
    )
    print(f"speed-up: {stage_rate / base_rate:.2f}x")


if __name__ == "__main__":
    main()
