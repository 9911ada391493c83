"""RD++ / ReContrast networks and checkpoint layouts: key names and shapes against the official
modules' (fixtures dumped from the official code and anomalib 2.7.0, facts only), tiny forwards,
and every user layout read safely and loaded strictly into our modules."""

from __future__ import annotations

import enum
import gzip
import json
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from bench.errors import CheckpointError
from bench.methods._shared.checkpoints import compare_state, describe_diff
from bench.methods.anomaly import checkpoint as ck
from bench.methods.anomaly.networks import (
    OCBE,
    PAPER,
    TINY,
    Decoder,
    Encoder,
    NetworkConfig,
    load_imagenet,
)

FIXTURES = Path(__file__).parent / "fixtures" / "anomaly"
RECONTRAST = replace(PAPER, output_conv=2)
ANOMALIB_OCBE = 64  # anomalib builds its OCBE without the backbone's width_per_group


@pytest.fixture(autouse=True)
def _one_thread():
    """Small convolutions run faster and steadier on one thread on a shared CPU."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _fixture(name: str) -> dict:
    with gzip.open(FIXTURES / f"{name}_keys.json.gz", "rt") as f:
        return json.load(f)


def _shapes(module: nn.Module, prefix: str = "") -> list[tuple[str, tuple[int, ...]]]:
    return [(prefix + k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _listed(pairs: list) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(s)) for k, s in pairs]


def _meta(cls, cfg):
    with torch.device("meta"):
        return cls(cfg)


class RD(nn.Module):
    """Our RD/RD++ layout minus the projection layers (another module's)."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.encoder, self.bn, self.decoder = Encoder(cfg), OCBE(cfg), Decoder(cfg)


class ReContrastNets(nn.Module):
    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.encoder, self.encoder_freeze = Encoder(cfg), Encoder(cfg)
        self.bottleneck, self.decoder = OCBE(cfg), Decoder(cfg)


def _fake(pairs) -> dict[str, torch.Tensor]:
    """Tensors of the listed shapes that cost one element each (stride-0 views)."""
    return {k: torch.zeros(1).expand(*s) if s else torch.tensor(0) for k, s in pairs}


# -- config ------------------------------------------------------------------------------------

def test_config_round_trip_and_validation():
    for cfg in (PAPER, TINY, replace(RECONTRAST, ocbe_width_per_group=64)):
        back = NetworkConfig.from_json(json.loads(json.dumps(cfg.to_json())))
        assert back == cfg and isinstance(back.encoder_blocks, tuple)
    assert NetworkConfig.from_json({**PAPER.to_json(), "newer_field": 1}) == PAPER
    assert (PAPER.base, PAPER.width_per_group, PAPER.encoder_blocks, PAPER.decoder_blocks,
            PAPER.ocbe_blocks, PAPER.output_conv, PAPER.size) == (64, 128, (3, 4, 6),
                                                                  (3, 4, 6), 3, 0, 256)
    assert PAPER.channels == (256, 512, 1024) and PAPER.embedding_channels == 2048
    with pytest.raises(ValueError, match="multiple of 32"):
        NetworkConfig(size=100)
    with pytest.raises(ValueError, match="encoder_blocks"):
        NetworkConfig(encoder_blocks=(1, 1))


# -- official key names and shapes ---------------------------------------------------------------

def test_paper_encoder_is_torchvision_wide_resnet50_2_without_layer4_fc():
    import torchvision

    with torch.device("meta"):
        tv = torchvision.models.wide_resnet50_2(weights=None)
    want = [(k, s) for k, s in _shapes(tv) if not k.startswith(("layer4.", "fc."))]
    assert _shapes(_meta(Encoder, PAPER)) == want


def test_paper_ocbe_and_decoder_have_the_official_rdpp_keys():
    fx = _fixture("rdpp")
    assert _shapes(_meta(OCBE, PAPER)) == _listed(fx["bn"])
    assert _shapes(_meta(Decoder, PAPER)) == _listed(fx["decoder"])


def test_paper_recontrast_layout_is_the_official_state_dict():
    fx = _fixture("recontrast")
    with torch.device("meta"):
        nets = ReContrastNets(RECONTRAST)
    assert _shapes(nets) == _listed(fx["state_dict"])
    assert sum(k.startswith("decoder.out") for k, _ in fx["state_dict"]) == 3 * 2 * 2


def test_anomalib_layout_maps_onto_ours_with_a_narrow_ocbe():
    fx = _fixture("anomalib_rd")
    mapped = []
    for k, s in _listed(fx["torch_model"]):
        theirs = next(p for p in ck.ANOMALIB_PREFIXES if k.startswith(p))
        mapped.append((ck.ANOMALIB_PREFIXES[theirs] + k[len(theirs):], s))
    cfg = replace(PAPER, ocbe_width_per_group=ANOMALIB_OCBE)
    with torch.device("meta"):
        rd = RD(cfg)
    assert sorted(mapped) == sorted(_shapes(rd))
    # the same decoder as the official one; only the OCBE's inner width differs
    rdpp = dict(_listed(_fixture("rdpp")["bn"]))
    assert dict(mapped)["bn.bn_layer.0.conv1.weight"] == (512, 3072, 1, 1)
    assert rdpp["bn_layer.0.conv1.weight"] == (1024, 3072, 1, 1)


# -- forward -------------------------------------------------------------------------------------

def test_tiny_forward_shapes_and_output_order():
    torch.manual_seed(0)
    cfg = replace(TINY, output_conv=2, size=64)
    enc, bn, dec = Encoder(cfg).eval(), OCBE(cfg).eval(), Decoder(cfg).eval()
    x = torch.randn(2, 3, cfg.size, cfg.size)
    with torch.no_grad():
        feats = enc(x)
        z = bn(feats)
        out = dec(z)
        f3 = dec.layer1(z)
        f2 = dec.layer2(f3)
        f1 = dec.layer3(f2)
    want = [(2, c, g, g) for c, g in zip(cfg.channels, cfg.grids)]
    assert [tuple(f.shape) for f in feats] == want
    assert tuple(z.shape) == (2, cfg.embedding_channels, cfg.size // 32, cfg.size // 32)
    assert [tuple(o.shape) for o in out] == want * 2
    for i in range(2):  # official order: out1[i](f1), out2[i](f2), out3[i](f3) per i
        for j, (f, head) in enumerate(zip((f1, f2, f3), (dec.out1, dec.out2, dec.out3))):
            assert torch.equal(out[3 * i + j], head[i](f))
    plain = Decoder(TINY).eval()
    plain.load_state_dict({k: v for k, v in dec.state_dict().items()
                           if not k.startswith("out")}, strict=True)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(plain(z), (f1, f2, f3)))


def test_official_initialisation():
    torch.manual_seed(0)
    dec = Decoder(replace(TINY, output_conv=1))
    for m in dec.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
    conv = dec.layer1[0].conv1  # kaiming_normal_, fan_out
    std = (2.0 / (conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1])) ** 0.5
    assert abs(conv.weight.std().item() / std - 1) < 0.2
    up = dec.layer1[0].conv2  # transposed convs keep PyTorch's default (uniform) init
    assert isinstance(up, nn.ConvTranspose2d)
    bound = up.weight.abs().max().item()
    assert bound <= 1 / (up.weight.shape[1] * 4) ** 0.5 + 1e-6


# -- ImageNet weights ----------------------------------------------------------------------------

def test_load_imagenet_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert load_imagenet(_meta(Encoder, PAPER)).startswith("random init: ImageNet weights "
                                                          "wide_resnet50_2-95faca4d.pth not")
    assert "only for the paper encoder" in load_imagenet(Encoder(TINY))
    # strict apart from layer4/fc (a file at an explicit path, tiny so the test stays cheap)
    donor = Encoder(TINY)
    state = {**donor.state_dict(), "layer4.0.conv1.weight": torch.zeros(1),
             "fc.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}
    torch.save(state, tmp_path / "w.pth")
    enc = Encoder(TINY)
    note = load_imagenet(enc, tmp_path / "w.pth")
    assert "3 layer4/fc tensors not used" in note
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(),
                                                 donor.state_dict().values()))
    del state["bn1.bias"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="missing: bn1.bias"):
        load_imagenet(Encoder(TINY), tmp_path / "w.pth")


# -- checkpoint layouts: the real key lists --------------------------------------------------------

def _mapped_vs(conv: ck.Converted, module: nn.Module) -> str:
    return describe_diff(compare_state(module.state_dict(), conv.state))


def test_official_rdpp_file_maps_onto_our_rd_model(tmp_path):
    fx = _fixture("rdpp")
    path = tmp_path / "wres50_carpet.pth"
    torch.save({name: _fake(_listed(fx[name])) for name in ("proj", "decoder", "bn")}, path)
    conv = ck.load_checkpoint(path)
    assert conv.layout == "rdpp" and conv.has_proj and not conv.has_encoder
    assert conv.config == PAPER
    with torch.device("meta"):
        rd = RD(PAPER)
    diff = compare_state(rd.state_dict(), conv.state)
    assert not diff["shape"]
    assert diff["missing"] == sorted(k for k in rd.state_dict() if k.startswith("encoder."))
    assert sorted(diff["unexpected"]) == sorted("proj." + k for k, _ in fx["proj"])
    assert "proj.proj_a.proj.0.weight" in conv.state  # the official MultiProjectionLayer names


def test_official_recontrast_state_dict_under_wrappers(tmp_path):
    fx = _listed(_fixture("recontrast")["state_dict"])
    with torch.device("meta"):
        nets = ReContrastNets(RECONTRAST)
    for i, wrap in enumerate((lambda s: s, lambda s: {"state_dict": s, "epoch": 3},
                              lambda s: {"model": {"module." + k: v for k, v in s.items()}})):
        path = tmp_path / f"rc{i}.pth"
        torch.save(wrap(_fake(fx)), path)
        conv = ck.load_checkpoint(path)
        assert conv.layout == "recontrast" and conv.config == RECONTRAST
        assert _mapped_vs(conv, nets) == ""


def _fake_anomalib_enum(monkeypatch):
    """A class pickled as anomalib's AnomalyMapGenerationMode (anomalib is not installed)."""
    name = "anomalib.models.image.reverse_distillation.anomaly_map"
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))

    class AnomalyMapGenerationMode(enum.StrEnum):
        ADD = "add"
        MULTIPLY = "multiply"

    AnomalyMapGenerationMode.__module__ = name
    AnomalyMapGenerationMode.__qualname__ = "AnomalyMapGenerationMode"
    sys.modules[name].AnomalyMapGenerationMode = AnomalyMapGenerationMode
    return AnomalyMapGenerationMode


def _lightning(state: dict, extra: dict, mode) -> dict:
    return {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.6",
            "state_dict": {**{"model." + k: v for k, v in state.items()}, **extra},
            "hyper_parameters": {"backbone": "wide_resnet50_2",
                                 "layers": ("layer1", "layer2", "layer3"),
                                 "anomaly_map_mode": mode.ADD, "pre_trained": False},
            "anomalib_components_enabled": {}, "loops": {}, "callbacks": {},
            "optimizer_states": [], "lr_schedulers": []}


def test_anomalib_lightning_checkpoint_maps_onto_our_rd_model(tmp_path, monkeypatch):
    fx = _fixture("anomalib_rd")
    mode = _fake_anomalib_enum(monkeypatch)
    path = tmp_path / "model.ckpt"
    torch.save(_lightning(_fake(_listed(fx["torch_model"])), _fake(_listed(fx["lightning_extra"])),
                          mode), path)
    for k in [k for k in sys.modules if k.startswith("anomalib")]:
        monkeypatch.delitem(sys.modules, k)  # reading imports nothing
    conv = ck.load_checkpoint(path)
    assert conv.layout == "anomalib-lightning" and conv.has_encoder and not conv.has_proj
    assert conv.config == replace(PAPER, ocbe_width_per_group=ANOMALIB_OCBE)
    with torch.device("meta"):
        rd = RD(conv.config)
    assert _mapped_vs(conv, rd) == ""
    assert any("post_processor.image_min" in n for n in conv.notes)
    assert conv.hparams["anomaly_map_mode"] == "add"
    assert conv.hparams["layers"] == ["layer1", "layer2", "layer3"]
    assert any("plain Reverse Distillation" in n for n in conv.notes)


# -- checkpoint layouts: tiny files loaded strictly ------------------------------------------------

def _tiny_rd(cfg):
    torch.manual_seed(1)
    return RD(cfg)


def test_tiny_rd_and_rdpp_files_load_strictly(tmp_path):
    cfg = replace(TINY, decoder_blocks=(1, 2, 1), ocbe_blocks=2)
    src = _tiny_rd(cfg)
    b = cfg.base * 4
    proj = {f"proj_{n}.proj.{i}.{w}": torch.zeros(1) for n in "abc" for i in (0, 3, 6, 9)
            for w in ("weight", "bias")}
    proj["proj_a.proj.0.weight"] = torch.zeros(b // 2, b, 3, 3)
    for name, obj in {"rdpp": {"proj": proj, "bn": src.bn.state_dict(),
                               "decoder": src.decoder.state_dict()},
                      "rd": {"bn": {"module." + k: v for k, v in src.bn.state_dict().items()},
                             "decoder": src.decoder.state_dict()}}.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        conv = ck.load_checkpoint(tmp_path / f"{name}.pth")
        assert conv.layout == name and conv.has_proj == (name == "rdpp")
        assert conv.config == replace(cfg, encoder_blocks=PAPER.encoder_blocks, size=PAPER.size)
        for prefix, cls in (("bn.", OCBE), ("decoder.", Decoder)):
            m = cls(conv.config)
            m.load_state_dict(ck.part(conv.state, prefix), strict=True)
            ref = getattr(src, prefix[:-1]).state_dict()
            assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())


def test_tiny_anomalib_files_load_strictly(tmp_path, monkeypatch):
    cfg = replace(TINY, ocbe_width_per_group=16, encoder_blocks=(1, 2, 1))
    src = _tiny_rd(cfg)
    theirs = {"encoder.feature_extractor." + k: v for k, v in src.encoder.state_dict().items()}
    theirs |= {"bottleneck." + k: v for k, v in src.bn.state_dict().items()
               if not k.startswith(("conv4", "bn4"))}  # as anomalib before 2023
    theirs |= {"decoder." + k: v for k, v in src.decoder.state_dict().items()}
    mode = _fake_anomalib_enum(monkeypatch)
    torch.save(_lightning(theirs, {"image_threshold.value": torch.tensor(0.5)}, mode),
               tmp_path / "a.ckpt")
    torch.save({"state_dict": theirs}, tmp_path / "b.pth")
    for name, layout in (("a.ckpt", "anomalib-lightning"), ("b.pth", "anomalib")):
        conv = ck.load_checkpoint(tmp_path / name)
        assert conv.layout == layout and conv.config == replace(cfg, size=PAPER.size)
        assert any("bn.conv4.weight" in n and "unused in forward" in n for n in conv.notes)
        rd = RD(conv.config)
        rd.load_state_dict(conv.state, strict=True)
        ref = src.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in rd.state_dict().items()
                   if not k.startswith(("bn.conv4.", "bn.bn4.")))


def test_tiny_recontrast_loads_strictly(tmp_path):
    cfg = replace(TINY, output_conv=2, decoder_blocks=(2, 1, 1))
    torch.manual_seed(2)
    src = ReContrastNets(cfg)
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}},
               tmp_path / "rc.pth")
    conv = ck.load_checkpoint(tmp_path / "rc.pth")
    assert conv.config == replace(cfg, size=PAPER.size) and conv.has_encoder
    nets = ReContrastNets(conv.config)
    nets.load_state_dict(conv.state, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(nets.state_dict().values(),
                                                 src.state_dict().values()))


def test_safetensors_state_dict_is_read(tmp_path):
    from safetensors.torch import save_file

    src = ReContrastNets(replace(TINY, output_conv=2))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "rc.st")
    assert ck.load_checkpoint(tmp_path / "rc.st").layout == "recontrast"


# -- refusals ------------------------------------------------------------------------------------

def test_unknown_layout_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"net": {"conv.weight": torch.zeros(1)}, "epoch": 1}, path)
    with pytest.raises(CheckpointError) as err:
        ck.load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg and "'net', 'epoch'" in msg


def test_anomalib_v1_checkpoint_with_pickled_transforms_is_read_inertly(tmp_path):
    from torchvision.transforms import v2

    src = _tiny_rd(TINY)
    sd = {"model.encoder.feature_extractor." + k: v for k, v in src.encoder.state_dict().items()}
    sd |= {"model.bottleneck." + k: v for k, v in src.bn.state_dict().items()}
    sd |= {"model.decoder." + k: v for k, v in src.decoder.state_dict().items()}
    sd |= {"image_threshold.value": torch.tensor(0.5), "normalization_metrics.max": torch.ones(())}
    # anomalib 1.x saved its torchvision transforms (nn.Modules) in the checkpoint
    transform = v2.Compose([v2.Resize((128, 128), antialias=True),
                            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    torch.save({"state_dict": sd, "transform": transform}, tmp_path / "v1.ckpt")
    conv = ck.load_checkpoint(tmp_path / "v1.ckpt")
    assert conv.layout == "anomalib-lightning" and conv.config == replace(TINY, size=PAPER.size)
    RD(conv.config).load_state_dict(conv.state, strict=True)
    assert any("image_threshold.value" in n for n in conv.notes)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Evil()}}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        ck.read_checkpoint(path)


def test_config_errors_name_the_problem():
    with pytest.raises(CheckpointError, match="BasicBlock decoder"):
        ck.config_from_state({"decoder.layer1.0.conv1.weight": torch.zeros(1),
                              "bn.conv1.weight": torch.zeros(1)}, "f.pth")
    state = {f"bottleneck.{k}": v for k, v in OCBE(TINY).state_dict().items()}
    state |= {f"decoder.{k}": v for k, v in Decoder(TINY).state_dict().items()}
    state |= {f"encoder.{k}": v for k, v in Encoder(replace(TINY, width_per_group=64))
              .state_dict().items()}
    with pytest.raises(CheckpointError, match="encoder .* does not match the decoder"):
        ck.config_from_state(state, "f.pth")
