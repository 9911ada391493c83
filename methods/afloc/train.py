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
from bench.methods._shared.encoders import build_wordpiece, load_wordpiece_encoder
from bench.train.data import TrainingData
from bench.train.loop import seed_everything
from bench.train.run import preset_settings

from . import presets
from .imaging import TRAIN_PREFRAMES
from .model import AFLocModel, parse_levels
from .paraphrase import ParaphraseTable, dataset_table
from .pretrain import AFLocTask, clean_pairs

# paper: the official 5 epochs of batch 128 at lr 2e-5; tiny: 10 epochs of batch 16 at lr 1e-3.
# bn_recalibration: batches of precise BN after each epoch (bench.train.batchnorm): off in the
# official recipe; on for tiny, whose BatchNorm averages lag its fast-moving weights (512
# images, ~3 s per epoch)
PRESETS = {"paper": {"epochs": 5, "batch_size": 128, "lr": 2e-5, "bn_recalibration": 0},
           "tiny": {"epochs": 10, "batch_size": 16, "lr": 1e-3, "bn_recalibration": 32}}


# training captions a pretrained tokenizer must encode the same after its round trip through the
# checkpoint's tokenizer.json (`encoders.wordpiece_problem`)
TOKENIZER_PROBES = 256


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
        table = self.train_set.paraphrases
        para = (f"; paraphrases: {len(table.choices)} sentences from {table.path}"
                if table is not None else "")
        return (f"pairs: train {n_train}{f', {val} {n_val}' if self.val_set else ''}; "
                f"skipped {self.info['pairs']['skipped']}{para}; prepared in {seconds:.1f} s")


def paraphrase_table(req: Any, data: TrainingData, text_mode: str,
                     ) -> tuple[ParaphraseTable | None, str | None]:
    """(table, where it came from): the ``paraphrases`` option's file; else, for a paired folder
    (the fundus set, ``synthetic-fundus``), the folder's own ``paraphrases.json``; ``none``: off."""
    given = req.option("paraphrases")
    if given is not None and str(given).lower() == "none":
        return None, None
    if given is not None:
        return ParaphraseTable.load(given, text_mode), "option"
    from bench.datasets.paired_folder import PairedFolder

    if not issubclass(data.dataset_class, PairedFolder):
        return None, None
    split = data.split("train")
    root = data.dataset_class(root=data.root, split=split, **data.options).root
    found = dataset_table(root)
    return (ParaphraseTable.load(found, text_mode), "dataset folder") if found else (None, None)


def make_task(req: Any, data: TrainingData) -> tuple[AFLocTask, dict[str, Any]]:
    text_mode = req.option("text_mode")
    levels = parse_levels(req.option("levels"))
    recipe = TRAIN_PREFRAMES[text_mode]
    train_pairs = clean_pairs(data.pairs("train", recipe), text_mode)
    val_raw = data.pairs("val", recipe)
    val_pairs = clean_pairs(val_raw, text_mode) if val_raw is not None else None
    if len(train_pairs.sentences) == 0:
        raise UsageError(f"no usable training pairs in {req.root} ({train_pairs.skipped})")
    table, table_source = paraphrase_table(req, data, text_mode)

    seed_everything(req.seed)
    cfg = presets.preset_config(req.preset, levels, text_mode)
    corpus = [full_caption(s) for s in train_pairs.sentences]  # as the model sees them
    if table is not None:  # and the paraphrases it may see instead
        corpus += [full_caption(list(alts)) for alts in table.choices.values()]
    source = presets.text_source(req.preset, req.option("text_encoder"),
                                 req.option("text_layers"), req.option("text_width"))
    if source is None:  # tiny: a from-scratch BERT on a vocabulary of the training reports
        cfg.bert = presets.tiny_text_bert(req.option("text_layers"), req.option("text_width"),
                                          cfg.last_n_layers)
        tokenizer = build_wordpiece(corpus, vocab_size=req.option("vocab_size"))
        cfg.bert["vocab_size"] = int(tokenizer.vocab_size)
        model = AFLocModel(cfg)
    else:  # refused unless its word pieces and layers are what AFLoc's text side reads
        bert, tokenizer = load_wordpiece_encoder(source, cfg.last_n_layers, cfg.word_num,
                                                 corpus[:TOKENIZER_PROBES])
        cfg.text_encoder = source
        cfg.bert = bert.config.to_dict()
        model = AFLocModel(cfg, bert=bert)
    if req.channels_last:
        model.img_encoder.use_channels_last()
    settings = {**preset_settings(req, PRESETS[req.preset]), "gamma": req.option("gamma"),
                "text_mode": text_mode, "levels": list(levels),
                "local_impl": req.option("local_impl"),
                "text_encoder": source or "from scratch",
                "text_size": presets.text_size(model.text_encoder.model.config),
                "paraphrases": ({**table.describe(), "source": table_source}
                                if table is not None else None)}
    info = {"model": cfg.to_json(), "text_mode": text_mode, "levels": list(levels),
            "image_weights": model.img_encoder.weights_note, "val_split": data.split("val"),
            "pre_frame": recipe.describe(),
            "pairs": {"train": len(train_pairs.sentences),
                      "val": len(val_pairs.sentences) if val_pairs else 0,
                      "skipped": train_pairs.skipped}}
    task = AFLocTrainTask(model, tokenizer, train_pairs, val_pairs, settings["batch_size"],
                          seed=req.seed, num_workers=req.workers, lr=settings["lr"],
                          gamma=settings["gamma"], local_impl=settings["local_impl"],
                          compile_losses=req.compile, paraphrases=table, info=info)
    return task, settings
