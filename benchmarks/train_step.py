"""AFLoc training-step benchmark: encoders alone vs the full multi-level step, the local losses
(per-caption loop vs one batched einsum vs that under torch.compile vs the GEMM layout with a
hand-written backward, eager and with compiled element-wise steps: `bench train --local-impl`),
pairs/s, the projected pretraining time (about 249k pairs x 5 epochs), and heatmap inference
throughput (batch 256).

Random weights and random data only (no downloads): ``--preset paper`` is ResNet-50 +
a randomly initialised BERT-base (Bio_ClinicalBERT's vocabulary size), D = 768, 224 -> 299,
97 tokens; ``--preset tiny`` is the CPU test model. Train steps run the image backbone
channels-last, as ``bench train`` does (``--no-channels-last``: NCHW, as before). Needs only
torch, torchvision, numpy and transformers, and the project installed without its dependencies
(``pip install --no-deps --no-build-isolation -e .``): the AFLoc modules import nothing else.

    python benchmarks/train_step.py --preset paper --device cuda
    python benchmarks/train_step.py --preset tiny --device cpu
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
PAIRS_PER_EPOCH = 249_000  # about the frontal MIMIC-CXR training pairs
EPOCHS = 5


def load_afloc():
    """The AFLoc model, loss, text and preset modules: they import torch, torchvision, numpy and
    transformers only (tests/test_method_platform.py checks it), so the project installed with
    ``pip install --no-deps --no-build-isolation -e .`` is enough on a GPU box."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return [importlib.import_module(m) for m in (
        "bench.methods.afloc.model", "bench.methods._shared.contrastive",
        "bench.methods._shared.bert_text", "bench.methods.afloc.presets")]


M, L, T, P = load_afloc()


# -- random inputs ---------------------------------------------------------------------------

def caption_tokens(n_words: int, n_sent: int, word_num: int) -> list[str]:
    """[CLS] w w . w w . ... [SEP] [PAD]...: n_sent sentences of about n_words words in all."""
    per = max(1, n_words // n_sent)
    toks = ["[CLS]"]
    for s in range(n_sent):
        toks += [f"w{s}{i}" for i in range(per)]
        if s < n_sent - 1:
            toks.append(".")
    toks.append("[SEP]")
    toks = toks[:word_num - 1] + (["[SEP]"] if len(toks) > word_num else [])
    return toks + ["[PAD]"] * (word_num - len(toks))


def random_text(b: int, vocab: int, word_num: int, device, n_words=42, n_sent=6):
    rows = [T.layout_one(caption_tokens(n_words, n_sent, word_num), "faithful") for _ in range(b)]
    ids = torch.randint(5, vocab, (b, word_num))
    att = torch.tensor([[w != "[PAD]" for w in r["words"]] for r in rows], dtype=torch.long)
    return T.TextBatch(
        input_ids=ids, attention_mask=att, token_type_ids=torch.zeros_like(ids),
        word_index=torch.tensor([r["word_index"] for r in rows]),
        sent_index=torch.tensor([r["sent_index"] for r in rows]),
        word_mask=torch.tensor([r["word_mask"] for r in rows]),
        sent_mask=torch.tensor([r["sent_mask"] for r in rows]),
        words=[r["words"] for r in rows]).to(device)


def build_model(preset: str, device) -> M.AFLocModel:
    cfg = P.preset_config(preset)
    cfg.imagenet_weights = False
    if preset == "tiny":
        cfg.bert["vocab_size"] = 2000
    torch.manual_seed(0)
    return M.AFLocModel(cfg).to(device)


# -- timing -----------------------------------------------------------------------------------

def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, warmup: int, iters: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def autocast(device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16"
                          else torch.float16)


def train_step_fn(model, images, text, opt, device, precision, full: bool):
    def step():
        with autocast(device, precision):
            enc = model(images, text)
            if full:
                loss = model.loss(enc)["loss"]
            else:  # encoders only: touch every output so backward covers the same graph
                loss = sum(v.float().pow(2).mean() for v in enc["img"].values())
                loss = loss + sum(v.float().pow(2).mean() for v in enc["txt"].values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
    return step


def local_inputs(b: int, d: int, hw: int, word_num: int, device):
    """Seeded random region [b, d, hw, hw] and word [b, d, word_num] embeddings (leaf tensors
    with grad), the same for every kind of local loss timed on them."""
    g = torch.Generator(device="cpu").manual_seed(0)
    img = (torch.randn(b, d, hw, hw, generator=g) * 0.05).to(device).requires_grad_()
    words = (torch.randn(b, d, word_num, generator=g) * 0.5).to(device).requires_grad_()
    return img, words


def mixed_length_mask(mask: torch.Tensor) -> torch.Tensor:
    """Keep the first round(q * ((k + 0.5) / B) ** 2) units of caption k's mask (q = its
    length): lengths from about 0 to q, mean q / 3, spread as report lengths are."""
    b = mask.shape[0]
    out = torch.zeros_like(mask)
    for k in range(b):
        idx = mask[k].nonzero().flatten()
        keep = max(1, round(len(idx) * ((k + 0.5) / b) ** 2))
        out[k, idx[:keep]] = True
    return out


def local_loss_fn(kind: str, img, words, mask, device, precision):
    def run():
        with autocast(device, precision):
            if kind == "loop":
                s = L.local_similarity_loop(img, words, mask)
            else:
                s = L.local_similarity(img, words, mask)
            loss = sum(L.contrastive(s.float(), 10.0))
        loss.backward()
        return loss
    return run


def gaussian_torch(maps: torch.Tensor, sigma: float = 1.5, truncate: float = 4.0):
    """scipy.ndimage.gaussian_filter (mode 'reflect' = half-sample symmetric) on [B, h, w]."""
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, device=maps.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    h, w = maps.shape[-2:]

    def sym(n):
        idx = torch.arange(-r, n + r, device=maps.device)
        period = 2 * n
        idx = idx % period
        return torch.where(idx >= n, period - 1 - idx, idx)

    m = maps.float()[:, None]
    m = m[..., sym(h), :]
    m = F.conv2d(m, k.view(1, 1, -1, 1))
    m = m[..., sym(w)]
    m = F.conv2d(m, k.view(1, 1, 1, -1))
    return m[:, 0]


def heatmap_fn(model, images, query, device, precision):
    @torch.no_grad()
    def run():
        with autocast(device, precision):
            local = model.img_encoder(images, need_global=False, need_words=False)["local"]
        grid = torch.einsum("bdhw,d->bhw", local.float(), query)
        maps = gaussian_torch(grid)
        return F.interpolate(maps[:, None], size=(224, 224), mode="bilinear",
                             align_corners=False)
    return run


# -- main -------------------------------------------------------------------------------------

# (row label, losses.local_impl implementation, compiled); "loop" is the official structure
# (it never calls local_similarity, so its implementation is moot)
LOSS_VARIANTS = (("loop", "einsum", False), ("batched", "einsum", False),
                 ("compiled", "einsum", True), ("gemm", "gemm", False),
                 ("gemm compiled", "gemm", True))
FULL_STEP_VARIANTS = (("compiled losses", "einsum", True), ("gemm losses", "gemm", False),
                      ("gemm compiled losses", "gemm", True))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=["paper", "tiny"], default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="paper 128, tiny 16")
    ap.add_argument("--heatmap-batch", type=int, default=None, help="paper 256, tiny 32")
    ap.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-channels-last", action="store_true",
                    help="Train steps with the backbone in NCHW (bench train --no-channels-last)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    paper = args.preset == "paper"
    b = args.batch_size or (128 if paper else 16)
    hb = args.heatmap_batch or (256 if paper else 32)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    iters = args.iters or (5 if device.type == "cuda" else 3)
    warm = 2 if device.type == "cuda" else 1
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    rows: list[tuple[str, str, str]] = []
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    amp = "no autocast (fp32)" if precision == "fp32" else f"{precision} autocast"
    layout = ("NCHW (bench train --no-channels-last)" if args.no_channels_last
              else "NHWC (channels_last, bench train's default)")
    print(f"# AFLoc train step, preset {args.preset}, {dev_name}, torch {torch.__version__}, "
          f"{amp}, B={b}, training backbone {layout}, random weights and data")

    model = build_model(args.preset, device)
    model.img_encoder.use_channels_last(not args.no_channels_last)
    cfg = model.cfg
    d = model.text_encoder.dim
    images = torch.randn(b, 3, 224, 224, device=device)
    text = random_text(b, cfg.bert["vocab_size"], cfg.word_num, device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-5, betas=(0.5, 0.999), weight_decay=1e-6)
    model.train()
    t_enc = timeit(train_step_fn(model, images, text, opt, device, precision, False), device,
                   warm, iters)
    rows.append(("encoder-only step (fwd+bwd+Adam)", f"{t_enc * 1e3:.1f} ms",
                 f"{b / t_enc:.1f} pairs/s"))
    t_full = timeit(train_step_fn(model, images, text, opt, device, precision, True), device,
                    warm, iters)
    rows.append(("full AFLoc step, batched losses", f"{t_full * 1e3:.1f} ms",
                 f"{b / t_full:.1f} pairs/s ({t_enc / t_full:.0%} of encoders)"))
    t_best = t_full
    # the same loss computed other ways (losses.local_impl): einsum compiled, GEMM layout with a
    # hand-written backward (eager, and with its element-wise steps compiled)
    for label, impl, compiled in FULL_STEP_VARIANTS:
        if compiled and args.no_compile:
            continue
        try:
            with L.local_impl(impl, compiled):
                t_v = timeit(train_step_fn(model, images, text, opt, device, precision, True),
                             device, warm + (1 if compiled else 0), iters)
        except Exception as exc:  # no triton / compiler: report and go on
            rows.append((f"full AFLoc step, {label}", "n/a", type(exc).__name__))
            continue
        rows.append((f"full AFLoc step, {label}", f"{t_v * 1e3:.1f} ms",
                     f"{b / t_v:.1f} pairs/s ({t_enc / t_v:.0%} of encoders)"))
        t_best = min(t_best, t_v)

    # local losses alone on embeddings of the paper's shapes
    with torch.no_grad():
        enc = model(images[:1], text.select([0]))
    h2, h3 = enc["img"]["local2"].shape[-1], enc["img"]["local"].shape[-1]
    loss_totals: dict[str, float] = {}
    for level, hw, mask in (("word", h2, text.word_mask), ("sentence", h3, text.sent_mask)):
        q = int(mask.sum(1).max())
        img, words = local_inputs(b, d, hw, cfg.word_num, device)
        label = f"{level} level ({q} units x {hw * hw} regions)"
        ref = None
        for kind, impl, compiled in LOSS_VARIANTS:
            if compiled and args.no_compile:
                continue
            fn = local_loss_fn(kind, img, words, mask, device, precision)
            try:
                with L.local_impl(impl, compiled):
                    t = timeit(fn, device, warm + (1 if compiled else 0), iters)
                    val = float(fn().detach())
            except Exception as exc:
                rows.append((f"{label}, {kind}", "n/a", type(exc).__name__))
                continue
            if kind == "loop":
                with torch.no_grad():  # fp32 oracle value
                    ref = float(sum(L.contrastive(L.local_similarity_loop(
                        img.float(), words.float(), mask), 10.0)))
            loss_totals[kind] = loss_totals.get(kind, 0.0) + t
            note = f"loss {val:.4f}" + (f", |d| vs fp32 loop {abs(val - ref):.1e}"
                                        if ref is not None else "")
            rows.append((f"{label}, {kind}", f"{t * 1e3:.1f} ms", note))
    for kind, t in loss_totals.items():
        rows.append((f"both local losses, {kind}", f"{t * 1e3:.1f} ms", "fwd+bwd"))

    # real captions vary in length (MIMIC: a handful to 60+ words); the batched loss sorts them
    # into chunks padded to their own longest, the loop pays for each caption's own length
    for level, hw, mask in (("word", h2, text.word_mask), ("sentence", h3, text.sent_mask)):
        mixed = mixed_length_mask(mask)
        img, words = local_inputs(b, d, hw, cfg.word_num, device)
        n = mixed.sum(1).float()
        label = (f"{level} level, mixed lengths (mean {n.mean():.1f}, max {int(n.max())} units)")
        for kind, impl, compiled in LOSS_VARIANTS:
            if compiled and (args.no_compile or device.type == "cpu"):
                continue  # CPU: one more compile per chunk width, minutes for a table row
            try:
                with L.local_impl(impl, compiled):
                    t = timeit(local_loss_fn(kind, img, words, mixed, device, precision),
                               device, warm + (1 if compiled else 0), iters)
            except Exception as exc:
                rows.append((f"{label}, {kind}", "n/a", type(exc).__name__))
                continue
            rows.append((f"{label}, {kind}", f"{t * 1e3:.1f} ms", "fwd+bwd"))

    hours = PAIRS_PER_EPOCH * EPOCHS / (b / t_best) / 3600
    rows.append(("projected pretraining (249k pairs x 5 epochs)", f"{hours:.2f} h",
                 f"at {b / t_best:.1f} pairs/s, one {dev_name}"))

    model.eval()
    model.img_encoder.use_channels_last(False)  # as `bench run` computes heatmaps
    himg = torch.randn(hb, 3, 224, 224, device=device)
    query = torch.randn(d, device=device)
    t_h = timeit(heatmap_fn(model, himg, query, device, precision), device, warm, iters)
    rows.append((f"heatmap inference (batch {hb}, layer3 . query, gaussian, 224)",
                 f"{t_h * 1e3:.1f} ms", f"{hb / t_h:.1f} images/s"))

    w = max(len(r[0]) for r in rows)
    print(f"| {'measurement'.ljust(w)} | time | throughput / note |")
    print(f"|{'-' * (w + 2)}|------|-------------------|")
    for name, t, note in rows:
        print(f"| {name.ljust(w)} | {t} | {note} |")
    if device.type == "cuda":
        print(f"# peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    if not math.isfinite(t_full):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
