"""Small in-memory pairs for the AFLoc tests (labelled synthetic)."""

from __future__ import annotations

import numpy as np

from bench.methods._shared.bert_text import TextProcessor, full_caption
from bench.methods._shared.encoders import build_wordpiece
from bench.methods.afloc import presets
from bench.methods.afloc.model import AFLocModel
from bench.types import Sample

REPORTS = [
    "Opacity in the left lower lung. No pleural effusion. Heart size is normal.",
    "Opacity in the right upper lung. Small pleural effusion on the right side.",
    "Lungs are clear. No pneumothorax. Cardiomediastinal silhouette is normal.",
    "Large right pneumothorax. Mild cardiomegaly is present today.",
]


def synthetic_sample(i: int, h: int = 72, w: int = 60) -> Sample:
    """A labelled-synthetic image: dark noise with a bright blob on the side the report says."""
    rng = np.random.default_rng(i)
    img = (rng.random((h, w)) * 60).astype(np.uint8)
    side = i % 2
    x0 = 5 if side == 0 else w - 25
    img[15:45, x0:x0 + 20] = 240
    return Sample(id=f"synthetic-{i}", image=img, report=REPORTS[i % len(REPORTS)],
                  meta={"view": "PA", "synthetic": True})


class PairsDataset:
    """Duck-typed adapter: `len` and `load(i)` like a registered dataset."""

    name = "synthetic-test-pairs"
    splits = ("train", "validate")

    def __init__(self, root=None, split="train", n: int = 24, **_):
        self.offset = 0 if split == "train" else 1000
        self.n = n if split == "train" else 8

    def __len__(self) -> int:
        return self.n

    def load(self, i: int) -> Sample:
        return synthetic_sample(self.offset + i)


def tiny_model(levels=("word", "sentence", "report"), text_mode="faithful", word_num=32,
               seed=0, input_size=112):
    """The tiny preset, run at a 112 internal size to keep the tests fast on 2 CPU cores."""
    import torch

    tok = build_wordpiece(REPORTS * 3, 200)
    cfg = presets.preset_config("tiny", tuple(levels), text_mode)
    cfg.bert["vocab_size"] = tok.vocab_size
    cfg.word_num = word_num
    cfg.input_size = input_size
    torch.manual_seed(seed)
    return AFLocModel(cfg), tok


def tiny_batch(tok, n=4, text_mode="faithful", word_num=32):
    from bench.imaging.recipes import to_tensor
    from bench.methods._shared.bert_text import clean_report
    from bench.methods.afloc.imaging import TRAIN_PREFRAMES

    samples = [synthetic_sample(i) for i in range(n)]
    frames = [TRAIN_PREFRAMES["corrected"].pixels(s) for s in samples]
    caps = [full_caption(clean_report(s.report, text_mode)) for s in samples]
    return to_tensor(frames), TextProcessor(tok, text_mode, word_num).encode(caps)


def run_trained(method: str, checkpoint, tmp_path, capsys) -> dict:
    """`bench run` of a trained checkpoint on a few `shapes` images (both tasks must run);
    the localization run's run.json `method_info`."""
    import json

    from bench.cli.main import main as bench_main

    code = 0
    try:
        bench_main(["run", "--methods", method, "--method-arg",
                    f"{method}.checkpoint={checkpoint}", "--datasets", "shapes",
                    "--dataset-arg", "n=6", "--bootstrap", "20", "--results-dir",
                    str(tmp_path / "results"), "--json", "--quiet"])
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    runs = {r["task"]: r for r in json.loads(captured.out)["runs"]}
    assert set(runs) == {"localization", "classification"}
    return json.loads((tmp_path / "results" / runs["localization"]["path"] / "run.json")
                      .read_text())["method_info"]
