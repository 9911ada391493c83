"""The protocol interface: how raw maps become metric rows, and rows become a summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.imaging.geometry import Frame
from bench.types import Finding, Sample

ID_COLUMNS = ("sample_id", "query_id", "pathology", "positive")


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
