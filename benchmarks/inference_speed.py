"""Inference throughput of the image-text methods: images/s for `localize` (one query per image)
and `classify` (one pathology: its whole prompt set), random weights, random 512 x 512 images.

`--preset paper` builds the paper-size models (ResNet-50 and a BERT-base width text encoder;
RoBERTa-base for ConVIRT) with random weights and a WordPiece tokenizer made here (no
download). Times on a shared CPU are noisy: compare methods within one run; take absolute
times from a GPU.

    python benchmarks/inference_speed.py --methods afloc,gloria,convirt --preset tiny
    python benchmarks/inference_speed.py --methods afloc,gloria,convirt --preset paper --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from bench.registry import get_method
from bench.types import Query, Sample


def samples(n: int, size: int = 512) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(f"s{i}", rng.integers(0, 256, (size, size), dtype=np.uint8),
                   meta={"path": f"s{i}.png"}) for i in range(n)]


def build(name: str, preset: str, device: str, tok_dir: str, batch: int):
    cls = get_method(name)
    opts = {"preset": preset, "text_encoder": tok_dir if preset == "paper" else None,
            "batch_size": batch}
    opts = {k: v for k, v in opts.items() if k in cls.option_specs and v is not None}
    return cls(device=device, **opts)


def rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up (and the query / prompt cache)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n * repeats / (time.perf_counter() - t0)


def measure(m, data: list[Sample], queries: list[list[Query]], pathology: str, n: int,
            repeats: int) -> tuple[float, float]:
    """(localize, classify) images/s, with no image features kept from one pass to the next."""
    def localize() -> None:
        m.bind(None, "afloc")
        m.localize(data, queries)

    def classify() -> None:
        m.bind(None, "afloc")
        m.classify(data, [pathology])

    return rate(localize, n, repeats), rate(classify, n, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="afloc,gloria,convirt")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=32, help="images per timed pass")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pathology", default="Pneumonia")
    args = ap.parse_args()
    data = samples(args.n)
    queries = [[Query("q", args.pathology, "Findings suggesting pneumonia.")]] * args.n
    print(f"{args.preset} models, random weights, {args.n} images of 512 x 512 on "
          f"{args.device} ({torch.get_num_threads()} threads)")
    print(f"{'method':10} {'localize (img/s)':>17} {'classify (img/s)':>17}")
    with tempfile.TemporaryDirectory() as tok_dir:
        from bench.methods._shared.encoders import build_wordpiece

        build_wordpiece(["findings suggesting pneumonia opacity"], 300).save_pretrained(tok_dir)
        for name in args.methods.split(","):
            m = build(name, args.preset, args.device, tok_dir, args.batch)
            loc, cls = measure(m, data, queries, args.pathology, args.n, args.repeats)
            print(f"{name:10} {loc:17.1f} {cls:17.1f}")
            m.close()


if __name__ == "__main__":
    main()
