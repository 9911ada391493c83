"""Training and inference throughput of RD++ and ReContrast (images per second).

    python benchmarks/anomaly_speed.py                      # tiny networks on the CPU
    python benchmarks/anomaly_speed.py --network paper --device cuda --batch 16 --steps 20

One training step is the task's own loss, backward and optimizer steps (`bench train`'s code
path on random frames; RD++ with its SSOT term both ways, its noise fields precomputed as a long
run has them); inference is `maps_and_scores`' path: the feature pairs, the anomaly
maps (upsampled, summed, Gaussian sigma 4 on the CPU) and the image scores. Prints a table; CPU
numbers are ratios on a shared machine, absolute figures only from a GPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.methods.anomaly.maps import anomaly_maps, image_scores
from bench.methods.anomaly.train import OneClassData, normalized
from bench.methods.rdpp import train as rdpp_train
from bench.methods.recontrast import train as rc_train


def tasks(network: str, batch: int):
    """(name, cfg, task) on random normal frames: RD++ with the SSOT term as the official code
    runs it (geomloss) and as the tiny preset takes it (zero), and ReContrast."""
    out = []
    for name in ("rdpp (ssot zero)", "rdpp (ssot geomloss)", "recontrast"):
        mod = rc_train if name == "recontrast" else rdpp_train
        cfg = mod.network_config(network)
        frames = np.random.default_rng(0).integers(0, 256, (batch * 2, cfg.size, cfg.size),
                                                   dtype=np.uint8)
        data = OneClassData(frames, np.arange(batch * 2), frames, np.arange(0), np.zeros(0),
                            {}, "random frames")
        common = dict(data=data, batch_size=batch, block=1, seed=0, size=cfg.size)
        if name.startswith("rdpp"):
            noise = rdpp_train.SimplexPseudoAnomaly(cfg.size, 1)
            for h in range(10, cfg.size // 8):  # every patch shape, as a long run has them
                for w in range(10, cfg.size // 8):
                    noise.field(h, w)
            task = rdpp_train.RDPPTask(rdpp_train.RDPP(cfg), 5e-3, 1e-3, 2, noise,
                                       ssot=name.split()[-1].rstrip(")"), **common)
        else:
            task = rc_train.ReContrastTask(rc_train.ReContrastNet(cfg), 2e-3, 1e-5, 1e-5, 1000,
                                           **common)
        out.append((name, cfg, task))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="tiny", choices=["tiny", "paper"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name, cfg, task in tasks(args.network, args.batch):
        model = task.model.to(device)
        opt = task.configure_optimizers()
        batch = torch.from_numpy(task.data.train_frames[:args.batch]).to(device)
        times = []
        model.train()
        for i in range(args.steps + 1):
            sync(device)
            t0 = time.perf_counter()
            terms = task.loss(model, batch, None)
            terms["loss"].backward()
            for o in opt.optimizers:
                o.step()
                o.zero_grad(set_to_none=True)
            sync(device)
            if i:  # the first step warms up
                times.append(time.perf_counter() - t0)
        model.eval()
        inf = []
        with torch.no_grad():
            for i in range(args.steps + 1):
                sync(device)
                t0 = time.perf_counter()
                t, s = model.pairs(normalized(batch.float() / 255.0))
                image_scores(anomaly_maps(t, s, cfg.size))
                sync(device)
                if i:
                    inf.append(time.perf_counter() - t0)
        rows.append((name, cfg.size, args.batch / np.median(times), args.batch / np.median(inf)))
        del model, task, opt
    print(f"network {args.network} on {device} ({args.threads} threads), batch {args.batch}, "
          f"median of {args.steps} steps")
    print(f"{'method':22} {'size':>5} {'train img/s':>12} {'infer img/s':>12}")
    for name, size, tr, inf in rows:
        print(f"{name:22} {size:>5} {tr:>12.1f} {inf:>12.1f}")


if __name__ == "__main__":
    main()
