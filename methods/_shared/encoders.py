"""Encoders the adapters share: CNN backbones with feature taps and offline ImageNet weights, and
Hugging Face text encoders and tokenizers loaded offline, with the two text operations the
GLoRIA lineage (GLoRIA, AFLoc) builds on: sums over the last hidden layers and subword-to-word
aggregation.

Nothing here downloads. ImageNet weights come from the local torchvision hub cache
(``$TORCH_HOME/hub/checkpoints``) when present, else the network stays randomly initialised and
the returned note says so; text encoders come from a local folder or the offline Hugging Face
cache, else a `CheckpointError` says how to provide them. Only torch, torchvision and
transformers are imported (``benchmarks/train_step.py`` runs on machines with nothing else).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bench.errors import CheckpointError, UsageError

# -- images ------------------------------------------------------------------------------------

CNN_ARCHS = ("resnet18", "resnet50", "resnet152", "wide_resnet50_2", "densenet121", "small")
# channels of layer1..layer4 (ResNet family) / of the final features (DenseNet)
STAGE_CHANNELS: dict[str, tuple[int, ...]] = {
    "resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048),
    "resnet152": (256, 512, 1024, 2048), "wide_resnet50_2": (256, 512, 1024, 2048),
    "densenet121": (1024,),
}
SMALL_WIDTHS = (16, 32, 64, 128)


def small_resnet(widths: tuple[int, ...] = SMALL_WIDTHS) -> nn.Module:
    """A ResNet with one BasicBlock per stage and the given widths (the tiny CPU presets)."""
    from torchvision.models.resnet import BasicBlock, conv1x1

    class SmallResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w0 = widths[0]
            self.conv1 = nn.Conv2d(3, w0, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w0)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            inplanes = w0
            for k, w in enumerate(widths):
                stride = 1 if k == 0 else 2
                down = None
                if stride != 1 or inplanes != w:
                    down = nn.Sequential(conv1x1(inplanes, w, stride), nn.BatchNorm2d(w))
                setattr(self, f"layer{k + 1}", nn.Sequential(BasicBlock(inplanes, w, stride,
                                                                        down)))
                inplanes = w
            self.fc = nn.Identity()

    return SmallResNet()


def build_cnn(arch: str, imagenet: bool = True,
              small_widths: tuple[int, ...] = SMALL_WIDTHS) -> tuple[nn.Module, str]:
    """(torchvision network, weights note); ImageNet weights from the local cache only."""
    if arch == "small":
        return small_resnet(tuple(small_widths)), "random init (small ResNet)"
    if arch not in CNN_ARCHS:
        raise ValueError(f"unknown image backbone {arch!r} (known: {', '.join(CNN_ARCHS)})")
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    return net, (load_imagenet(net, arch) if imagenet else "random init")


def stage_channels(arch: str, small_widths: tuple[int, ...] = SMALL_WIDTHS) -> tuple[int, ...]:
    return tuple(small_widths) if arch == "small" else STAGE_CHANNELS[arch]


def imagenet_file(arch: str) -> Path:
    """Where torchvision keeps the ImageNet weights of `arch` once downloaded."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def load_imagenet(net: nn.Module, arch: str) -> str:
    """ImageNet weights from the local torch hub cache only (never downloads)."""
    path = imagenet_file(arch)
    if not path.is_file():
        return f"random init (ImageNet weights {path.name} not in {path.parent})"
    state = torch.load(path, map_location="cpu", weights_only=True)
    if arch.startswith("densenet"):  # torchvision's own fix for the old key names
        state = _densenet_keys(state)
    net.load_state_dict(state)
    return f"ImageNet {path.name}"


def _densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """'norm.1' -> 'norm1' as torchvision's ``_load_state_dict`` renames the release's keys."""
    import re

    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|"
                         r"running_mean|running_var))$")
    out = {}
    for k, v in state.items():
        m = pattern.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


class NHWCBackbone(nn.Module):
    """An image encoder whose backbone (``self.model``) can run channels-last (NHWC): the same
    function in the layout oneDNN runs faster on CPU (the tiny preset's first conv, BatchNorm
    and max-pool take about 3x less time) and cuDNN's tensor-core kernels prefer. Checkpoints are
    saved contiguous, so the layout never reaches a file."""

    model: nn.Module

    @property
    def channels_last(self) -> bool:
        """Whether the backbone's weights are NHWC (read off its first convolution, so it
        cannot disagree with them)."""
        conv = next(m for m in self.model.modules() if isinstance(m, nn.Conv2d))
        return conv.weight.is_contiguous(memory_format=torch.channels_last)

    def use_channels_last(self, enabled: bool = True) -> NHWCBackbone:
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def in_layout(self, x: torch.Tensor) -> torch.Tensor:
        """`x` in the backbone's layout."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def feature_taps(net: nn.Module, x: torch.Tensor, taps: Collection[str]) -> dict[str, torch.Tensor]:
    """The outputs of the named children of `net` (of ``net.features`` for a DenseNet), run in
    order up to the deepest one asked for: ResNets' ``layer1..layer4`` after the stem, a
    DenseNet's ``denseblock1..4`` / ``norm5``. Later stages are never computed."""
    body = net.features if isinstance(getattr(net, "features", None), nn.Sequential) else net
    want = set(taps)
    out: dict[str, torch.Tensor] = {}
    for name, module in body.named_children():
        if not want - set(out):
            break
        x = module(x)
        if name in want:
            out[name] = x
    missing = want - set(out)
    if missing:
        raise ValueError(f"no child named {', '.join(sorted(missing))} in {type(net).__name__}")
    return out


# -- text --------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_BERT = {"vocab_size": 0, "hidden_size": 64, "num_hidden_layers": 4,
             "num_attention_heads": 2, "intermediate_size": 128,
             "max_position_embeddings": 128, "type_vocab_size": 2,
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
# the from-scratch BERT's attention head width and feed-forward ratio (TINY_BERT: 64 wide, 2 heads
# of 32, feed-forward 128); `tiny_bert` keeps both for other sizes
TINY_HEAD_WIDTH = 32
TINY_FFN_RATIO = 2
# BERT-base with Bio_ClinicalBERT's vocabulary size, for random-weight benchmarks
BERT_BASE = {"vocab_size": 28996, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072,
             "max_position_embeddings": 512, "type_vocab_size": 2}


def refuse_text_encoder_at_tiny(req: Any, method: str) -> None:
    """The peers' tiny presets train their text encoder from scratch on a WordPiece built from
    the reports; a --text-encoder there would be silently unused, so it is an error."""
    if req.preset == "tiny" and req.option("text_encoder"):
        raise UsageError(f"bench train {method}: --text-encoder is read by the paper preset; "
                         f"the tiny preset trains its text encoder from scratch")


def build_wordpiece(texts: Iterable[str], vocab_size: int = 2000) -> Any:
    """A lower-casing BERT WordPiece tokenizer for `texts` (returns BertTokenizerFast).

    The vocabulary is chosen deterministically (the ``tokenizers`` trainer breaks frequency
    ties differently from run to run): the special tokens, every character and its "##"
    continuation, then whole words by descending count (ties alphabetical) up to
    `vocab_size`; rarer words fall back to WordPiece character pieces.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    norm = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    # "." always: it separates the sentences of every training caption (". " joins)
    chars = sorted({c for w in counts for c in w} | {"."})
    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS + chars + ["##" + c for c in chars]:
        vocab.setdefault(tok, len(vocab))
    for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tokenizer_from_json(tok.to_str())


def tokenizer_from_json(text: str) -> Any:
    from tokenizers import Tokenizer
    from transformers import BertTokenizerFast

    return BertTokenizerFast(tokenizer_object=Tokenizer.from_str(text), unk_token="[UNK]",
                             sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                             mask_token="[MASK]")


def tokenizer_to_json(tokenizer: Any) -> str:
    return tokenizer.backend_tokenizer.to_str()


def load_pretrained_text(source: str) -> tuple[Any, Any]:
    """(base model, tokenizer) from a local folder or the offline Hugging Face cache; never
    remote code."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModel.from_pretrained(source, local_files_only=True,
                                          trust_remote_code=False)
    except Exception as exc:
        raise CheckpointError(
            f"text encoder {source!r} is not available offline: pass --text-encoder with a "
            f"local folder holding its config.json, weights and vocab, or put it in the "
            f"Hugging Face cache ({type(exc).__name__})") from exc
    if getattr(model, "pooler", None) is None and hasattr(model, "base_model"):
        model = model.base_model
    return model, tok


def tiny_bert(layers: int, width: int) -> dict[str, Any]:
    """`TINY_BERT` with `layers` layers of width `width`: heads of 32 (width / 32 of them) and a
    feed-forward of 2 x width, the proportions of the default 4 x 64, so only the size moves."""
    if layers < 1 or width < TINY_HEAD_WIDTH or width % TINY_HEAD_WIDTH:
        raise ValueError(f"a from-scratch BERT needs at least 1 layer and a width that is a "
                         f"multiple of {TINY_HEAD_WIDTH}; got {layers} x {width}")
    return {**TINY_BERT, "hidden_size": width, "num_hidden_layers": layers,
            "num_attention_heads": width // TINY_HEAD_WIDTH,
            "intermediate_size": TINY_FFN_RATIO * width}


# Text encoders a local folder may hold for the GLoRIA-lineage text side (word units from
# WordPiece pieces, "##" continuing a word, between [CLS] and [SEP]; the last layers' hidden
# states summed): bidirectional encoders whose base model takes those ids and returns every
# layer's states. RoBERTa, DeBERTa, ALBERT and XLM-R tokenizers mark word starts (BPE "Ġ",
# SentencePiece "▁") and use <s>/</s>, which the official word aggregation does not read;
# decoder language models (LLaVA-Med's Mistral) attend one way. Both are refused.
WORDPIECE_ENCODERS = ("bert", "distilbert", "electra")
WORDPIECE_SPECIALS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                      "unk_token": "[UNK]"}
PROBE_TEXT = "Lung opacity in the right lower lobe. No pneumothorax. 1. stable since 2010."


def wordpiece_problem(model: Any, tokenizer: Any, min_layers: int, max_tokens: int,
                      texts: Iterable[str] = (), reader: str = "AFLoc") -> str | None:
    """Why `model` + `tokenizer` cannot serve as `reader`'s (AFLoc's, GLoRIA's) text encoder
    exactly, or None.

    Besides the model type and the WordPiece layout: at least `min_layers` layers (the official
    sum of the last 4 hidden states, never reaching the embeddings), `max_tokens` positions (the
    97-token captions), and a tokenizer that the checkpoint's ``tokenizer.json`` (what `bench
    run` reloads it from) rebuilds to the same ids on `texts` and a probe."""
    import json

    cfg = model.config
    kind = getattr(cfg, "model_type", None)
    if kind not in WORDPIECE_ENCODERS:
        return (f"not a BERT-family encoder {reader}'s text side reads (supported model types: "
                f"{', '.join(WORDPIECE_ENCODERS)})")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "its tokenizer has no fast (tokenizers) backend to store in the checkpoint"
    spec = json.loads(backend.to_str())["model"]
    if spec.get("type") != "WordPiece" or spec.get("continuing_subword_prefix") != "##":
        return (f"its tokenizer is {spec.get('type')}, not WordPiece with '##' continuations "
                f"(the official word aggregation)")
    for attr, name in WORDPIECE_SPECIALS.items():
        if getattr(tokenizer, attr, None) != name:
            return f"its tokenizer's {attr} is {getattr(tokenizer, attr, None)!r}, not {name!r}"
    ids = tokenizer(PROBE_TEXT)["input_ids"]
    ends = tokenizer.convert_ids_to_tokens([ids[0], ids[-1]])
    if ends != ["[CLS]", "[SEP]"]:
        return f"its tokenizer wraps a caption in {ends}, not [CLS] ... [SEP]"
    layers = int(getattr(cfg, "num_hidden_layers", 0))
    if layers < min_layers:
        return f"{layers} hidden layers; {reader} sums the last {min_layers}"
    positions = int(getattr(cfg, "max_position_embeddings", 0))
    if positions < max_tokens:
        return f"{positions} positions; {reader}'s captions take {max_tokens} tokens"
    rebuilt = tokenizer_from_json(tokenizer_to_json(tokenizer))
    for text in [PROBE_TEXT, *texts]:
        if rebuilt(text)["input_ids"] != tokenizer(text)["input_ids"]:
            return f"its tokenizer does not survive the checkpoint's tokenizer.json ({text!r})"
    return None


def load_wordpiece_encoder(source: str, min_layers: int, max_tokens: int,
                           texts: Iterable[str] = (), reader: str = "AFLoc") -> tuple[Any, Any]:
    """`load_pretrained_text`, refused in one line (naming the folder and its model type) unless
    `wordpiece_problem` finds nothing; weights in float32 (autocast does the rest), whatever
    dtype the folder stores."""
    model, tok = load_pretrained_text(source)
    problem = wordpiece_problem(model, tok, min_layers, max_tokens, texts, reader)
    if problem is not None:
        kind = getattr(model.config, "model_type", "unknown")
        raise CheckpointError(f"text encoder {source!r} (model type {kind}) cannot be used: "
                              f"{problem}")
    return model.float(), tok


def text_model_from_config(config: dict[str, Any]) -> Any:
    """The Hugging Face base model a stored config dict describes, randomly initialised (the
    checkpoint's weights go in next): a `BertModel` (with its pooler) for a dict without
    ``model_type``, as the releases and the tiny preset store it; the type's own class
    otherwise, so an ELECTRA or DistilBERT reloads as itself."""
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    kind = config.get("model_type", "bert")
    if kind == "bert":
        return BertModel(BertConfig(**config))
    rest = {k: v for k, v in config.items() if k != "model_type"}
    return AutoModel.from_config(AutoConfig.for_model(kind, **rest))


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"tokenizer {source!r} is not available offline: pass text_encoder=<local folder "
            f"with vocab.txt/tokenizer.json> ({type(exc).__name__})") from exc


def sum_last_layers(hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor],
                    n: int) -> torch.Tensor:
    """The sum of the last `n` hidden states [B, T, D] (GLoRIA's and AFLoc's token states)."""
    return torch.stack(tuple(hidden_states[-n:]), 0).sum(0)


def word_layout(tokens: list[str]) -> tuple[list[int], list[str], list[int]]:
    """GLoRIA's ``aggregate_tokens``: "##" pieces join the preceding word; [SEP] is its own unit
    and ends the walk. Returns (word slot per token, -1 after [SEP]; word labels; first token of
    each word)."""
    index = [-1] * len(tokens)
    labels: list[str] = []
    first: list[int] = []
    bank: list[str] = []
    for t, tok in enumerate(tokens):
        if tok == "[SEP]":
            if bank:
                labels.append("".join(bank))
            index[t] = len(labels)
            labels.append("[SEP]")
            first.append(t)
            break
        if tok.startswith("##") and bank:
            bank.append(tok[2:])
            index[t] = len(labels)
            continue
        if bank:
            labels.append("".join(bank))
        bank = [tok[2:] if tok.startswith("##") else tok]
        index[t] = len(labels)
        first.append(t)
    return index, labels, first


def sum_into_words(hidden: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """Word embeddings [B, T, D]: slot w = the sum of the token states whose `word_index` is w
    (tokens with -1 go nowhere; slots past the last word stay zero), one scatter-add instead of
    the official per-caption loop."""
    b, t, d = hidden.shape
    idx = torch.where(word_index < 0, torch.full_like(word_index, t), word_index)
    words = hidden.new_zeros(b, t + 1, d)
    words.scatter_add_(1, idx.unsqueeze(-1).expand(b, t, d), hidden)
    return words[:, :t]


def bert_config_from_state(state: dict[str, torch.Tensor],
                           p: str = "text_encoder.model.") -> dict[str, Any]:
    """The BertConfig fields of the BERT whose weights are under `p` (GLoRIA's and AFLoc's
    releases do not store the architecture; their code fetched it from the Hub by name)."""
    try:
        vocab, hidden = state[p + "embeddings.word_embeddings.weight"].shape
        max_pos = state[p + "embeddings.position_embeddings.weight"].shape[0]
        type_vocab = state[p + "embeddings.token_type_embeddings.weight"].shape[0]
        inter = state[p + "encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"checkpoint has no BERT weights ({exc.args[0]} missing)") from exc
    layers = 1 + max(int(k[len(p + "encoder.layer."):].split(".")[0]) for k in state
                     if k.startswith(p + "encoder.layer."))
    return {"vocab_size": int(vocab), "hidden_size": int(hidden),
            "num_hidden_layers": int(layers), "num_attention_heads": max(1, int(hidden) // 64),
            "intermediate_size": int(inter), "max_position_embeddings": int(max_pos),
            "type_vocab_size": int(type_vocab)}


def source_identity(source: str | None) -> dict[str, Any] | None:
    """What names a text encoder's weights, for a run's identity: a local folder by its files'
    content, a Hugging Face id by the commit of its offline snapshot."""
    if not source:
        return None
    from bench.methods.base import fingerprint_path

    if Path(source).exists():
        return {"source": source, "content": fingerprint_path(source)}
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(source, local_files_only=True)
        return {"source": source, "snapshot": Path(folder).name}
    except Exception:
        return {"source": source, "snapshot": None}  # not available offline: loading fails


class WidthsConfig:
    """JSON round trip of a method's config dataclass (its ``small_widths`` tuple becomes a list
    and back; keys the dataclass does not know, from newer or older files, are dropped)."""

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)  # type: ignore[call-overload]
        d["small_widths"] = list(self.small_widths)  # type: ignore[attr-defined]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Any:
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}  # type: ignore
        if "small_widths" in kw:
            kw["small_widths"] = tuple(kw["small_widths"])
        return cls(**kw)
