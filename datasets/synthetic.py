"""The synthetic world's datasets: `synthetic-<name>` for every real adapter.

Each generates its unit of the synthetic world (`bench.synth.world`) into a cache folder on
first use, `$BENCH_CACHE/synthetic/<scale>-seed<seed>-<anchors>/` (default
`~/.cache/afloc-bench/...`; anchors `txv<version>` or `procedural`), under a file lock so
concurrent runs neither collide nor duplicate work, and then reads it through the *real*
adapter from the registry with root = the generated folder. Nothing here parses files: if the
synthetic files read correctly, the real adapter reads the real format.
Options: `scale` (tiny, small [default], full), `seed` (default 0), and `world=<folder>` to
use or create a world elsewhere; other options go to the real adapter.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.registry import get_dataset, register_dataset
from bench.types import Sample

DEFAULT_SCALE = "small"


def world_dir(scale: str, seed: int) -> Path:
    """The default world folder, in the harness cache; named by its anchors too, so installing
    (or upgrading) torchxrayvision never reads a world drawn from other anchors."""
    from bench.paths import cache_dir
    from bench.synth.anchors import anchor_tag

    return cache_dir() / "synthetic" / f"{scale}-seed{seed}-{anchor_tag()}"


# synthetic name -> (real adapter, world unit, folder, options given the world folder)
SETS: dict[str, tuple[str, str, str, Callable[[Path], dict[str, Any]]]] = {
    "synthetic-mimic": ("mimic-cxr", "mimic", "mimic-cxr-jpg", lambda w: {
        "exclude_ms_cxr": str(w / "ms-cxr" / "MS_CXR_Local_Alignment_v1.0.0.json")}),
    "synthetic-ms-cxr": ("ms-cxr", "mimic", "ms-cxr",
                         lambda w: {"image_root": str(w / "mimic-cxr-jpg")}),
    "synthetic-rsna": ("rsna", "rsna", "rsna",
                       lambda w: {"split_list": str(w / "rsna" / "grounding_test.csv")}),
    "synthetic-siim": ("siim", "siim", "siim", lambda w: {}),
    "synthetic-chexlocalize": ("chexlocalize", "chexlocalize", "chexlocalize", lambda w: {}),
    "synthetic-covid-rural": ("covid-rural", "covid-rural", "covid-rural", lambda w: {}),
    "synthetic-chestx-det10": ("chestx-det10", "chestx-det10", "chestx-det10", lambda w: {}),
    "synthetic-fundus": ("paired-folder", "fundus", "fundus", lambda w: {}),
}


def _make(name: str, real: str, unit: str, folder: str,
          options_for: Callable[[Path], dict[str, Any]]) -> type:
    base = get_dataset(real)

    class Synthetic(base):  # type: ignore[valid-type, misc]
        synthetic = True
        holds_out_ms_cxr = False  # the world's own MS-CXR file is passed (SETS)
        description = f"synthetic: generated phantoms in the {real} layout, read by '{real}'"
        expected_counts: dict[str, Any] = {}

        def __init__(self, root=None, split=None, on_error="raise", scale=DEFAULT_SCALE,
                     seed: int | str = 0, world: str | None = None, **options: Any):
            from bench.synth.anchors import load_anchors
            from bench.synth.world import WORLD_VERSION, generate

            self.scale, self.seed = str(scale), int(seed)
            wdir = Path(world or root or world_dir(self.scale, self.seed))
            generate(wdir, self.scale, self.seed, units=[unit], progress=sys.stderr.isatty())
            self.world = wdir
            self.anchors = load_anchors().source
            # part of a run's identity: results computed on another world are not reused
            self.data_stamp = (f"synthetic {self.scale} seed {self.seed}, anchors {self.anchors}, "
                               f"world version {WORLD_VERSION}")
            opts = options_for(wdir)
            opts.update(options)
            super().__init__(wdir / folder, split, on_error, **opts)

        def load(self, index: int) -> Sample | None:
            s = super().load(index)
            if s is not None:
                s.id = f"synthetic-{s.id}"
                s.meta["synthetic"] = True
                s.meta["synthetic_world"] = {"scale": self.scale, "seed": self.seed,
                                             "anchors": self.anchors}
            return s

        def config(self) -> dict[str, Any]:
            return {**super().config(), "scale": self.scale, "seed": self.seed,
                    "world": str(self.world), "anchors": self.anchors, "synthetic": True}

    Synthetic.__name__ = Synthetic.__qualname__ = "Synthetic" + base.__name__
    Synthetic.__doc__ = f"SYNTHETIC {real} ({unit} unit of the synthetic world)."
    return register_dataset(name)(Synthetic)


for _name, (_real, _unit, _folder, _opts) in SETS.items():
    try:
        _make(_name, _real, _unit, _folder, _opts)
    except Exception:  # a broken real adapter must not take the other synthetic sets down
        continue
