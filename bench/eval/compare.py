"""Paired bootstrap comparison of two methods on the same units (same resample indices).

Both methods' unit tables (afloc: (sample_id, query_id) rows; chexlocalize: CXRs) are aligned
on the units they share, sorted by unit id; one index matrix is drawn from
``RandomState(seed)`` (the official stream) and applied to both, as CheXlocalize's
`calculate_percentage_decrease.py` pairs runs implicitly. The replicate statistic is the macro
mean over categories of the per-category NaN-skipping means; the difference is a - b.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError
from bench.eval.bootstrap import (
    bootstrap_nanmeans,
    intervals,
    official_stream,
    quiet,
)
from bench.eval.protocols import Protocol, get_protocol


def _macro(table: np.ndarray) -> float:
    with quiet():
        return float(np.nanmean(np.nanmean(table, axis=0)))


def paired_comparison(rows_a: pd.DataFrame, rows_b: pd.DataFrame, protocol: Protocol | str,
                      metric: str, n_boot: int, seed: int,
                      tuning_rows_a: pd.DataFrame | None = None,
                      tuning_rows_b: pd.DataFrame | None = None,
                      decided_a: dict[str, Any] | None = None,
                      decided_b: dict[str, Any] | None = None) -> dict[str, Any]:
    """diff = a - b on the dataset, bootstrap mean/lower/upper of the difference, p-value, n.

    Protocols that tune (CheXlocalize thresholds and cutoffs, AFLoc's ``opt_th``) score each
    run at what it chose on its tuning split: pass the runs' summaries as ``decided_a`` /
    ``decided_b`` (or their tuning rows). Without either they tune on the rows compared,
    which is not the official protocol.
    The two-sided p-value is ``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` over the replicates
    with a defined difference.
    """
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    kw_a: dict[str, Any] = {"tuning_rows": tuning_rows_a} if tuning_rows_a is not None else {}
    kw_b: dict[str, Any] = {"tuning_rows": tuning_rows_b} if tuning_rows_b is not None else {}
    if decided_a is not None:
        kw_a["decided"] = decided_a
    if decided_b is not None:
        kw_b["decided"] = decided_b
    ta = proto.unit_table(rows_a, metric, **kw_a)
    tb = proto.unit_table(rows_b, metric, **kw_b)
    if ta.index.has_duplicates or tb.index.has_duplicates:
        raise UsageError("paired comparison: duplicate units in the rows")
    units = ta.index.intersection(tb.index).sort_values()
    cats = sorted(set(ta.columns) | set(tb.columns))
    a = ta.reindex(index=units, columns=cats).to_numpy(np.float64)
    b = tb.reindex(index=units, columns=cats).to_numpy(np.float64)
    n = len(units)
    out: dict[str, Any] = {"metric": metric, "protocol": proto.name, "n": int(n),
                           "n_only_a": int(len(ta.index.difference(units))),
                           "n_only_b": int(len(tb.index.difference(units))),
                           "n_boot": int(n_boot), "seed": int(seed),
                           "a": _macro(a), "b": _macro(b)}
    out["diff"] = out["a"] - out["b"]
    if n_boot > 0 and n > 0:
        both = bootstrap_nanmeans(official_stream(seed), n, n_boot,
                                  np.concatenate([a, b], axis=1))
        k = len(cats)
        with quiet():
            d = np.nanmean(both[:, :k], axis=1) - np.nanmean(both[:, k:], axis=1)
        iv = intervals(d)[0]
        ok = d[~np.isnan(d)]
        p = min(1.0, 2 * min(np.mean(ok <= 0), np.mean(ok >= 0))) if len(ok) else np.nan
        out.update(mean=iv.mean, lower=iv.lower, upper=iv.upper, p_value=float(p))
    else:
        out.update(mean=np.nan, lower=np.nan, upper=np.nan, p_value=np.nan)
    return out
