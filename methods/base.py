"""The `Method` contract: what every adapter provides, and the shared machinery around it.

An adapter says only what is particular to its model: its options, its input recipes, how it
makes a map for (image, query) pairs and how it scores pathologies, and (if trainable) its
training task. The evaluator calls the hooks below, each with a default, in this order:

    cls.check_options(options)          before anything is built (unknown names are errors)
    method = cls(checkpoint, device, seed, **options)
    method.bind(dataset, protocol)      per run: a method may read what comes with a dataset
    method.localize(...) / classify(...) / points(...)
    method.close()                      before the next method is built

and, without building the model: `cls.weights_identity(options)` (what the run identity must
cover beyond the options' values) and `cls.default_checkpoint()`. `bench train METHOD` calls
`cls.train_task(request, data)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.errors import UsageError
from bench.imaging.geometry import Frame
from bench.options import check_option_names
from bench.types import Capabilities, Query, Sample

if TYPE_CHECKING:
    from bench.imaging.recipes import Recipe

# how a method learns what it knows (the paper's four kinds; `bench list methods` shows it)
ZERO_SHOT = "zero-shot image-text"  # pretrained on image-report pairs, no labels
ONE_CLASS = "one-class"  # trained on normal images only (anomaly detection)
SUPERVISED = "supervised"  # trained with image-level labels (CAMs over a classifier)
REFERENCE = "reference"  # no learning: baselines, ground truth, the human benchmark
LEARNING_TYPES = (ZERO_SHOT, ONE_CLASS, SUPERVISED, REFERENCE)


@dataclass(frozen=True)
class Option:
    """A declared method option: `--method-arg [METHOD.]NAME=VALUE` for `bench run`, or
    `bench train METHOD --name VALUE` for a training option. `parse` turns the command line's
    value (already JSON-decoded: '3' -> 3, 'true' -> True) into the option's value."""

    default: Any = None
    help: str = ""
    parse: Callable[[Any], Any] | None = None
    choices: tuple[Any, ...] | None = None

    def value(self, name: str, raw: Any, owner: str) -> Any:
        try:
            v = self.parse(raw) if self.parse is not None and raw is not None else raw
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{owner}: option {name}={raw!r} is not valid ({exc})") from exc
        if self.choices is not None and v not in self.choices:
            raise UsageError(f"{owner}: option {name}={raw!r} is not one of "
                             f"{', '.join(map(str, self.choices))}")
        return v


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


class Method:
    """Base class. Subclasses set the class attributes below and override what they can do.

    `localize(samples, queries)` returns, per sample, one float32 map per query on the method's
    `frame` (any H x W covering the frame; the protocol resizes bilinearly). Higher = more
    likely. `classify(samples, pathologies)` returns an N x P array of probabilities.
    """

    name: ClassVar[str] = "method"
    description: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    learning: ClassVar[str] = REFERENCE
    # the maps do not depend on the query text (every query of an image gets the same map)
    query_agnostic: ClassVar[bool] = False
    # the frame the maps come back on
    frame: Frame = Frame()
    # what the model sees, per purpose ("localize", "classify"); run.json records the one used
    recipes: ClassVar[dict[str, Recipe]] = {}
    # the options `bench run --method-arg` accepts (checkpoint included where weights load)
    option_specs: ClassVar[dict[str, Option]] = {}
    # protocols that tune a threshold on a validation split run this method there first
    tunes_on_val: ClassVar[bool] = True

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        given = dict(options)
        if checkpoint is not None:
            given["checkpoint"] = checkpoint
        self.options = self.check_options(given)
        self.options.pop("checkpoint", None)
        self.checkpoint = checkpoint
        self.device = device
        self.seed = seed
        self.closed = False

    # -- declared options ---------------------------------------------------------------
    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The given options parsed; an unknown name or a bad value is a UsageError."""
        check_option_names(options, cls.option_specs, f"method '{cls.name}'")
        return {k: cls.option_specs[k].value(k, v, f"method '{cls.name}'")
                for k, v in options.items()}

    def option(self, name: str) -> Any:
        """The option's value as given, else its declared default."""
        return self.options.get(name, self.option_specs[name].default)

    # -- what adapters override ---------------------------------------------------------
    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        raise UsageError(f"method '{self.name}' cannot localize")

    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        raise UsageError(f"method '{self.name}' cannot classify")

    def points(self, samples: list[Sample], queries: list[list[Query]]) -> list[list] | None:
        """Per query, the method's own salient points [[x, y], ...] for the hit rate, or None
        when the protocol should take each map's argmax (every method but the human benchmark)."""
        return None

    def prob_precision(self, sample: Sample, pathology: str) -> tuple[bool, bool] | None:
        """For probabilities read from files (CheXlocalize pkls): (tuning compares in float32,
        the gate compares in float32); None for a model's own scores (float64 throughout)."""
        return None

    def bind(self, dataset: Any, protocol: str) -> None:
        """Called before each run with its dataset and protocol name (default: nothing)."""

    def close(self) -> None:
        """Release the model (the evaluator builds the next method only after this)."""
        self.closed = True

    def config(self) -> dict[str, Any]:
        """Everything that changes this method's outputs, for run.json and the run key."""
        return dict(self.options)

    @classmethod
    def weights_identity(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        """What a run's identity must cover beyond the options' values, for weights named by a
        folder or a Hugging Face id (the checkpoint file's hash is added for every method)."""
        return None

    @classmethod
    def default_checkpoint(cls) -> str | None:
        """The checkpoint `bench run` uses on the synthetic world when none is given: the one the
        README's `bench train METHOD --dataset synthetic-mimic --preset tiny` writes."""
        if not cls.capabilities.trainable:
            return None
        from bench.paths import default_checkpoint

        p = default_checkpoint(cls.name)
        return str(p) if p else None

    @classmethod
    def train_task(cls, request: Any, data: Any) -> tuple[Any, dict[str, Any]]:
        """(`bench.train.loop.TrainTask`, settings) for `bench train METHOD`: `request` is a
        `bench.train.run.TrainRequest`, `data` a `bench.train.data.TrainingData` to ask for
        pairs, labelled or normal images; settings are the values the preset resolved
        ("epochs" required; "bn_recalibration", "early_stopping" optional), recorded in
        train.json."""
        raise UsageError(f"method '{cls.name}' is not trainable in the harness")

    # what `bench train METHOD` accepts as --name VALUE (and --method-arg name=VALUE)
    train_option_specs: ClassVar[dict[str, Option]] = {}
    train_presets: ClassVar[tuple[str, ...]] = ()

    # -- shared -------------------------------------------------------------------------
    def describe(self, purposes: tuple[str, ...] = ()) -> dict[str, Any]:
        """run.json's method_info: config, weights and the input recipe of each purpose used."""
        out = {
            "method": self.name,
            "capabilities": self.capabilities.as_list(),
            "learning": self.learning,
            "query_agnostic": self.query_agnostic,
            "frame": self.frame.describe(),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "checkpoint_sha256": sha256_file(self.checkpoint) if self.checkpoint else None,
            "config": self.config(),
        }
        inputs = {p: self.recipes[p].describe() for p in purposes if p in self.recipes}
        if inputs:
            out["inputs"] = inputs
        return out


def sha256_file(path: str | Path | None) -> str | None:
    """Content hash of a checkpoint, computed once per (file, size, mtime) in a process: the run
    identity and `describe` both ask for it, once per run, and checkpoints are large."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def fingerprint_path(path: str | Path) -> str | None:
    """A file's sha256, or a folder's: the hash of its files' relative paths and sha256s (hidden
    files and caches left out), so weights named by a folder count by content."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        rel = f.relative_to(p)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
