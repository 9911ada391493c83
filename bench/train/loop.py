"""The shared training loop: plain PyTorch, readable top to bottom.

A method supplies a `TrainTask` (model, data loaders, loss, export); the loop owns the rest:
Adam + StepLR, bf16/fp16 autocast, gradient clipping, a progress bar with loss and pairs/s,
validation loss each epoch, an atomic resumable state file every epoch (``last.pt``, loaded
with ``weights_only=True``), the best export chosen on validation loss only, seeds, and
``torchrun`` + DistributedDataParallel (``gather`` gives the task in-batch negatives from
every rank when asked).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from bench.store import atomic_write_bytes, atomic_write_json
from bench.train.batchnorm import recalibrate_batchnorm

STATE_FILE = "last.pt"
HISTORY_FILE = "history.json"


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128  # per process
    lr: float = 2e-5
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-6
    gamma: float = 0.9  # StepLR, step 1 epoch
    grad_clip: float = 0.25
    precision: str = "bf16"  # bf16 | fp16 | fp32
    seed: int = 1
    device: str = "cpu"
    out: str = "."
    resume: bool = False
    gather_negatives: bool = False
    max_steps_per_epoch: int | None = None
    time_budget_s: float | None = None  # stop training (after validation) past this
    # after each epoch, recompute BatchNorm statistics over this many training batches
    # (bench.train.batchnorm; 0 = the official behaviour, running averages as trained)
    bn_recalibration_batches: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class TrainTask(Protocol):
    model: torch.nn.Module

    def train_loader(self, epoch: int, rank: int, world: int) -> Any: ...

    def val_loader(self, epoch: int, rank: int, world: int) -> Any: ...

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]: ...

    def batch_size(self, batch: Any) -> int: ...

    def to_device(self, batch: Any, device: torch.device) -> Any: ...

    def export(self, path: Path) -> None: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[int, int]:
    """Join the `torchrun` process group when WORLD_SIZE > 1 (nccl on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist_info()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every rank's gradient for this rank's slice.

    Written out (rather than torch.distributed.nn.all_gather) because that one hands
    non-contiguous gradients to gloo's all-to-all, which then reads the wrong elements.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        world = dist.get_world_size(group)
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous(), group=group)
        ctx.rows = t.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        rank, b = dist.get_rank(ctx.group), ctx.rows
        if dist.get_backend(ctx.group) == "nccl":
            out = torch.empty((b,) + tuple(grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(out, grad, group=ctx.group)
            return out, None
        dist.all_reduce(grad, group=ctx.group)
        return grad[rank * b:(rank + 1) * b].contiguous(), None


def make_gather(enabled: bool):
    """A function gathering a tensor across ranks (autograd-aware); None when not needed."""
    rank, world = dist_info()
    if not enabled or world == 1:
        return None
    # a group of its own: these collectives run inside backward and must not interleave with
    # DDP's gradient all-reduces on the default group
    group = dist.new_group()

    def gather(t: torch.Tensor | None) -> tuple[torch.Tensor | None, int]:
        if t is None:
            return None, 0
        offset = rank * t.shape[0]
        if t.requires_grad:
            return _GatherWithGrad.apply(t, group), offset
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous(), group=group)
        return torch.cat(parts, 0), offset

    return gather


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _mean_over_ranks(value: float, weight: float) -> float:
    rank, world = dist_info()
    if world == 1:
        return value / max(weight, 1e-12)
    t = torch.tensor([value, weight], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0] / t[1].clamp(min=1e-12))


def _save_state(path: Path, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def train(task: TrainTask, cfg: TrainConfig, log: Any = print) -> dict[str, Any]:
    """Run (or resume) training; returns the history. Rank 0 writes files."""
    rank, world = dist_info()
    device = torch.device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    model = task.model.to(device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                             weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=1, gamma=cfg.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"
                                  and device.type == "cuda")
    history: dict[str, Any] = {"config": _jsonable(asdict(cfg)), "epochs": []}
    start_epoch, best = 0, math.inf
    if cfg.resume and (out / STATE_FILE).is_file():
        state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        start_epoch, best = int(state["epoch"]) + 1, float(state["best_val"])
        history = json.loads(state["history"])
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {out / STATE_FILE} at epoch {start_epoch}")
    else:
        seed_everything(cfg.seed)
    run_model: torch.nn.Module = model
    if world > 1:
        run_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    gather = make_gather(cfg.gather_negatives)
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        seen, loss_sum, n_batches, t0 = 0, 0.0, 0, time.time()
        loader = task.train_loader(epoch, rank, world)
        bar = _progress_bar(loader, cfg.progress and rank == 0,
                            f"epoch {epoch + 1}/{cfg.epochs}")
        for step, batch in enumerate(loader):
            if cfg.max_steps_per_epoch is not None and step >= cfg.max_steps_per_epoch:
                break
            if cfg.time_budget_s is not None and time.time() - t_start > cfg.time_budget_s:
                break
            batch = task.to_device(batch, device)
            with autocast_context(device, cfg.precision):
                terms = task.loss(run_model, batch, gather)
            optim.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
            scaler.unscale_(optim)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optim)
            scaler.update()
            b = task.batch_size(batch) * world
            loss = float(terms["loss"].detach())  # one device sync per step
            seen += b
            loss_sum += loss * b
            n_batches += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}",
                                pairs_s=f"{seen / max(time.time() - t0, 1e-9):.1f}")
        if bar is not None:
            bar.close()
        sched.step()
        bn_batches = _recalibrate(task, model, device, cfg, gather, epoch, rank, world)
        train_loss = _mean_over_ranks(loss_sum / world, seen / world)
        val_loss = evaluate(task, run_model, device, cfg, gather, epoch)
        rec = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
               "pairs": seen, "steps": n_batches, "seconds": time.time() - t0,
               "pairs_per_s": seen / max(time.time() - t0, 1e-9),
               "lr": optim.param_groups[0]["lr"], "bn_recalibration_batches": bn_batches}
        improved = val_loss < best
        best = min(best, val_loss)
        rec["best"] = improved
        history["epochs"].append(rec)
        if rank == 0:
            log(f"epoch {epoch + 1}: train loss {train_loss:.4f}  val loss {val_loss:.4f}"
                f"{'  (best)' if improved else ''}  {rec['pairs_per_s']:.1f} pairs/s")
            if improved:
                task.export(out / "best.safetensors")
            task.export(out / "last.safetensors")
            _save_state(out / STATE_FILE, {
                "model": model.state_dict(), "optim": optim.state_dict(),
                "sched": sched.state_dict(), "epoch": epoch, "best_val": best,
                "history": json.dumps(history), "torch_rng": torch.get_rng_state()})
            atomic_write_json(out / HISTORY_FILE, history)
        if cfg.time_budget_s is not None and time.time() - t_start > cfg.time_budget_s:
            if rank == 0:
                log(f"time budget of {cfg.time_budget_s:.0f} s reached after epoch {epoch + 1}")
            break
    return history


def _recalibrate(task: TrainTask, model: torch.nn.Module, device: torch.device,
                 cfg: TrainConfig, gather: Any, epoch: int, rank: int, world: int) -> int:
    """Precise BN over the epoch's first training batches (the unwrapped model: no DDP hooks;
    every rank runs the same number of batches, so gathered negatives stay in step)."""
    n = cfg.bn_recalibration_batches
    if cfg.max_steps_per_epoch is not None:  # smoke runs stay short
        n = min(n, cfg.max_steps_per_epoch)
    if n <= 0:
        return 0

    def forward(batch: Any) -> None:
        batch = task.to_device(batch, device)
        with autocast_context(device, cfg.precision):
            task.loss(model, batch, gather)

    return recalibrate_batchnorm(model, task.train_loader(epoch, rank, world), forward, n)


@torch.no_grad()
def evaluate(task: TrainTask, model: torch.nn.Module, device: torch.device, cfg: TrainConfig,
             gather: Any, epoch: int = 0) -> float:
    """Mean validation loss (weighted by batch size, averaged over ranks)."""
    rank, world = dist_info()
    model.eval()
    total, weight = 0.0, 0.0
    for batch in task.val_loader(epoch, rank, world):
        batch = task.to_device(batch, device)
        with autocast_context(device, cfg.precision):
            terms = task.loss(model, batch, gather)
        b = task.batch_size(batch)
        total += float(terms["loss"]) * b
        weight += b
    model.train()
    if weight == 0 and world == 1:
        return math.nan
    return _mean_over_ranks(total, weight)


def _progress_bar(loader: Any, enabled: bool, desc: str) -> Any:
    """A bar the loop advances by hand. Not ``tqdm(loader)``: that starts one more iterator
    over a DataLoader, which draws from its shuffling generator, so the batches (and the
    trained model) would depend on whether the bar is shown."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    try:
        total = len(loader)
    except TypeError:
        total = None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))
