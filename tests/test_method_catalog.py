"""The one table of methods: each adapter agrees with its row, every registering module is in it,
tables and figures take names and colours from it, and the colours stay apart in normal and
colour-deficient vision."""

from __future__ import annotations

import importlib
import itertools
import pkgutil

import numpy as np
import pytest

from bench.methods.base import LEARNING_TYPES
from bench.methods.catalog import CATALOG, FAMILIES, builtin_modules
from bench.registry import METHODS

# Machado, Oliveira & Fernandes (2009), severity 1.0, on linear RGB
CVD = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def _lab(hex_colour: str, m: np.ndarray) -> np.ndarray:
    c = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    lin = np.clip(m @ lin, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ lin
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_colours_are_distinct_in_normal_and_colour_deficient_vision():
    colours = {n: i.colour for n, i in CATALOG.items()}
    assert len(set(colours.values())) == len(colours)
    worst = min((np.linalg.norm(_lab(colours[a], m) - _lab(colours[b], m)), a, b, kind)
                for a, b in itertools.combinations(colours, 2) for kind, m in CVD.items())
    assert worst[0] >= 13.0, worst
    # the pairs that used to share a colour
    for a, b in (("gloria", "gradcam"), ("biovil", "gradcampp"), ("medklip", "eigencam"),
                 ("chexzero", "retfound")):
        assert colours[a] != colours[b]


@pytest.mark.parametrize("name", sorted(builtin_modules()))
def test_each_adapter_says_what_its_row_says(name):
    info, cls = CATALOG[name], METHODS.get(name)
    assert cls.__module__ == info.module
    assert cls.capabilities.as_list() == list(info.capabilities)
    assert cls.learning == info.learning and info.learning in LEARNING_TYPES
    assert cls.query_agnostic == info.query_agnostic
    assert cls.description == info.description
    assert info.family in FAMILIES


def test_every_registering_module_is_in_the_table():
    import bench.methods as pkg

    registered = set(builtin_modules().values())
    for mod in pkgutil.walk_packages(pkg.__path__, "bench.methods."):
        if any(part.startswith("_") for part in mod.name.split(".")[2:]):
            continue
        source = importlib.util.find_spec(mod.name).origin or ""
        if source.endswith(".py") and "@register_method(" in open(source).read():
            assert mod.name in registered, f"{mod.name} registers a method not in the catalog"


def test_tables_and_figures_take_names_and_colours_from_the_table():
    from bench.report.figures import METHOD_COLORS, METHOD_HATCHES
    from bench.report.specs import METHOD_LABELS, paper_tables

    assert METHOD_LABELS == {n: i.display for n, i in CATALOG.items()}
    assert METHOD_COLORS == {n: i.colour for n, i in CATALOG.items()}
    assert METHOD_HATCHES == {"human": "////"}
    assert paper_tables("convirt") == ["Table 2", "Table 3", "Extended Data Table 4"]
    assert "Extended Data Table 5" in paper_tables("human")
    assert paper_tables("center") == []
