"""`bench train METHOD`: one request, the method's task, the shared loop.

The request holds what every method's training shares (data, preset, budget, device, seeds,
precision, output); a method's own options travel in `method_options` and are checked against
what it declares (`Method.train_option_specs`). This module sets the thread count, joins the
``torchrun`` process group, prepares the data the task asks for (`bench.train.data`), writes
``train.json`` and runs `bench.train.loop.train`.

Reproducible across machines: on the CPU, the same command and seed train the same model on
any machine of the same CPU kind whatever its core count, because training runs a fixed number
of intra-op threads (`DEFAULT_CPU_THREADS` unless `threads` is given): the kernels split their
reductions by thread, so another count rounds differently, and ten epochs from scratch amplify
that into another model. The count used is recorded in ``train.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import UsageError
from bench.paths import default_train_out
from bench.provenance import git_revision, versions
from bench.store import atomic_write_json
from bench.train.data import TrainingData
from bench.train.loop import TrainConfig, init_distributed, train

DEFAULT_CPU_THREADS = 2  # the intra-op threads of CPU training, whatever the machine has


@dataclass
class TrainRequest:
    """A whole training run: `bench train METHOD [options]`, or a --config file."""

    method: str
    dataset: str
    root: str | None = None
    preset: str = "paper"
    epochs: int | None = None  # None: the preset's
    batch_size: int | None = None  # per process; None: the preset's
    lr: float | None = None  # None: the preset's
    precision: str = "fp32"
    out: str | None = None
    resume: bool = False
    device: str = "cpu"
    seed: int = 1
    threads: int | None = None  # intra-op threads; None: DEFAULT_CPU_THREADS on CPU
    workers: int = 0
    cache: str | None = None
    gather_negatives: bool = False
    dataset_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None  # per epoch (smoke runs)
    max_total_steps: int | None = None
    time_budget: float | None = None
    limit: int | None = None
    progress: bool = True
    bn_recalibration: int | None = None  # None: the preset's
    channels_last: bool = True  # NHWC image backbones (a layout, the same function; faster)
    compile: bool = False  # torch.compile what the method says benefits

    def option(self, name: str) -> Any:
        """A method option as given, else the method's declared default."""
        from bench.registry import get_method

        specs = get_method(self.method).train_option_specs
        return self.method_options.get(name, specs[name].default)

    def output_folder(self) -> Path:
        return Path(self.out) if self.out else default_train_out(self.method, self.preset,
                                                                 self.dataset)


def preset_settings(req: TrainRequest, preset: dict[str, Any]) -> dict[str, Any]:
    """The loop's settings of a method's preset, with the request's values where given: epochs,
    batch size, learning rate, BatchNorm recalibration, and early stopping where the preset has
    it (the method's ``early_stopping`` option overrides it)."""
    out = {"epochs": req.epochs or preset["epochs"],
           "batch_size": req.batch_size or preset["batch_size"],
           "lr": req.lr or preset["lr"],
           "bn_recalibration": (preset["bn_recalibration"] if req.bn_recalibration is None
                                else req.bn_recalibration)}
    if "early_stopping" in preset:
        out["early_stopping"] = req.option("early_stopping") or preset["early_stopping"]
    return out


def check_request(req: TrainRequest) -> type:
    """The method class, after checking the request's method options and preset."""
    from bench.options import check_option_names
    from bench.registry import get_method

    cls = get_method(req.method)
    if not cls.capabilities.trainable:
        raise UsageError(f"method '{req.method}' is not trainable in the harness")
    owner = f"bench train {req.method}"
    check_option_names(req.method_options, cls.train_option_specs, owner)
    req.method_options = {k: cls.train_option_specs[k].value(k, v, owner)
                          for k, v in req.method_options.items()}
    if cls.train_presets and req.preset not in cls.train_presets:
        raise UsageError(f"{owner}: no preset '{req.preset}' (presets: "
                         f"{', '.join(cls.train_presets)})")
    for name in ("epochs", "batch_size", "max_steps", "max_total_steps", "threads", "limit"):
        value = getattr(req, name)
        if value is not None and value < 1:
            raise UsageError(f"{owner}: {name.replace('_', '-')} must be at least 1, not {value}")
    return cls


def set_threads(req: TrainRequest) -> dict[str, Any]:
    """Fix the intra-op thread count (CPU training), and say what was used."""
    default = torch.get_num_threads()
    n = req.threads or (DEFAULT_CPU_THREADS if torch.device(req.device).type == "cpu" else None)
    if n is not None:
        torch.set_num_threads(n)
    return {"intra_op": torch.get_num_threads(), "machine_default": default,
            "interop": torch.get_num_interop_threads()}


def run_training(req: TrainRequest, log: Any = print) -> dict[str, Any]:
    cls = check_request(req)
    threads = set_threads(req)
    rank, world = init_distributed(req.device)
    t0 = time.time()
    data = TrainingData(req.dataset, req.root, req.dataset_options, req.cache, req.limit,
                        progress=req.progress, rank=rank, world=world)
    req.dataset_options = data.options  # with MS-CXR held out where the corpus holds it
    if rank != 0:
        log = _silent
    if req.dataset_options.get("exclude_ms_cxr"):
        log(f"MS-CXR held out of pretraining: {req.dataset_options['exclude_ms_cxr']}")
    task, settings = cls.train_task(req, data)
    log(task.data_line(time.time() - t0))
    out = req.output_folder()
    cfg = TrainConfig(epochs=settings["epochs"], precision=req.precision, seed=req.seed,
                      device=req.device, out=str(out), resume=req.resume,
                      gather_negatives=req.gather_negatives,
                      max_steps_per_epoch=req.max_steps, max_total_steps=req.max_total_steps,
                      time_budget_s=req.time_budget, progress=req.progress,
                      bn_recalibration_batches=settings.get("bn_recalibration", 0),
                      early_stopping_patience=settings.get("early_stopping"))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "train.json", {
            "method": req.method, "request": asdict(req), "settings": settings,
            "threads": threads, "world_size": world, **task.describe(),
            "versions": versions(), "git_rev": git_revision()})
    with task.running():
        history = train(task, cfg, log=log)
    best = out / "best.safetensors"
    return {"out": str(out), "best": str(best) if best.is_file() else None, "history": history,
            "device": str(torch.device(req.device)), "rank": rank}


def _silent(*_: Any, **__: Any) -> None:
    """Log sink for ranks other than 0."""
