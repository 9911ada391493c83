"""The protocol interface: how raw maps become metric rows, and rows become a summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError
from bench.imaging.geometry import Frame
from bench.types import Finding, Sample

ID_COLUMNS = ("sample_id", "query_id", "pathology", "positive")


def finite_number(value: Any) -> float | None:
    """A finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if np.isfinite(v) else None


def number_list(value: Any, what: str) -> tuple[float, ...]:
    """A non-empty list of finite numbers (a protocol option), or a one-line UsageError."""
    items = value if isinstance(value, (list, tuple)) else None
    nums = [finite_number(v) for v in items] if items is not None else []
    if not nums or any(v is None for v in nums):
        raise UsageError(f"{what} must be a list of numbers such as [0.1,0.3,0.5], "
                         f"not {value!r}")
    return tuple(nums)  # type: ignore[arg-type]


def number_map(value: Any, what: str, lo: float = -np.inf, hi: float = np.inf) -> dict:
    """A {task: number} map (a protocol option), or a one-line UsageError."""
    ok = isinstance(value, dict) and value and all(
        (v := finite_number(x)) is not None and lo <= v <= hi for x in value.values())
    if not ok:
        raise UsageError(f"{what} must be a {{task: number}} map such as "
                         f'{{"Edema": 0.3}}, not {value!r}')
    return {str(k): float(v) for k, v in value.items()}


class Protocol:
    """A named evaluation procedure; a deviation from an official one is a new protocol."""

    name: str = ""
    description: str = ""
    tuning_split: str | None = None  # split the evaluator runs first (its rows -> summarize)
    bootstrap_unit: str = "row"  # "row" = (image, query) rows; "image" = CXRs
    wants_probs: bool = False  # ask the method for per-finding probabilities

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}

    def localization_rows(
        self,
        sample: Sample,
        findings: list[Finding],
        maps: list[np.ndarray],
        frame: Frame,
        probs: list[float | None] | None,
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def summarize(
        self,
        rows: pd.DataFrame,
        n_boot: int,
        seed: int,
        tuning_rows: pd.DataFrame | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    # helpers shared by protocols
    @staticmethod
    def id_columns(sample: Sample, finding: Finding) -> dict[str, Any]:
        return {
            "sample_id": str(sample.id),
            "query_id": str(finding.query_id),
            "pathology": str(finding.pathology),
            "positive": bool(finding.positive),
        }
