"""BioViL test fixtures built locally: hi-ml-multimodal's module layouts written out from its
source (``image/model/model.py``, ``modules.py``, ``text/model/modelling_cxrbert.py``) as
plain modules, the released files as hi-ml and Hugging Face save them, and a CXR-BERT folder
(config.json, vocab.txt, weights). Nothing is downloaded; nothing imports hi-ml."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

VOCAB_WORDS = ["findings", "consistent", "with", "pneumonia", "suggesting", "this", "opacity",
               "can", "represent", "are", "most", "compatible", "there", "is", "no",
               "evidence", "of", "acute", "signs", "left", "right", "lower", "lobe", "effusion",
               "pleural", "small", "large", "the", "at", ".", ",", ":", "##s", "##ing", "a",
               "b", "c", "d", "e", "f", "g", "h", "i", "l", "m", "n", "o", "p", "r", "s", "t",
               "u", "v", "w", "x", "y", "##a", "##e", "##i", "##o", "##n", "##t", "##r", "##l"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def cxr_bert_config(layers: int = 12, hidden: int = 32, heads: int = 2) -> dict:
    """CXR-BERT's config.json (BiomedVLP-CXR-BERT-specialized), made narrow for tests."""
    return {"architectures": ["CXRBertModel"], "model_type": "cxr-bert",
            "auto_map": {"AutoModel": "modeling_cxrbert.CXRBertModel"},
            "attention_probs_dropout_prob": 0.25, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.25, "hidden_size": hidden, "initializer_range": 0.02,
            "intermediate_size": 2 * hidden, "layer_norm_eps": 1e-12,
            "max_position_embeddings": 64, "num_attention_heads": heads,
            "num_hidden_layers": layers, "pad_token_id": 0, "projection_size": 128,
            "type_vocab_size": 2, "vocab_size": len(SPECIALS) + len(VOCAB_WORDS)}


class HimlImageModel(nn.Module):
    """hi-ml ``ImageModel(img_encoder_type="resnet50", joint_feature_size=128)``: the ResNet-50
    as ``encoder.encoder``, ``projector.model`` = Conv1x1(2048, 128, no bias), BN, ReLU,
    Conv1x1(128, 128); patch embeddings = projector(layer4), global = their mean."""

    def __init__(self):
        super().__init__()
        import torchvision

        self.encoder = nn.Module()
        self.encoder.encoder = torchvision.models.resnet50()
        self.projector = nn.Module()
        self.projector.model = nn.Sequential(nn.Conv2d(2048, 128, 1, bias=False),
                                             nn.BatchNorm2d(128), nn.ReLU(),
                                             nn.Conv2d(128, 128, 1))

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        r = self.encoder.encoder
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        x = r.layer4(r.layer3(r.layer2(r.layer1(x))))
        return self.projector.model(x)


class HimlCXRBert(nn.Module):
    """``CXRBertModel``: a ``BertForMaskedLM`` (``bert``, ``cls``) and ``cls_projection_head``
    (dense_to_hidden, GELU, LayerNorm eps 1e-12, dense_to_output) on the last [CLS] state."""

    def __init__(self, config: dict):
        super().__init__()
        from transformers import BertConfig, BertForMaskedLM

        d = {k: v for k, v in config.items() if k not in ("architectures", "auto_map",
                                                          "model_type")}
        mlm = BertForMaskedLM(BertConfig(**d))
        self.bert, self.cls = mlm.bert, mlm.cls
        size, hidden = config["projection_size"], config["hidden_size"]
        self.cls_projection_head = nn.Module()
        self.cls_projection_head.dense_to_hidden = nn.Linear(hidden, size)
        self.cls_projection_head.LayerNorm = nn.LayerNorm(size, eps=1e-12)
        self.cls_projection_head.dense_to_output = nn.Linear(size, size)

    def projected(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        p = self.cls_projection_head
        x = p.dense_to_hidden(h[:, 0])
        x = torch.nn.functional.gelu(x)
        return p.dense_to_output(p.LayerNorm(x))


def _busy_batchnorm(model: nn.Module) -> None:
    with torch.no_grad():  # non-trivial statistics, so eval mode is exercised
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def image_model(seed: int = 0) -> HimlImageModel:
    torch.manual_seed(seed)
    model = HimlImageModel()
    _busy_batchnorm(model)
    return model.eval()


def image_pt(model: HimlImageModel, path: Path) -> Path:
    """The released file: ``torch.save`` of the plain state dict (an OrderedDict)."""
    torch.save(OrderedDict(model.state_dict()), path)
    return path


def cxr_bert_folder(path: Path, seed: int = 0, layers: int = 12, fmt: str = "bin",
                    position_ids: bool = True) -> tuple[Path, HimlCXRBert]:
    """A CXR-BERT folder as Hugging Face saves it: config.json, vocab.txt,
    tokenizer_config.json and pytorch_model.bin (``fmt="bin"``, every key, the 2022 layout with
    ``bert.embeddings.position_ids``) or model.safetensors (tied copies left out)."""
    path.mkdir(parents=True, exist_ok=True)
    config = cxr_bert_config(layers)
    torch.manual_seed(seed)
    model = HimlCXRBert(config).eval()
    (path / "config.json").write_text(json.dumps(config))
    (path / "vocab.txt").write_text("\n".join(SPECIALS + VOCAB_WORDS) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True,
                                                            "model_max_length": 512}))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if fmt == "bin":
        if position_ids:
            state["bert.embeddings.position_ids"] = torch.arange(64)[None]
        torch.save(OrderedDict(state), path / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        for k in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            state.pop(k)
        save_file(state, str(path / "model.safetensors"))
    return path, model
