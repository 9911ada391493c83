"""Inference throughput of every registered method with a model: images/s for `localize` (one
query per image) and `classify` (one pathology: its whole prompt set), random weights, random
512 x 512 images, one table row per (method, batch size).

`--preset paper` builds the paper-size models with random weights and nothing downloaded:
AFLoc, GLoRIA and ConVIRT (ResNet-50 and a BERT-base width text encoder; RoBERTa-base for
ConVIRT) with a WordPiece tokenizer made here; BioViL (ResNet-50, CXR-BERT of BERT-base size)
from a CXR-BERT folder made here (config.json + vocab.txt); CheXzero (open_clip ViT-B/32);
MedKLIP (ResNet-50 + its decoder) with a randomly initialised BERT-base saved here as its text
encoder (Bio_ClinicalBERT's size); the classifier and the CAMs over it from a random
DenseNet-121 at 320 saved in `bench train classifier`'s format; RD++ and ReContrast from random
WRN50-2 networks saved in `bench train`'s formats. `--preset tiny` is each method's tiny model
(the classifier, CAMs and anomaly methods: their no-checkpoint random tiny networks).

Each method is built once; each batch size of `--batch` sets its batch-size option
(`batch_size`, read into the method's `batch_size` at build time) before its row is timed. A
row times one warm-up pass and `--repeats` timed passes of `--n` images (default: the batch
size) for each capability, every pass on fresh sample ids so no image features or maps are
reused (the query and prompt embeddings are, as in a run). On CUDA the timings synchronise the
device and each row reports `torch.cuda.max_memory_allocated`. A method that cannot be built or
run says why in its row. Times on a shared CPU are noisy: compare methods within one run; take
absolute times from a GPU.

    python benchmarks/inference_speed.py --methods afloc,gloria,convirt --preset tiny
    python benchmarks/inference_speed.py --methods all --preset paper --device cuda \\
        --batch 64,256 --json results/inference.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT))

from bench.registry import get_method  # noqa: E402
from bench.types import Query, Sample  # noqa: E402

# every registered method with a model, in the order the table prints them (the baselines
# random / center / oracle / human have none to time)
MODEL_METHODS = ("afloc", "gloria", "convirt", "biovil", "chexzero", "medklip", "classifier",
                 "gradcam", "gradcampp", "eigencam", "rdpp", "recontrast")
CAMS = ("gradcam", "gradcampp", "eigencam")
ANOMALY = ("rdpp", "recontrast")
TEXT_CORPUS = ["findings suggesting pneumonia opacity consolidation effusion edema there is no "
               "evidence of acute cardiopulmonary process"]


def samples(n: int, size: int = 512, tag: str = "") -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(f"{tag}s{i}", rng.integers(0, 256, (size, size), dtype=np.uint8),
                   meta={"path": f"s{i}.png"}) for i in range(n)]


class RandomWeights:
    """The files a paper-size random model is built from, made once each in `root`: nothing is
    downloaded, every weight is a seeded random initialisation."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._made: dict[str, str] = {}

    def _once(self, key: str, make) -> str:
        if key not in self._made:
            path = self.root / key
            torch.manual_seed(0)
            make(path)
            self._made[key] = str(path)
        return self._made[key]

    def wordpiece(self) -> str:
        """A WordPiece tokenizer folder (AFLoc, GLoRIA, ConVIRT: the paper preset reads only
        the tokenizer and builds its text encoder from the preset's config)."""
        from bench.methods._shared.encoders import build_wordpiece

        return self._once("wordpiece", lambda p: build_wordpiece(
            TEXT_CORPUS, 300).save_pretrained(str(p)))

    def cxr_bert(self) -> str:
        """A CXR-BERT folder for BioViL's paper preset: config.json of
        BiomedVLP-CXR-BERT-specialized's size (BERT-base, projection 128) and a vocab.txt."""
        def make(p: Path) -> None:
            from bench.methods._shared.encoders import build_wordpiece

            tok = build_wordpiece(TEXT_CORPUS, 300)
            tok.save_pretrained(str(p))
            vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
            (p / "vocab.txt").write_text("".join(f"{w}\n" for w, _ in vocab))
            cfg = {"architectures": ["CXRBertModel"], "model_type": "cxr-bert",
                   "attention_probs_dropout_prob": 0.25, "hidden_act": "gelu",
                   "hidden_dropout_prob": 0.25, "hidden_size": 768, "initializer_range": 0.02,
                   "intermediate_size": 3072, "layer_norm_eps": 1e-12,
                   "max_position_embeddings": 512, "num_attention_heads": 12,
                   "num_hidden_layers": 12, "pad_token_id": 0, "projection_size": 128,
                   "type_vocab_size": 2, "vocab_size": 30522}
            (p / "config.json").write_text(json.dumps(cfg))

        return self._once("cxr-bert", make)

    def bert_base(self) -> str:
        """A randomly initialised BERT-base (Bio_ClinicalBERT's size: vocabulary 28996) saved
        with its tokenizer, for MedKLIP's paper preset (which embeds its queries with it)."""
        def make(p: Path) -> None:
            from transformers import BertConfig, BertModel

            from bench.methods._shared.encoders import build_wordpiece

            build_wordpiece(TEXT_CORPUS, 300).save_pretrained(str(p))
            BertModel(BertConfig(vocab_size=28996)).save_pretrained(str(p))

        return self._once("bert-base", make)

    def classifier(self) -> str:
        """A random DenseNet-121 at 320 (CheXlocalize's classifier) in `bench train
        classifier`'s safetensors format, with the 14 CheXpert labels."""
        def make(p: Path) -> None:
            from bench.datasets.mimic_cxr import CHEXPERT_LABELS
            from bench.methods.classifier.checkpoint import save_weights
            from bench.methods.classifier.model import Classifier, ClassifierConfig

            cfg = ClassifierConfig(arch="densenet121", pathologies=list(CHEXPERT_LABELS),
                                   size=320, imagenet_weights=False, preset="paper",
                                   source="random init (benchmarks/inference_speed.py)")
            save_weights(p, Classifier(cfg))

        return self._once("classifier.safetensors", make)

    def anomaly(self, name: str) -> str:
        """A random paper network (WRN50-2 teacher/encoder at 256) in `bench train NAME`'s
        safetensors format."""
        def make(p: Path) -> None:
            if name == "rdpp":
                from bench.methods.rdpp import train as t

                t.save_weights(p, t.RDPP(t.network_config("paper")))
            else:
                from bench.methods.recontrast import train as t

                t.save_weights(p, t.ReContrastNet(t.network_config("paper")))

        return self._once(f"{name}.safetensors", make)


def method_args(name: str, preset: str, files: RandomWeights, batch: int
                ) -> tuple[str | None, dict[str, Any]]:
    """(checkpoint, options) that build `name` at `preset` with random weights."""
    paper = preset == "paper"
    if name in ("afloc", "gloria", "convirt", "biovil", "chexzero", "medklip"):
        opts: dict[str, Any] = {"preset": preset}
        if paper and name in ("afloc", "gloria", "convirt"):
            opts["text_encoder"] = files.wordpiece()
        elif paper and name == "biovil":
            opts["text_encoder"] = files.cxr_bert()
        elif paper and name == "medklip":
            opts["text_encoder"] = files.bert_base()
        ckpt = None
    elif name == "classifier" or name in CAMS:
        opts, ckpt = {}, (files.classifier() if paper else None)
    elif name in ANOMALY:
        opts, ckpt = {}, (files.anomaly(name) if paper else None)
    else:
        raise ValueError(f"{name}: no model to time (methods with one: "
                         f"{', '.join(MODEL_METHODS)})")
    opts["batch_size"] = batch
    return ckpt, opts


def build(name: str, preset: str, device: str, files: RandomWeights | str, batch: int):
    """The method built at `preset` with random weights (`files`: a RandomWeights, or, as
    before, the folder of a WordPiece tokenizer for AFLoc, GLoRIA and ConVIRT)."""
    cls = get_method(name)
    if isinstance(files, (str, Path)):  # the old call: build(name, preset, device, tok, batch)
        opts = {"preset": preset, "text_encoder": str(files) if preset == "paper" else None,
                "batch_size": batch}
        opts = {k: v for k, v in opts.items() if k in cls.option_specs and v is not None}
        return cls(device=device, **opts)
    ckpt, opts = method_args(name, preset, files, batch)
    opts = {k: v for k, v in opts.items() if k in cls.option_specs}
    return cls(ckpt, device=device, **opts)


def set_batch(m, batch: int) -> bool:
    """Set the built method's batch-size option (what its constructor reads it into)."""
    if "batch_size" not in m.option_specs or not hasattr(m, "batch_size"):
        return False
    m.options["batch_size"] = batch
    m.batch_size = int(batch)
    return True


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def rate(fn, n: int, repeats: int, device: str | None = None) -> float:
    """Images/s of `fn(pass_index)` over `repeats` timed passes of `n` images, after one
    warm-up pass (which also fills the query / prompt cache)."""
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    call = fn if fn.__code__.co_argcount else (lambda _i: fn())
    call(0)
    sync(dev)
    t0 = time.perf_counter()
    for i in range(repeats):
        call(i + 1)
    sync(dev)
    return n * repeats / (time.perf_counter() - t0)


PASSES = itertools.count()


def fresh(data: list[Sample], tag: str) -> list[Sample]:
    """The same images under ids never used before in this process: no method cache
    (features, maps, scores) keyed by id carries over from one pass or row to the next."""
    tag = f"{tag}{next(PASSES)}-"
    return [dataclasses.replace(s, id=f"{tag}{s.id}") for s in data]


def measure(m, data: list[Sample], queries: list[list[Query]], pathology: str, n: int,
            repeats: int, device: str | None = None, what: tuple[str, ...] = ("localize",
                                                                            "classify"),
            ) -> tuple[float | None, float | None]:
    """(localize, classify) images/s, with no image features kept from one pass to the next;
    None for what is not asked."""
    def localize(i: int) -> None:
        m.bind(None, "afloc")
        m.localize(fresh(data, "l"), queries)

    def classify(i: int) -> None:
        m.bind(None, "afloc")
        m.classify(fresh(data, "c"), [pathology])

    return (rate(localize, n, repeats, device) if "localize" in what else None,
            rate(classify, n, repeats, device) if "classify" in what else None)


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


def free(device: str) -> None:
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def time_method(name: str, args, files: RandomWeights, batches: list[int]) -> list[dict]:
    """One row per batch size for `name` (a row with a note where it cannot be built or run)."""
    cuda = args.device.startswith("cuda")
    base = {"method": name, "preset": args.preset, "device": args.device}
    try:
        cls = get_method(name)
        caps = cls.capabilities
    except Exception as exc:
        return [yield_row({**base, "batch": b, "note": f"not registered: {error_text(exc)}"},
                          args) for b in batches]
    what = tuple(k for k in ("localize", "classify") if getattr(caps, k))
    if cuda:
        free(args.device)
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        m = build(name, args.preset, args.device, files, batches[0])
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        return [yield_row({**base, "batch": b, "note": f"cannot build: {error_text(exc)}"},
                          args) for b in batches]
    build_s = time.perf_counter() - t0
    rows = []
    try:
        for b in batches:
            n = args.n or b
            data = samples(n, args.size)
            queries = [[Query("q", args.pathology, args.query)]] * n
            row: dict[str, Any] = {**base, "batch": b, "images": n, "build_s": round(build_s, 2)}
            notes = []
            if not set_batch(m, b):
                notes.append("no batch-size option")
            if cuda:
                free(args.device)
                torch.cuda.reset_peak_memory_stats()
            for kind in what:
                failed = False
                try:
                    loc, cl = measure(m, data, queries, args.pathology, n, args.repeats,
                                      args.device, (kind,))
                    row[f"{kind}_img_s"] = round(loc if kind == "localize" else cl, 3)
                except Exception as exc:  # CUDA out of memory at a large batch, say
                    if args.verbose:
                        traceback.print_exc()
                    notes.append(f"{kind}: {error_text(exc)}")
                    failed = True
                if failed:  # outside the handler: the traceback's frames are released
                    free(args.device)
            if cuda:
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if notes:
                row["note"] = "; ".join(notes)
            rows.append(yield_row(row, args))
    finally:
        try:
            m.close()
        except Exception:
            pass
        del m
        free(args.device)
    return rows


def fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def header(args) -> str:
    return (f"{'method':10} {'preset':6} {'batch':>5} {'images':>6} {'localize img/s':>14} "
            f"{'classify img/s':>14} {'peak GiB':>8} {'build s':>7}  note")


def line(row: dict) -> str:
    return (f"{row['method']:10} {row['preset']:6} {row['batch']:>5} "
            f"{fmt(row.get('images'), 'd'):>6} {fmt(row.get('localize_img_s'), '.1f'):>14} "
            f"{fmt(row.get('classify_img_s'), '.1f'):>14} {fmt(row.get('peak_gib'), '.2f'):>8} "
            f"{fmt(row.get('build_s'), '.1f'):>7}  {row.get('note', '')}")


def yield_row(row: dict, args) -> dict:
    """Print the row as soon as it is measured and rewrite the JSON file (a timeout keeps what
    was measured)."""
    print(line(row), flush=True)
    args._rows.append(row)
    if args.json:
        write_json(args)
    return row


def write_json(args) -> None:
    dev = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
           and torch.cuda.is_available() else "CPU")
    out = {"device": dev, "torch": torch.__version__, "preset": args.preset,
           "image_size": args.size, "repeats": args.repeats, "threads": torch.get_num_threads(),
           "rows": args._rows}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)


def quiet_hub() -> None:
    """No progress bars or load reports from transformers (the random folders made here)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:
        pass


def parse_methods(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    out: list[str] = []
    for x in names:
        for name in (MODEL_METHODS if x == "all" else (x,)):
            if name not in out:
                out.append(name)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="afloc,gloria,convirt",
                    help=f"comma list, or all ({','.join(MODEL_METHODS)})")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", "--images", dest="n", type=int, default=None,
                    help="images per timed pass (default: the batch size)")
    ap.add_argument("--batch", default="32", help="batch sizes, comma list (e.g. 64,256)")
    ap.add_argument("--size", type=int, default=512, help="side of the random images")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pathology", default="Pneumonia")
    ap.add_argument("--query", default="Findings suggesting pneumonia.")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument("--verbose", action="store_true", help="tracebacks of failed rows")
    args = ap.parse_args(argv)
    args._rows = []
    quiet_hub()
    batches = [int(b) for b in str(args.batch).split(",") if b.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    dev = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
           and torch.cuda.is_available() else f"{args.device}")
    print(f"{args.preset} models, random weights, images of {args.size} x {args.size}, "
          f"batches {','.join(map(str, batches))}, on {dev} ({torch.get_num_threads()} threads, "
          f"torch {torch.__version__}); 1 warm-up + {args.repeats} timed passes", flush=True)
    print(header(args), flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="inference-speed-") as tmp:
        files = RandomWeights(tmp)
        for name in parse_methods(args.methods):
            rows += time_method(name, args, files, batches)
    if args.json:
        write_json(args)
        print(f"# rows written to {args.json}")
    return rows


if __name__ == "__main__":
    main()
