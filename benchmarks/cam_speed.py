"""CAM throughput per grad-cam class: images/s for CheXlocalize-style localization (every image
mapped for its ten pathologies: ten (image, target) rows, Eigen-CAM-like target-agnostic
classes once per image) through the ``gradcam`` method's machinery, random weights, random
512 x 512 images. Prints a table.

`--arch densenet121 --size 320` is CheXlocalize's classifier (random weights, nothing
downloaded); `densenet-tiny --size 224` the tiny preset. Times on a shared CPU are noisy:
compare classes within one run; take absolute times from a GPU.

    python benchmarks/cam_speed.py                       # tiny DenseNet at 224, CPU
    python benchmarks/cam_speed.py --arch densenet121 --size 320 --images 4
    python benchmarks/cam_speed.py --cams GradCAM,GradCAMPlusPlus,EigenCAM,LayerCAM,HiResCAM
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.methods.cam.method import CAM_METHODS
from bench.methods.classifier.checkpoint import CHEXPERT_TASKS, save_weights
from bench.methods.classifier.model import Classifier, ClassifierConfig
from bench.types import Query, Sample

TASKS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity",
         "Edema", "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion",
         "Support Devices")


def samples(n: int, size: int = 512) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(f"s{i}", rng.integers(0, 256, (size, size), dtype=np.uint8)) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="densenet-tiny",
                    choices=("densenet-tiny", "densenet121", "resnet50", "resnet152"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--cams", default="GradCAM,GradCAMPlusPlus,EigenCAM,LayerCAM")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16, help="(image, target) rows per pass")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ClassifierConfig(arch=args.arch, pathologies=list(CHEXPERT_TASKS), size=args.size,
                           imagenet_weights=False)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "cls.safetensors"
        save_weights(ckpt, Classifier(cfg))
        data = samples(args.images)
        queries = [[Query(f"{s.id}:{t}", t, t) for t in TASKS] for s in data]
        rows = []
        for name in args.cams.split(","):
            m = CAM_METHODS["gradcam"](str(ckpt), device=args.device, cam=name,
                                       batch_size=args.batch_size)
            m.localize(data[:1], queries[:1])  # warm-up
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                m.localize(data, queries)
                best = min(best, time.perf_counter() - t0)
            rows.append((name, "once per image" if m.target_agnostic else "one per target",
                         args.images / best, args.images * len(TASKS) / best))
            m.close()
    print(f"CAM throughput: {args.arch} at {args.size}, {len(TASKS)} pathologies per image, "
          f"{args.images} images, batch {args.batch_size}, device {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'CAM class':<18} {'targets':<16} {'images/s':>9} {'maps/s':>9}")
    for name, kind, ips, mps in rows:
        print(f"{name:<18} {kind:<16} {ips:9.2f} {mps:9.1f}")


if __name__ == "__main__":
    main()
