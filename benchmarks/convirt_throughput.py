"""ConVIRT inference throughput (images/s), localize and classify, through the method.

Usage: python benchmarks/convirt_throughput.py [--presets tiny,paper] [--n 64] [--batch-size 16]
       [--threads 2] [--device cpu] [--side 512]

Each preset is built as `bench run` builds it without a checkpoint (``tiny``: small ResNet + 4-layer
BERT of width 64; ``paper``: ResNet-50 + RoBERTa-base, 768-d projections, its tokenizer and config
written to a temporary folder here, nothing downloaded). The images are `--side` x `--side` grey
arrays (the synthetic world's size), so the timing includes the Resize((224, 224)) recipe.
``localize``: one query per image (texts embedded once, as the evaluator's cache does);
``classify``: five pathologies (prompts embedded once). Each path is timed on images it has not
seen (the method shares one forward pass between the two purposes of the same batch), after one
warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PATHOLOGIES = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
QUERIES = ["Opacity in the left lower lung.", "Large right pneumothorax.",
           "Small right pleural effusion.", "Cardiomegaly."]
ROBERTA_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "max_position_embeddings": 514, "type_vocab_size": 1,
                "vocab_size": 50265, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                "layer_norm_eps": 1e-5}


def roberta_folder(path: Path) -> Path:
    """roberta-base's config and a byte-level BPE tokenizer (256 byte symbols), offline."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaConfig, RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(c, len(vocab))
    vocab["<mask>"] = len(vocab)
    RobertaTokenizer(vocab=vocab, merges=[]).save_pretrained(path)
    RobertaConfig(**ROBERTA_BASE).save_pretrained(path)
    return path


def samples(n: int, side: int, offset: int) -> list:
    from bench.types import Sample

    rng = np.random.default_rng(offset)
    return [Sample(id=f"bench-{offset + i}", image=rng.integers(0, 256, (side, side),
                                                               dtype=np.uint8))
            for i in range(n)]


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def measure(preset: str, a: argparse.Namespace, folder: Path) -> dict:
    from bench.methods.convirt.method import ConVIRTMethod
    from bench.types import Query

    m = ConVIRTMethod(preset=preset, batch_size=a.batch_size, device=a.device,
                      text_encoder=str(folder) if preset == "paper" else None)
    n_params = sum(p.numel() for p in m.model.parameters())

    def localize(batch):
        qs = [[Query("q", "x", QUERIES[i % len(QUERIES)])] for i in range(len(batch))]
        return m.localize(batch, qs)

    warm = samples(a.batch_size, a.side, 10_000)
    localize(warm)
    m.classify(samples(a.batch_size, a.side, 20_000), PATHOLOGIES)
    loc = samples(a.n, a.side, 0)
    cls = samples(a.n, a.side, 50_000)
    out = {"preset": preset, "params": n_params,
           "localize_img_s": timed(lambda: localize(loc), a.n),
           "classify_img_s": timed(lambda: m.classify(cls, PATHOLOGIES), a.n)}
    m.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,paper")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    with tempfile.TemporaryDirectory() as d, torch.inference_mode():
        folder = roberta_folder(Path(d) / "roberta")
        for preset in a.presets.split(","):
            rows.append(measure(preset.strip(), a, folder))
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"ConVIRT inference, random weights, {a.side}x{a.side} grey inputs, n={a.n}, "
          f"batch {a.batch_size}, device {a.device}, {torch.get_num_threads()} threads "
          f"(cpus={os.cpu_count()}), torch {torch.__version__}, python {sys.version.split()[0]}")
    print(f"{'preset':8s} {'params':>12s} {'localize img/s':>15s} {'classify img/s':>15s}")
    for r in rows:
        print(f"{r['preset']:8s} {r['params']:12,d} {r['localize_img_s']:15.1f} "
              f"{r['classify_img_s']:15.1f}")


if __name__ == "__main__":
    main()
