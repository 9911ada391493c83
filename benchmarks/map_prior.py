"""How much of a method's heatmap is the same for every image? A diagnostic (SYNTHETIC data by
default), not a test.

A map that ignores the image can still beat `random`, and even `center`, when its fixed shape
happens to cover where findings usually are. This script separates the two parts. For the
first --n positive findings of a dataset, each map is carried to the AFLoc 224 letterbox frame
(as `--protocol afloc` does) and z-scored. The mean of these maps is the method's learned
spatial prior. Printed per method configuration:

  common     mean corr(map, mean map): 1 means the map is the same whatever the image
             (n independent maps give about 1 / sqrt(n))
  map~gt     mean corr(map, GT mask)
  prior~gt   mean corr(mean map, GT mask): what the fixed prior alone scores
  own~gt     mean corr(map - mean map, GT - mean GT): agreement of the image-specific part

    python benchmarks/map_prior.py --method-arg afloc.checkpoint=ckpt/best.safetensors
    python benchmarks/map_prior.py --methods afloc,center --dataset synthetic-ms-cxr \
        --prompt precise --method-arg afloc.checkpoint=A.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def stats(maps: np.ndarray, gts: np.ndarray) -> dict[str, float]:
    """The four figures for maps [n, H, W] (NaN where the method saw nothing) and GT [n, H, W]."""
    valid = ~np.isnan(maps).any(0)
    z = np.stack([(m[valid] - m[valid].mean()) / (m[valid].std() + 1e-12) for m in maps])
    g = gts[:, valid].astype(np.float64)
    prior, gmean = z.mean(0), g.mean(0)
    return {"common": float(np.mean([corr(m, prior) for m in z])),
            "map~gt": float(np.nanmean([corr(m, y) for m, y in zip(z, g)])),
            "prior~gt": float(np.nanmean([corr(prior, y) for y in g])),
            "own~gt": float(np.nanmean([corr(m - prior, y - gmean) for m, y in zip(z, g)]))}


def main() -> None:
    from bench.cli.options import options_for, parse_kv
    from bench.eval.protocols import get_protocol
    from bench.eval.protocols.afloc import map_to_afloc_frame
    from bench.eval.runner import RunSpec, _queries, build_dataset, build_method

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="afloc")
    ap.add_argument("--dataset", default="synthetic-rsna")
    ap.add_argument("--dataset-arg", action="append", default=[])
    ap.add_argument("--method-arg", action="append", default=[],
                    help="METHOD.KEY=VALUE (e.g. afloc.checkpoint=PATH)")
    ap.add_argument("--prompt", default="simple", choices=["simple", "precise"])
    ap.add_argument("--n", type=int, default=64, help="positive findings used")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    rows = []
    names = args.methods.split(",")
    method_args = parse_kv(tuple(args.method_arg), names)
    dataset_args = options_for(parse_kv(tuple(args.dataset_arg), flag="--dataset-arg"), "")
    for name in names:
        spec = RunSpec(method=name, dataset=args.dataset, prompt=args.prompt,
                       method_options=options_for(method_args, name),
                       dataset_options=dataset_args, device=args.device)
        dataset, method = build_dataset(spec), build_method(spec)
        method.bind(dataset, "afloc")
        protocol = get_protocol("afloc", dataset=args.dataset, prompt=args.prompt)
        samples, findings = [], []
        for i in range(len(dataset)):
            s = dataset.load(i)
            for f in (s.findings if s is not None else []):
                if f.positive and len(findings) < args.n:
                    samples.append(s)
                    findings.append(f)
            if len(findings) >= args.n:
                break
        queries = [[q for q in _queries(dataset, s, args.prompt) if q.id == f.query_id]
                   for s, f in zip(samples, findings)]
        maps = [m[0] for m in method.localize(samples, queries)]
        frame = method.frame
        maps224 = np.stack([map_to_afloc_frame(m, frame, s.hw) for m, s in zip(maps, samples)])
        gts = np.stack([protocol.gt_mask(s, f) > 0 for s, f in zip(samples, findings)])
        rows.append((name, len(findings), stats(maps224, gts)))
        method.close()
    print(f"{args.dataset} ({args.prompt} prompts), first positive findings; SYNTHETIC data "
          f"when the dataset is synthetic")
    print(f"{'method':10} {'n':>4} {'common':>8} {'map~gt':>8} {'prior~gt':>9} {'own~gt':>8}")
    for name, n, st in rows:
        print(f"{name:10} {n:4d} {st['common']:8.3f} {st['map~gt']:8.3f} {st['prior~gt']:9.3f} "
              f"{st['own~gt']:8.3f}")


if __name__ == "__main__":
    main()
