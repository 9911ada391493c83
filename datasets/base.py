"""The `Dataset` contract shared by every adapter (real or synthetic).

An adapter indexes its files cheaply in `__init__` (CSV/JSON only, no pixel decoding), then
`load(i)` decodes one sample. The evaluator walks positions in order, so a killed run can skip
finished chunks without decoding their images. Bad rows raise `DataError` naming file and row,
or, with `on_error="skip"`, are counted in `self.skipped` (reason -> count) for run.json.

Ground truth is all or nothing, in every adapter: a finding whose ground truth cannot be read
whole is skipped whole and counted, never scored with part of its mask and never turned into a
negative. Where the unit that fails is larger than one finding (RSNA and SIIM labels come from
the same rows as the masks, MS-CXR's simple prompt merges an image's phrases by category, a
CheXlocalize entry holds all ten tasks) the whole image goes, counted once per bad row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.errors import DataError, UsageError
from bench.options import check_option_names
from bench.types import Finding, Sample

SKIP_LOG_LIMIT = 10_000  # skip lines kept per dataset (the counts are always complete)


@dataclass
class CheckReport:
    """What `bench data check` prints: counts against expectations and every problem found."""

    dataset: str
    root: str
    split: str | None
    counts: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # "file, row N: what"
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.missing and not self.problems


class Dataset:
    name: ClassVar[str] = "dataset"
    tasks: ClassVar[tuple[str, ...]] = ()
    pathologies: ClassVar[tuple[str, ...]] = ()
    splits: ClassVar[tuple[str, ...]] = ("test",)
    default_split: ClassVar[str] = "test"
    expected_counts: ClassVar[dict[str, Any]] = {}
    synthetic: ClassVar[bool] = False
    needs_root: ClassVar[bool] = True  # False for sets generated in memory or on demand
    description: ClassVar[str] = ""
    # AFLoc's localization prompt; adapters override `prompt` where the official code differs.
    simple_prompt: ClassVar[str] = "Findings suggesting {pathology}."

    def __init__(self, root: str | Path | None = None, split: str | None = None,
                 on_error: str = "raise", **options: Any):
        self.root = Path(root) if root is not None else None
        self.split = split or self.default_split
        if self.split not in self.splits:
            known = ", ".join(self.splits)
            raise UsageError(f"dataset '{self.name}' has no split '{self.split}' (splits: {known})")
        if on_error not in ("raise", "skip"):
            raise UsageError("on_error must be 'raise' or 'skip'")
        if options:  # what no adapter in the class's chain took: a misspelling, most likely
            check_option_names(options, self.option_names(),
                               f"dataset '{self.name}'", "--dataset-arg")
        self.on_error = on_error
        self.options = options
        self.skipped: Counter[str] = Counter()
        # (reason, "file, row N: what") of every skip, for `bench data check` to list
        self.skip_log: list[tuple[str, str]] = []

    @classmethod
    def option_names(cls) -> list[str]:
        """The options the adapter takes: the keyword parameters of `__init__` along the class
        chain (a synthetic twin's own and its real adapter's)."""
        import inspect

        skip = {"self", "root", "split", "on_error"}
        names: set[str] = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name not in skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    names.add(p.name)
        return sorted(names)

    # -- what adapters override ---------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        """Decode sample number `index` (0 <= index < len)."""
        raise NotImplementedError

    def check(self) -> CheckReport:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self.load(i)

    def prompt(self, finding: Finding, mode: str = "simple") -> str:
        """The query text for a finding: the phrase itself ('precise') or the category prompt."""
        if mode == "precise":
            if finding.phrase:
                return finding.phrase
            raise UsageError(f"dataset '{self.name}' has no precise phrases; use --prompt simple")
        return self.simple_prompt.format(pathology=finding.pathology.lower()
                                         if self.lowercase_prompt else finding.pathology)

    lowercase_prompt: ClassVar[bool] = False

    def bad(self, message: str, path: object = None, row: object = None, reason: str = "") -> None:
        """Raise, or count and continue when the user asked to skip bad input."""
        if self.on_error == "skip":
            self.skip(reason or message, str(DataError(message, path, row)))
            return
        raise DataError(message, path, row)

    def skip(self, reason: str, line: str) -> None:
        """Count one skipped input under `reason`; `line` says where (file, row) and what."""
        self.skipped[reason] += 1
        if len(self.skip_log) < SKIP_LOG_LIMIT:
            self.skip_log.append((reason, line))

    def config(self) -> dict[str, Any]:
        return dict(self.options)

    def input_files(self) -> list[Path]:
        """The label and annotation files the samples are read from (not the images): their
        sizes and mtimes are part of a run's identity, so a run computed before they were
        edited is never reused. In-memory and generated sets list none."""
        return []

    def describe(self) -> dict[str, Any]:
        out = {
            "dataset": self.name,
            "root": str(self.root) if self.root else None,
            "split": self.split,
            "synthetic": bool(self.synthetic),
            "n_samples": len(self),
            "config": self.config(),
        }
        marker = getattr(self, "synthetic_marker", None)
        if marker:  # a real adapter pointed at a folder `bench synth` wrote
            out["synthetic_marker"] = marker
        return out
