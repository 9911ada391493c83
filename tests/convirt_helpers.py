"""ConVIRT test fixtures built locally: a small RoBERTa folder (byte-level BPE tokenizer + config)
and ViLMedic's module layout written out from its ``conVIRT.py`` (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

# roberta-base's architecture (allenai/biomed_roberta_base has the same config)
ROBERTA_BASE = {"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12,
                "num_attention_heads": 12, "intermediate_size": 3072,
                "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1,
                "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5}


def roberta_tokenizer():
    """A byte-level BPE RoBERTa tokenizer: the 256 byte symbols and a few merges."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(c, len(vocab))
    merges = [("Ġ", "p"), ("n", "o"), ("Ġp", "n"), ("e", "u"), ("m", "o"), ("n", "i")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=merges)


def roberta_folder(path: Path, layers: int = 2, hidden: int = 32, heads: int = 2) -> Path:
    """A local text-encoder folder (config.json + tokenizer files), as a user would pass it."""
    from transformers import RobertaConfig

    path.mkdir(parents=True, exist_ok=True)
    tok = roberta_tokenizer()
    tok.save_pretrained(path)
    RobertaConfig(**{**ROBERTA_BASE, "vocab_size": len(tok), "hidden_size": hidden,
                     "num_hidden_layers": layers, "num_attention_heads": heads,
                     "intermediate_size": 2 * hidden, "max_position_embeddings": 130}
                  ).save_pretrained(path)
    return path


class VilmedicConVIRT(nn.Module):
    """ViLMedic's ConVIRT layout: linguistic.encoder (RoBERTa with pooler), visual.model
    (torchvision ResNet-50 children up to avgpool), vis_proj and lin_proj (Linear-ReLU-Linear
    to 768)."""

    def __init__(self, text_config):
        super().__init__()
        import torchvision
        from transformers import RobertaModel

        self.linguistic = nn.Module()
        self.linguistic.encoder = RobertaModel(text_config, add_pooling_layer=True)
        self.visual = nn.Module()
        self.visual.model = nn.Sequential(*list(torchvision.models.resnet50().children())[:9])
        self.vis_proj = nn.Sequential(nn.Linear(2048, 768), nn.ReLU(), nn.Linear(768, 768))
        self.lin_proj = nn.Sequential(nn.Linear(text_config.hidden_size, 768), nn.ReLU(),
                                      nn.Linear(768, 768))

    def image(self, x: torch.Tensor) -> torch.Tensor:
        return self.vis_proj(self.visual.model(x).flatten(1))

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.linguistic.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.lin_proj(out.pooler_output)


def vilmedic_model(folder: Path, seed: int = 0) -> VilmedicConVIRT:
    from transformers import AutoConfig

    torch.manual_seed(seed)
    model = VilmedicConVIRT(AutoConfig.from_pretrained(folder, local_files_only=True))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is exercised
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def vilmedic_state(model: VilmedicConVIRT, position_ids: bool = True) -> dict[str, torch.Tensor]:
    """The state dict as ViLMedic's 2021 trainer saved it (transformers 4.3 kept the RoBERTa
    ``embeddings.position_ids`` buffer)."""
    state = dict(model.state_dict())
    if position_ids:
        n = model.linguistic.encoder.config.max_position_embeddings
        state["linguistic.encoder.embeddings.position_ids"] = torch.arange(n)[None]
    return state
