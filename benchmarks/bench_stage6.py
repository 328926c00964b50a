"""Stage 6's inference throughput at full size: UNet-ResNet18 on 256x1600 images with
stage 4's post-processing, then DenseNet121 at 256x256, through stage 6's own functions.

Run from the repository root: `python benchmarks/bench_stage6.py [--images N] [--threads T]
[--models K]` (K fold models averaged, as stage 6 does with a matrix stage 4).
Weights are random (the speed does not depend on them); images are synthetic
256x1600 JPEGs. Prints images/s for each half, in all, and for the CPU side of the
segmentation alone (a stub network), the best of `--repeat`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import segmentation_models_pytorch  # noqa: E402,F401  (torchvision before TensorFlow)
import torch  # noqa: E402

from stages.lib.classifier import build_classifier  # noqa: E402
from stages.lib.seg.checkpoint import Segmenter  # noqa: E402
from stages.lib.seg.ensemble import Ensemble, ensemble_of  # noqa: E402
from stages.lib.seg.model import build_unet  # noqa: E402
from stages.lib.seg.postprocess import PostProcess  # noqa: E402
from stages.stage4_segmentation import Params as SegParams  # noqa: E402
from stages.stage6_inference import classify  # noqa: E402
from stages.synth import generate  # noqa: E402


class AllDefect(torch.nn.Module):
    """A stub network marking every pixel: times the CPU side of `Ensemble.segment` (decode,
    sigmoid, threshold, `remove_small`, RLE) at post-processing's worst case."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 4, x.shape[2], x.shape[3])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--models", type=int, default=1, help="fold models averaged by the segmenter")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = generate(Path(tmp) / "data", n_train=2, n_test=args.images, seed=0)
        test_dir = data.competition_dir / "test_images"
        names = sorted(p.name for p in test_dir.iterdir())
        seg_params = SegParams(batch_size=8, pretrained=False, workers=0)  # full size: 256x1600
        device = torch.device("cpu")
        post = PostProcess(
            (seg_params.pixel_threshold,) * 4, (seg_params.min_size,) * 4, (seg_params.min_area,) * 4
        )

        def segmenter(*models: torch.nn.Module) -> Ensemble:
            return ensemble_of([
                Segmenter(
                    model, seg_params.train_height, seg_params.train_width, seg_params.batch_size,
                    seg_params.tta, seg_params.amp, post,
                )
                for model in models
            ])

        models = []
        for seed in range(args.models):
            torch.manual_seed(seed)
            models.append(build_unet(pretrained=False).eval())
        classifier_path = Path(tmp) / "model.h5"
        build_classifier(256, pretrained=False).save(classifier_path)
        seg_best = cls_best = cpu_best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            segmenter(*models).segment(test_dir, names, 0, device)
            middle = time.perf_counter()
            classify(classifier_path, test_dir, names, 32, "none")
            seg_best = min(seg_best, middle - start)
            cls_best = min(cls_best, time.perf_counter() - middle)
            start = time.perf_counter()
            segmenter(AllDefect()).segment(test_dir, names, 0, device)
            cpu_best = min(cpu_best, time.perf_counter() - start)
    n = len(names)
    print(f"{n} images of 256x1600 on CPU, {args.threads} threads (best of {args.repeat}):")
    what = "UNet-ResNet18" if args.models == 1 else f"mean of {args.models} UNet-ResNet18"
    print(f"  segmentation ({what} + stage 4 post-processing): {seg_best:.2f} s, {n / seg_best:.2f} images/s")
    print(f"  classifier (DenseNet121 at 256x256, incl. model load):   {cls_best:.2f} s, {n / cls_best:.2f} images/s")
    print(f"  stage 6 in all: {n / (seg_best + cls_best):.2f} images/s")
    print(f"  CPU side of segmentation alone (stub network, every pixel marked): {n / cpu_best:.1f} images/s")


if __name__ == "__main__":
    main()
