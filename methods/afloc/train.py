"""`bench train afloc`: AFLoc's presets and the task the shared loop runs.

``paper``: the official schedule (5 epochs, batch 128, lr 2e-5, StepLR 0.9, BN as trained),
ResNet-50 and Bio_ClinicalBERT loaded offline. ``tiny``: 10 epochs of the small synthetic world,
6 to 8 minutes on 2 CPU cores (``benchmarks/learning_check.py`` scores the result against the
baselines): batch 16, lr 1e-3, precise BN over 32 batches after each epoch.
"""

from __future__ import annotations

from typing import Any

from bench.errors import UsageError
from bench.methods._shared.bert_text import full_caption
from bench.methods._shared.encoders import build_wordpiece, load_pretrained_text
from bench.train.data import TrainingData
from bench.train.loop import seed_everything
from bench.train.run import preset_settings

from . import presets
from .imaging import TRAIN_PREFRAMES
from .model import AFLocModel, parse_levels
from .pretrain import AFLocTask, clean_pairs

# paper: the official 5 epochs of batch 128 at lr 2e-5; tiny: 10 epochs of batch 16 at lr 1e-3.
# bn_recalibration: batches of precise BN after each epoch (bench.train.batchnorm): off in the
# official recipe; on for tiny, whose BatchNorm averages lag its fast-moving weights (512
# images, ~3 s per epoch)
PRESETS = {"paper": {"epochs": 5, "batch_size": 128, "lr": 2e-5, "bn_recalibration": 0},
           "tiny": {"epochs": 10, "batch_size": 16, "lr": 1e-3, "bn_recalibration": 32}}


class AFLocTrainTask(AFLocTask):
    """`AFLocTask` with what `bench train` records of it."""

    def __init__(self, *args: Any, info: dict[str, Any], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.info = info

    def describe(self) -> dict[str, Any]:
        return self.info

    def data_line(self, seconds: float) -> str:
        n_train = len(self.train_set)
        n_val = len(self.val_set) if self.val_set is not None else 0
        val = self.info["val_split"]
        return (f"pairs: train {n_train}{f', {val} {n_val}' if self.val_set else ''}; "
                f"skipped {self.info['pairs']['skipped']}; prepared in {seconds:.1f} s")


def make_task(req: Any, data: TrainingData) -> tuple[AFLocTask, dict[str, Any]]:
    text_mode = req.option("text_mode")
    levels = parse_levels(req.option("levels"))
    recipe = TRAIN_PREFRAMES[text_mode]
    train_pairs = clean_pairs(data.pairs("train", recipe), text_mode)
    val_raw = data.pairs("val", recipe)
    val_pairs = clean_pairs(val_raw, text_mode) if val_raw is not None else None
    if len(train_pairs.sentences) == 0:
        raise UsageError(f"no usable training pairs in {req.root} ({train_pairs.skipped})")

    seed_everything(req.seed)
    cfg = presets.preset_config(req.preset, levels, text_mode)
    if req.preset == "tiny":
        corpus = [full_caption(s) for s in train_pairs.sentences]  # as the model sees them
        tokenizer = build_wordpiece(corpus, vocab_size=req.option("vocab_size"))
        cfg.bert["vocab_size"] = int(tokenizer.vocab_size)
        model = AFLocModel(cfg)
    else:
        source = req.option("text_encoder") or presets.DEFAULT_TEXT_ENCODER
        bert, tokenizer = load_pretrained_text(source)
        cfg.text_encoder = source
        cfg.bert = bert.config.to_dict()
        model = AFLocModel(cfg, bert=bert)
    if req.channels_last:
        model.img_encoder.use_channels_last()
    settings = {**preset_settings(req, PRESETS[req.preset]), "gamma": req.option("gamma"),
                "text_mode": text_mode, "levels": list(levels),
                "local_impl": req.option("local_impl")}
    info = {"model": cfg.to_json(), "text_mode": text_mode, "levels": list(levels),
            "image_weights": model.img_encoder.weights_note, "val_split": data.split("val"),
            "pre_frame": recipe.describe(),
            "pairs": {"train": len(train_pairs.sentences),
                      "val": len(val_pairs.sentences) if val_pairs else 0,
                      "skipped": train_pairs.skipped}}
    task = AFLocTrainTask(model, tokenizer, train_pairs, val_pairs, settings["batch_size"],
                          seed=req.seed, num_workers=req.workers, lr=settings["lr"],
                          gamma=settings["gamma"], local_impl=settings["local_impl"],
                          compile_losses=req.compile, info=info)
    return task, settings
