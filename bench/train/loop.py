"""The shared training loop: plain PyTorch, readable top to bottom.

A method supplies a `TrainTask` (model, data loaders, loss, optimizers, export); the loop owns
the rest: bf16/fp16 autocast, gradient clipping, a progress bar with loss and pairs/s, validation
each epoch, an atomic resumable state file every epoch (``last.pt``: model, every optimizer and
scheduler, the GradScaler, the CPU, CUDA, Python and NumPy random states; loaded with
``weights_only=True``), the best export chosen on validation data only, a time and a total-step
budget, seeds, and ``torchrun`` + DistributedDataParallel (``gather`` gives the task in-batch
negatives from every rank when asked).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from bench.errors import BenchError
from bench.store import atomic_write_bytes, atomic_write_json
from bench.train.batchnorm import recalibrate_batchnorm

STATE_FILE = "last.pt"
HISTORY_FILE = "history.json"


@dataclass
class TrainConfig:
    """How the loop runs; what is optimised, and how, is the task's (`configure_optimizers`)."""

    epochs: int = 5
    precision: str = "bf16"  # bf16 | fp16 | fp32
    seed: int = 1
    device: str = "cpu"
    out: str = "."
    resume: bool = False
    gather_negatives: bool = False
    max_steps_per_epoch: int | None = None
    max_total_steps: int | None = None  # a budget over all epochs (iteration-based recipes)
    time_budget_s: float | None = None  # stop training (after validation) past this
    # after each epoch, recompute BatchNorm statistics over this many training batches
    # (bench.train.batchnorm; 0 = the official behaviour, running averages as trained)
    bn_recalibration_batches: int = 0
    # stop after this many epochs in a row without a better selection metric (Lightning's
    # EarlyStopping with min_delta 0); None: never
    early_stopping_patience: int | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scheduled:
    """A learning-rate scheduler and when the loop steps it: after every optimizer step
    ("step") or every epoch ("epoch"); with `monitor`, after validation, with that value."""

    scheduler: Any
    interval: str = "epoch"
    monitor: str | None = None


@dataclass
class Optimization:
    """What `TrainTask.configure_optimizers` returns: one or several optimizers (parameter
    groups and frozen layers are the task's choice) and their schedulers."""

    optimizers: list[torch.optim.Optimizer]
    schedulers: list[Scheduled] = field(default_factory=list)

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for o in self.optimizers:
            groups = [{k: v for k, v in g.items() if k != "params" and _plain(v)}
                      | {"n_params": sum(p.numel() for p in g["params"])}
                      for g in o.param_groups]
            out.append({"optimizer": type(o).__name__, "groups": groups})
        for s in self.schedulers:
            out.append({"scheduler": type(s.scheduler).__name__, "interval": s.interval,
                        "monitor": s.monitor})
        return json.loads(json.dumps(out, default=str))


# A scheduler's state_dict holds its settings and its progress; only the settings must match
# when a run resumes (LambdaLR keeps a callable object's attributes under "lr_lambdas").
SCHEDULE_PROGRESS = frozenset({"last_epoch", "_step_count", "_last_lr", "verbose", "_is_initial",
                               "_get_lr_called_within_step", "best", "num_bad_epochs",
                               "cooldown_counter"})


def check_same_schedule(out: Path, scheduler: Any, saved: dict[str, Any]) -> None:
    """Refuse to resume under another learning-rate schedule: a cosine over `--epochs` (T_max)
    loaded from a 10-epoch run would go on as a 10-epoch cosine inside a 20-epoch run, which
    no fresh 20-epoch run does. Schedules that do not depend on the run's length (step decay,
    plateau, warm-up) resume with more epochs as they are."""
    fresh = scheduler.state_dict()
    for key in sorted((set(fresh) | set(saved)) - SCHEDULE_PROGRESS):
        if key in fresh and key in saved and fresh[key] == saved[key]:
            continue
        if key == "lr_lambdas" and len(fresh[key]) == len(saved.get(key) or ()) and all(
                a is None or b is None or a == b for a, b in zip(fresh[key], saved[key])):
            continue  # a plain function saves as None: nothing to compare
        raise BenchError(
            f"{out / STATE_FILE}: cannot resume: its {type(scheduler).__name__} has "
            f"{key}={saved.get(key)!r}, this run's has {fresh.get(key)!r} (the schedule depends "
            "on the run's length or settings); resume with the same --epochs and preset, or "
            "train into a fresh folder")


def _plain(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool, tuple, list, type(None)))


class TrainTask:
    """What a method gives the loop. Override `loss`, `export`, `configure_optimizers` and the
    loaders; the rest have defaults."""

    model: torch.nn.Module
    grad_clip: float | None = None  # max gradient norm (None: no clipping)
    # (metric, "min" | "max") that picks best.safetensors: "val_loss" or a key of
    # `validation_scores`; the training loss when there is no validation data
    selection: tuple[str, str] = ("val_loss", "min")
    # optimizer steps every `accumulate` batches, on the sum of their gradients (RD++'s 2); a
    # trailing partial group of an epoch is dropped
    accumulate: int = 1

    def train_loader(self, epoch: int, rank: int, world: int) -> Any:
        raise NotImplementedError

    def val_loader(self, epoch: int, rank: int, world: int) -> Any:
        return []

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def configure_optimizers(self) -> Optimization:
        raise NotImplementedError

    def validation_scores(self, model: torch.nn.Module, device: torch.device,
                          epoch: int) -> dict[str, float]:
        """Extra validation metrics (e.g. AUROC) recorded each epoch; default: none."""
        return {}

    def batch_size(self, batch: Any) -> int:
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(first.shape[0])

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return _to_device(batch, device)

    def export(self, path: Path) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What train.json records of the task (model config, data counts, settings)."""
        return {}

    def data_line(self, seconds: float) -> str:
        """The line `bench train` prints once the data is ready."""
        return f"data prepared in {seconds:.1f} s"

    def running(self) -> AbstractContextManager:
        """A context the loop runs in (e.g. a kernel choice that must not outlive the run)."""
        return nullcontext()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device) if hasattr(batch, "to") else batch


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


def _rng_state() -> dict[str, Any]:
    """Every random state a run draws from (restored on --resume)."""
    py = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": [py[0], list(py[1]), py[2]],
            "numpy_rng": [key, [int(k) for k in keys], int(pos), int(has_gauss),
                          float(cached)]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if state.get("python_rng"):
        v, internal, gauss = state["python_rng"]
        random.setstate((v, tuple(internal), gauss))
    if state.get("numpy_rng"):
        key, keys, pos, has_gauss, cached = state["numpy_rng"]
        np.random.set_state((key, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _better(value: float, best: float, mode: str) -> bool:
    return value > best if mode == "max" else value < best


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
    opt = task.configure_optimizers()
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"
                                  and device.type == "cuda")
    metric, mode = task.selection
    history: dict[str, Any] = {"config": {**_jsonable(asdict(cfg)),
                                          "optimization": opt.describe(),
                                          "grad_clip": task.grad_clip,
                                          "selection": [metric, mode]}, "epochs": []}
    start_epoch, global_step, since_best = 0, 0, 0
    best = -math.inf if mode == "max" else math.inf
    if cfg.resume and (out / STATE_FILE).is_file():
        state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        # (older states hold one "optim" / "sched"; an empty "scheds" list is no scheduler)
        optims = state["optims"] if "optims" in state else [state["optim"]]
        scheds = state["scheds"] if "scheds" in state else [state["sched"]]
        for o, st in zip(opt.optimizers, optims):
            o.load_state_dict(st)
        for s, st in zip(opt.schedulers, scheds):
            check_same_schedule(out, s.scheduler, st)
            s.scheduler.load_state_dict(st)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best = int(state["epoch"]) + 1, float(state["best_val"])
        global_step = int(state.get("global_step", 0))
        since_best = int(state.get("since_best", 0))
        history = json.loads(state["history"])
        metric, mode = history["config"].get("selection", [metric, mode])
        _set_rng_state(state)
        log(f"resumed from {out / STATE_FILE} at epoch {start_epoch}")
    else:
        seed_everything(cfg.seed)
    run_model: torch.nn.Module = model
    if world > 1:
        run_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    gather = make_gather(cfg.gather_negatives)
    params = list(model.parameters())
    accumulate = max(1, int(getattr(task, "accumulate", 1)))
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
            if cfg.max_total_steps is not None and global_step >= cfg.max_total_steps:
                break
            if cfg.time_budget_s is not None and time.time() - t_start > cfg.time_budget_s:
                break
            batch = task.to_device(batch, device)
            with autocast_context(device, cfg.precision):
                terms = task.loss(run_model, batch, gather)
            if step % accumulate == 0:
                for o in opt.optimizers:
                    o.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
            if (step + 1) % accumulate == 0:
                for o in opt.optimizers:
                    scaler.unscale_(o)
                if task.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, task.grad_clip)
                for o in opt.optimizers:
                    scaler.step(o)
                scaler.update()
                for s in opt.schedulers:
                    if s.interval == "step":
                        s.scheduler.step()
            global_step += 1
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
        for s in opt.schedulers:
            if s.interval == "epoch" and s.monitor is None:
                s.scheduler.step()
        bn_batches = _recalibrate(task, model, device, cfg, gather, epoch, rank, world)
        train_loss = _mean_over_ranks(loss_sum / world, seen / world)
        val_loss = evaluate(task, run_model, device, cfg, gather, epoch)
        rec = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
               "pairs": seen, "steps": n_batches, "seconds": time.time() - t0,
               "pairs_per_s": seen / max(time.time() - t0, 1e-9),
               "lr": opt.optimizers[0].param_groups[0]["lr"],
               "bn_recalibration_batches": bn_batches}
        if len(opt.optimizers) > 1:
            rec["lrs"] = [o.param_groups[0]["lr"] for o in opt.optimizers]
        rec.update(task.validation_scores(run_model, device, epoch))
        for s in opt.schedulers:
            if s.monitor is not None:
                s.scheduler.step(rec[s.monitor])
        if epoch == 0 and metric == "val_loss" and math.isnan(val_loss):
            metric, mode = "train_loss", "min"  # no validation data: the training loss
            history["config"]["selection"] = [metric, mode]
            log("no validation data: the best checkpoint is chosen on the training loss")
        value = float(rec[metric])
        improved = not math.isnan(value) and _better(value, best, mode)
        if improved:
            best = value
        since_best = 0 if improved else since_best + 1
        rec["best"] = improved
        history["epochs"].append(rec)
        if rank == 0:
            extra = "".join(f"  {k} {v:.4f}" for k, v in rec.items()
                            if k not in _EPOCH_KEYS and isinstance(v, float))
            val = "" if math.isnan(val_loss) else f"  val loss {val_loss:.4f}"  # none: no line
            log(f"epoch {epoch + 1}: train loss {train_loss:.4f}{val}"
                f"{extra}{'  (best)' if improved else ''}  {rec['pairs_per_s']:.1f} pairs/s")
            if improved:
                task.export(out / "best.safetensors")
            task.export(out / "last.safetensors")
            _save_state(out / STATE_FILE, {
                "model": model.state_dict(), "optims": [o.state_dict() for o in opt.optimizers],
                "scheds": [s.scheduler.state_dict() for s in opt.schedulers],
                "scaler": scaler.state_dict(), "epoch": epoch, "best_val": best,
                "global_step": global_step, "since_best": since_best,
                "history": json.dumps(history), **_rng_state()})
            atomic_write_json(out / HISTORY_FILE, history)
        if cfg.time_budget_s is not None and time.time() - t_start > cfg.time_budget_s:
            if rank == 0:
                log(f"time budget of {cfg.time_budget_s:.0f} s reached after epoch {epoch + 1}")
            break
        if cfg.max_total_steps is not None and global_step >= cfg.max_total_steps:
            if rank == 0:
                log(f"step budget of {cfg.max_total_steps} reached after epoch {epoch + 1}")
            break
        if cfg.early_stopping_patience is not None and since_best >= cfg.early_stopping_patience:
            if rank == 0:
                log(f"early stop: no better {metric} in {since_best} epochs")
            break
    return history


_EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "pairs", "steps", "seconds", "pairs_per_s",
               "lr", "lrs", "bn_recalibration_batches", "best"}


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
