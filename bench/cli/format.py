"""Plain-text rendering of run summaries for the terminal."""

from __future__ import annotations

import math
from typing import Any

LOC_METRICS = (("iou", "IoU"), ("dice", "Dice"), ("cnr", "CNR"), ("hit", "Hit"))
CLS_METRICS = (("auroc", "AUROC"),)


def fmt_ci(stat: dict[str, Any] | None, digits: int = 3) -> str:
    """A summary entry in the paper's format, `0.342 (0.332, 0.350)`, as the tables print it;
    `0.342 (CI not estimable)` where a bound is missing or upper < lower (tiny sets)."""
    from bench.report.build import MISSING
    from bench.report.build import fmt_ci as fmt_values

    if not stat:
        return MISSING
    return fmt_values(stat.get("mean"), stat.get("lower"), stat.get("upper"), digits)


def summary_row(info: dict[str, Any], summary: dict[str, Any]) -> dict[str, str]:
    metrics = summary.get("metrics", {})
    name = info["method"] + (f"@{info['method_tag']}" if info.get("method_tag") else "")
    row = {
        "method": name,
        "dataset": info["dataset"] + (" (synthetic)" if info.get("synthetic")
                                      and "synthetic" not in info["dataset"] else ""),
        "split": str(info.get("split")),
        "protocol": str(info.get("protocol")) + (f"/{info['prompt']}" if info.get("prompt")
                                                 else ""),
        "n": str(summary.get("n_rows", "")),
    }
    for key, label in LOC_METRICS + CLS_METRICS:
        if key in metrics:
            row[label] = fmt_ci(metrics[key].get("overall"))
    return row


def render_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no runs)"
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    sep = "  ".join("-" * widths[c] for c in cols)
    body = ["  ".join(r.get(c, "").ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join([line, sep, *body])


def render_comparison(c: dict[str, Any]) -> str:
    p = c.get("p_value")
    ptxt = "nan" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.4f}"
    return (f"{c['metric']} {c['a']} - {c['b']} on {c['dataset']}: "
            f"{fmt_ci({'mean': c['diff'], 'lower': c['lower'], 'upper': c['upper']})}"
            f", p = {ptxt} (paired bootstrap, n = {c.get('n')})")
