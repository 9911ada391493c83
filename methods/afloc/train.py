"""`bench train afloc`: build data, model and task, then run the shared loop."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import UsageError
from bench.paths import cache_dir
from bench.provenance import git_revision, versions
from bench.store import atomic_write_json
from bench.train.loop import TrainConfig, init_distributed, seed_everything, train

from . import losses as L
from . import presets
from .model import AFLocModel, parse_levels
from .pretrain import AFLocTask, prepare_pairs
from .text import full_caption


@dataclass
class TrainRequest:
    dataset: str
    root: str | None = None
    preset: str = "paper"
    levels: str = "word,sentence,report"
    text_mode: str = "faithful"
    text_encoder: str | None = None
    epochs: int | None = None  # None: the preset's default (PRESET_EPOCHS)
    batch_size: int | None = None
    lr: float | None = None
    gamma: float = TrainConfig.gamma  # StepLR decay per epoch (official 0.9)
    precision: str = "fp32"
    out: str | None = None
    resume: bool = False
    device: str = "cpu"
    seed: int = 1
    workers: int = 0
    cache: str | None = None
    gather_negatives: bool = False
    dataset_options: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    time_budget: float | None = None
    limit: int | None = None
    progress: bool = True
    vocab_size: int = 2000
    compile_losses: bool = False
    local_impl: str = "einsum"  # losses.LOCAL_IMPLS: the same values, computed two ways
    bn_recalibration: int | None = None  # None: the preset's (PRESET_BN_RECALIBRATION)
    channels_last: bool = True  # NHWC image backbone (a layout, the same function; faster)


# paper: the official 5 epochs; tiny: 10 epochs of the small synthetic world, 6 to 8 minutes on
# 2 CPU cores (benchmarks/learning_check.py scores the result against the baselines)
PRESET_EPOCHS = {"paper": 5, "tiny": 10}
# batches of precise BN after each epoch (bench.train.batchnorm): off in the official recipe;
# on for tiny, whose BatchNorm averages lag its fast-moving weights (512 images, ~3 s per epoch)
PRESET_BN_RECALIBRATION = {"paper": 0, "tiny": 32}


def default_out(preset: str, dataset: str) -> Path:
    return cache_dir() / "checkpoints" / f"afloc-{preset}-{dataset}"


def with_ms_cxr_held_out(ds_cls: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Dataset options with MS-CXR's file filled in where the corpus holds MS-CXR's images
    (MIMIC-CXR) and the user did not choose (a file, or "none")."""
    if not getattr(ds_cls, "holds_out_ms_cxr", False) or "exclude_ms_cxr" in options:
        return dict(options)
    from bench.datasets.mimic_cxr import find_ms_cxr_file

    return {**options, "exclude_ms_cxr": str(find_ms_cxr_file())}


def _split_names(ds_cls: Any) -> tuple[str, str | None]:
    splits = tuple(getattr(ds_cls, "splits", ()))
    train = "train" if "train" in splits else (splits[0] if splits else "train")
    val = next((s for s in ("validate", "val", "valid", "validation") if s in splits), None)
    return train, val


def run_training(req: TrainRequest, log: Any = print) -> dict[str, Any]:
    from bench.registry import get_dataset

    rank, world = init_distributed(req.device)
    levels = parse_levels(req.levels)
    out = Path(req.out) if req.out else default_out(req.preset, req.dataset)
    ds_cls = get_dataset(req.dataset)
    req.dataset_options = with_ms_cxr_held_out(ds_cls, req.dataset_options)
    train_split, val_split = _split_names(ds_cls)
    t0 = time.time()
    cache = Path(req.cache) if req.cache else None

    def pairs(split: str):
        ds = ds_cls(root=req.root, split=split, **req.dataset_options)
        where = cache / split if cache else None
        if where is not None and world > 1:  # rank 0 writes the cache, the others read it
            if rank == 0:
                prepare_pairs(ds, req.text_mode, where, progress=req.progress, limit=req.limit)
            torch.distributed.barrier()
        return prepare_pairs(ds, req.text_mode, where, progress=req.progress and rank == 0,
                             limit=req.limit)

    train_pairs = pairs(train_split)
    val_pairs = pairs(val_split) if val_split is not None else None
    if len(train_pairs.sentences) == 0:
        raise UsageError(f"no usable training pairs in {req.root} ({train_pairs.skipped})")
    if rank != 0:
        log = _silent
    if req.dataset_options.get("exclude_ms_cxr"):
        log(f"MS-CXR held out of pretraining: {req.dataset_options['exclude_ms_cxr']}")
    log(f"pairs: train {len(train_pairs.sentences)}"
        f"{f', {val_split} {len(val_pairs.sentences)}' if val_pairs else ''}; skipped "
        f"{train_pairs.skipped}; prepared in {time.time() - t0:.1f} s")

    seed_everything(req.seed)
    cfg = presets.preset_config(req.preset, levels, req.text_mode)
    if req.preset == "tiny":
        corpus = [full_caption(s) for s in train_pairs.sentences]  # as the model sees them
        tokenizer = presets.build_wordpiece(corpus, vocab_size=req.vocab_size)
        cfg.bert["vocab_size"] = int(tokenizer.vocab_size)
        model = AFLocModel(cfg)
    else:
        source = req.text_encoder or presets.DEFAULT_TEXT_ENCODER
        bert, tokenizer = presets.load_pretrained_text(source)
        cfg.text_encoder = source
        cfg.bert = bert.config.to_dict()
        model = AFLocModel(cfg, bert=bert)
    if req.channels_last:
        model.img_encoder.use_channels_last()
    bs = req.batch_size or (128 if req.preset == "paper" else 16)
    lr = req.lr or (2e-5 if req.preset == "paper" else 1e-3)
    task = AFLocTask(model, tokenizer, train_pairs, val_pairs, bs, seed=req.seed,
                     num_workers=req.workers)
    epochs = req.epochs or PRESET_EPOCHS[req.preset]
    tcfg = TrainConfig(epochs=epochs, batch_size=bs, lr=lr, gamma=req.gamma,
                       precision=req.precision,
                       seed=req.seed, device=req.device, out=str(out), resume=req.resume,
                       gather_negatives=req.gather_negatives, max_steps_per_epoch=req.max_steps,
                       time_budget_s=req.time_budget, progress=req.progress,
                       bn_recalibration_batches=(PRESET_BN_RECALIBRATION[req.preset]
                                                 if req.bn_recalibration is None
                                                 else req.bn_recalibration))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "train.json", {
            "method": "afloc", "request": asdict(req), "model": cfg.to_json(),
            "text_mode": req.text_mode, "levels": list(levels), "world_size": world,
            "image_weights": model.img_encoder.weights_note,
            "pairs": {"train": len(train_pairs.sentences),
                      "val": len(val_pairs.sentences) if val_pairs else 0,
                      "skipped": train_pairs.skipped},
            "versions": versions(), "git_rev": git_revision()})
    with L.local_impl(req.local_impl, req.compile_losses):
        history = train(task, tcfg, log=log)
    best = out / "best.safetensors"
    return {"out": str(out), "best": str(best) if best.is_file() else None, "history": history,
            "device": str(torch.device(req.device)), "rank": rank}


def _silent(*_: Any, **__: Any) -> None:
    """Log sink for ranks other than 0."""
