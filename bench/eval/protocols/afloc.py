"""The `afloc` protocol: the official AFLoc localization evaluation (`localization/common.py:test`).

Per (image, query) row, on the 224 letterbox frame:
  heatmap -> 224 letterbox (bilinear, align_corners=False) -> 14-px NaN margin (`set_margin`,
  int(448 * 224 / 512) = 196 kept) -> min-max of the non-NaN pixels to [-1, 1] (float32) ->
  ``pred = map > t`` for t in np.arange(0.1, 0.6, 0.1) -> IoU, Dice (NaN if either mask is
  empty, `only_pos=True`) and signed CNR (re-normalised map, numpy float32 mean/var).
GT: boxes mapped by `box_mapping` (scale, floor(pad/2) offset, floor) and, as the official
MS-CXR/RSNA loaders do, *summed* (`sum_boxes=True`: Dice counts overlap 2s, CNR's ==1/==0
drops them); masks letterboxed with INTER_AREA then ``>= 1e-5``.

Summary (`bootci`): rows are grouped by category in order of first appearance (the official
`to_metric_df` layout), each replicate draws ``np.random.choice(N, N)`` from one stream seeded
once; per category NaN-skipping means; bounds at sorted indices 24/974; bootstrap mean; the
`overall` row averages lower/mean/upper over categories (the official last row). Which draws each
bootstrap uses follows the official call order (`stream`):
  plain   (RSNA, COVID, CheXlocalize, ...): avg-IoU, avg-CNR, avg-Dice
  ms-cxr  (MS_CXR): IoU at t=0.1..0.5, then avg-IoU, avg-CNR, avg-Dice
  sicapv2 : (IoU, CNR, Dice) at each t, then avg-IoU, avg-CNR, avg-Dice
"avg" is the threshold-averaged per-row table (`DataFrame.add(fill_value=0)` then / 5).
Per-threshold intervals the official code never computes come from the draws that follow, in
threshold order, metrics IoU, CNR, Dice; `bootstrap.draws` in the summary lists every draw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.errors import DataError, UsageError
from bench.eval.bootstrap import (
    bootstrap_nanmeans,
    intervals,
    official_stream,
    quiet,
)
from bench.eval.metrics import (
    BOTH_EMPTY_NAN,
    EITHER_EMPTY_NAN,
    dice_from_counts,
    iou_from_counts,
    minmax,
    signed_cnr,
    threshold_counts,
)
from bench.eval.protocols.base import Protocol
from bench.eval.summary import entry, interval_entry, mean_entry, require_columns, skeleton
from bench.imaging.geometry import (
    LETTERBOX,
    Frame,
    boxes_to_letterbox_mask,
    letterbox_placement,
    map_to_original,
    mask_to_letterbox,
    resize_map,
)

SIZE = 224
THRESHOLDS = tuple(float(t) for t in np.arange(0.1, 0.6, 0.1))
METRICS = ("iou", "dice", "cnr")
STREAMS = ("plain", "ms-cxr", "sicapv2")
_MS_CXR_NAMES = ("ms-cxr", "synthetic-ms-cxr")


def margin_px(size: int = SIZE, resize: int = 512, crop: int = 448) -> tuple[int, int]:
    """`set_margin`: NaN border (before, after) leaving int(crop * size / resize) pixels."""
    kept = int(crop * size / resize)
    pad = size - kept
    return pad // 2, pad - pad // 2


def tlabel(t: float) -> str:
    """Column label of a threshold (the official `round(threshold, 1)`)."""
    return f"{round(float(t), 1):.1f}"


def map_to_afloc_frame(heatmap: np.ndarray, frame: Frame, hw: tuple[int, int]) -> np.ndarray:
    """A method's map on the AFLoc 224 letterbox frame (float32, NaN where the method saw nothing).

    A map already on a plain letterbox frame is only resized (bilinear, align_corners=False, as
    the official `F.interpolate` from the patch grid). Any other frame is carried to the
    original image and letterboxed; the padding it never saw is NaN (excluded from metrics).
    """
    if frame.kind == LETTERBOX and frame.pre is None:
        return resize_map(np.asarray(heatmap, dtype=np.float32), (SIZE, SIZE))
    orig = map_to_original(np.asarray(heatmap, dtype=np.float32), frame, hw)
    p = letterbox_placement(hw[0], hw[1], SIZE)
    out = np.full((SIZE, SIZE), np.nan, dtype=np.float32)
    out[p.top:p.top + p.new_h, p.left:p.left + p.new_w] = resize_map(orig, (p.new_h, p.new_w))
    return out


def row_metrics(heat224: np.ndarray, gt224: np.ndarray, thresholds=THRESHOLDS,
                margin: tuple[int, int] | None = margin_px(),
                rule: str = EITHER_EMPTY_NAN) -> dict[str, Any]:
    """Metric columns of one row from a 224 map and GT (the official per-sample body of `test`)."""
    h = np.array(heat224, dtype=np.float32)
    if margin is not None and (margin[0] or margin[1]):
        a, b = margin
        h[:a, :] = np.nan
        h[SIZE - b:, :] = np.nan
        h[:, :a] = np.nan
        h[:, SIZE - b:] = np.nan
    valid = ~np.isnan(h)
    v = minmax(h[valid], "pm1")
    g = np.asarray(gt224)[valid]
    c = threshold_counts(v, g, thresholds)
    iou = iou_from_counts(c["inter"], c["union"], c["pred"], c["gt"], rule)
    dice = dice_from_counts(c["inter"], c["pred"], c["gt"], c["gt_sum"], rule)
    out: dict[str, Any] = {"n_pixels": int(v.size), "gt": int(c["gt"]), "gt_sum": int(c["gt_sum"])}
    for j, t in enumerate(thresholds):
        k = tlabel(t)
        out[f"inter@{k}"] = int(c["inter"][j])
        out[f"union@{k}"] = int(c["union"][j])
        out[f"pred@{k}"] = int(c["pred"][j])
        out[f"iou@{k}"] = float(iou[j])
        out[f"dice@{k}"] = float(dice[j])
    out["cnr"] = signed_cnr(v, g)
    return out


class AflocProtocol(Protocol):
    name = "afloc"
    description = ("AFLoc official: 224 letterbox, 14-px margin, [-1,1] map, thresholds "
                   "0.1-0.5, IoU/Dice (NaN if a mask is empty), signed CNR, per-category "
                   "means, macro mean, 1000x row bootstrap (seed 0, indices 24/974)")
    tuning_split = None
    bootstrap_unit = "row"

    def __init__(self, thresholds=THRESHOLDS, margin: bool = True, sum_boxes: bool = True,
                 only_pos: bool = True, stream: str = "auto", dataset: str | None = None,
                 mask_resize: str = "auto", per_threshold_ci: bool = True,
                 official_rounding: bool = False, **options: Any) -> None:
        if options:
            raise UsageError(f"afloc protocol: unknown options {sorted(options)}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.margin = margin_px() if margin else None
        self.sum_boxes = bool(sum_boxes)
        self.rule = EITHER_EMPTY_NAN if only_pos else BOTH_EMPTY_NAN
        if stream == "auto":
            stream = "ms-cxr" if (dataset or "").lower() in _MS_CXR_NAMES else "plain"
        if stream not in STREAMS:
            raise UsageError(f"afloc protocol: stream must be one of {STREAMS}, not {stream!r}")
        self.stream = stream
        if mask_resize == "auto":
            mask_resize = "uint8" if "chexlocalize" in (dataset or "").lower() else "float32"
        if mask_resize not in ("float32", "uint8"):
            raise UsageError("afloc protocol: mask_resize must be float32, uint8 or auto")
        self.mask_resize = mask_resize
        self.per_threshold_ci = bool(per_threshold_ci)
        self.official_rounding = bool(official_rounding)
        super().__init__(thresholds=list(self.thresholds), margin=margin, sum_boxes=sum_boxes,
                         only_pos=only_pos, stream=stream, dataset=dataset,
                         mask_resize=mask_resize, per_threshold_ci=per_threshold_ci,
                         official_rounding=official_rounding)

    # -- rows ----------------------------------------------------------------------------
    def gt_mask(self, sample, finding) -> np.ndarray:
        """The finding's GT on the 224 letterbox frame, as the official loaders build it."""
        hw = sample.hw
        if finding.boxes is not None and len(np.asarray(finding.boxes).reshape(-1, 4)):
            return boxes_to_letterbox_mask(finding.boxes, hw, SIZE, accumulate=self.sum_boxes)
        if finding.mask is not None:
            m = np.asarray(finding.mask)
            if m.shape[:2] != tuple(hw):
                raise DataError(f"mask of {finding.query_id} is {m.shape[:2]}, image is {hw}",
                                path=sample.meta.get("path", sample.id))
            if not m.any():
                return np.zeros((SIZE, SIZE), dtype=np.uint8)
            how = finding.meta.get("afloc_mask_resize", self.mask_resize)
            return mask_to_letterbox(m, SIZE, 1e-5, np.uint8 if how == "uint8" else np.float32)
        return np.zeros((SIZE, SIZE), dtype=np.uint8)

    def localization_rows(self, sample, findings, maps, frame, probs=None) -> list[dict]:
        rows = []
        for f, m in zip(findings, maps):
            heat = map_to_afloc_frame(m, frame, sample.hw)
            row = self.id_columns(sample, f)
            row.update(row_metrics(heat, self.gt_mask(sample, f), self.thresholds, self.margin,
                                   self.rule))
            rows.append(row)
        return rows

    # -- summary -------------------------------------------------------------------------
    def per_row_values(self, rows: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
        """metric -> {threshold label or "avg" -> per-row values}, NaN rule re-derived from counts.

        "avg" reproduces `reduce(DataFrame.add(fill_value=0)) / n_thresholds`: a NaN at some
        thresholds counts as 0 there; NaN only where every threshold is NaN.
        """
        out: dict[str, dict[str, np.ndarray]] = {m: {} for m in METRICS}
        gt = rows["gt"].to_numpy(np.float64)
        gt_sum = rows["gt_sum"].to_numpy(np.float64)
        cnr = rows["cnr"].to_numpy(np.float64)
        for t in self.thresholds:
            k = tlabel(t)
            inter, union, pred = (rows[f"{c}@{k}"].to_numpy(np.float64)
                                  for c in ("inter", "union", "pred"))
            out["iou"][k] = iou_from_counts(inter, union, pred, gt, self.rule)
            out["dice"][k] = dice_from_counts(inter, pred, gt, gt_sum, self.rule)
            out["cnr"][k] = cnr
        for m in METRICS:
            acc = None
            for t in self.thresholds:
                x = out[m][tlabel(t)]
                if acc is None:
                    acc = x.copy()
                else:
                    both = np.isnan(acc) & np.isnan(x)
                    acc = np.where(both, np.nan, np.nan_to_num(acc) + np.nan_to_num(x))
            out[m]["avg"] = acc / len(self.thresholds)
        return out

    def draw_plan(self) -> list[tuple[str, str]]:
        """(metric, threshold label | "avg") in the order the bootstraps consume the stream."""
        labels = [tlabel(t) for t in self.thresholds]
        plan: list[tuple[str, str]] = []
        if self.stream == "ms-cxr":
            plan += [("iou", k) for k in labels]
        elif self.stream == "sicapv2":
            plan += [(m, k) for k in labels for m in ("iou", "cnr", "dice")]
        plan += [("iou", "avg"), ("cnr", "avg"), ("dice", "avg")]
        if self.per_threshold_ci:
            plan += [(m, k) for k in labels for m in ("iou", "cnr", "dice")
                     if (m, k) not in plan]
        return plan

    def ordered(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """Rows grouped by category in first-appearance order (official `to_metric_df`)."""
        cats = list(pd.unique(rows["pathology"].astype(str)))
        rank = pd.Index(cats).get_indexer(rows["pathology"].astype(str))
        order = np.argsort(rank, kind="stable")
        return rows.iloc[order].reset_index(drop=True), cats

    def unit_table(self, rows: pd.DataFrame, metric: str) -> pd.DataFrame:
        """(sample_id, query_id) x category table of one metric ("iou", "iou@0.3", ...)."""
        rows, cats = self.ordered(rows)
        name, _, k = metric.partition("@")
        vals = self.per_row_values(rows)[name][k or "avg"]
        table = _category_table(vals, pd.Index(cats).get_indexer(rows["pathology"].astype(str)),
                                len(cats))
        index = pd.MultiIndex.from_arrays([rows["sample_id"].astype(str),
                                           rows["query_id"].astype(str)])
        return pd.DataFrame(table, index=index, columns=cats)

    def summarize(self, rows: pd.DataFrame, n_boot: int, seed: int,
                  tuning_rows: pd.DataFrame | None = None) -> dict[str, Any]:
        if len(rows) == 0:
            return skeleton("localization", self.name, 0, 0, n_boot, seed, "row",
                            stream=self.stream, draws=[])
        need = ["sample_id", "query_id", "pathology", "gt", "gt_sum", "cnr"] + [
            f"{c}@{tlabel(t)}" for t in self.thresholds for c in ("inter", "union", "pred")]
        require_columns(rows, need, "afloc")
        rows, cats = self.ordered(rows)
        n = len(rows)
        vals = self.per_row_values(rows)
        path = rows["pathology"].astype(str).to_numpy()
        code = pd.Index(cats).get_indexer(path)
        groups = [np.flatnonzero(code == j) for j in range(len(cats))]
        labels = [tlabel(t) for t in self.thresholds]
        plan = self.draw_plan()
        out = skeleton("localization", self.name, n, rows["sample_id"].nunique(), n_boot, seed,
                       "row", stream=self.stream,
                       draws=[f"{m}@{k}" for m, k in plan] if n_boot > 0 else [],
                       thresholds=labels, official_rounding=self.official_rounding)

        rng = official_stream(seed)
        boot: dict[tuple[str, str], list] = {}
        for m, k in plan:
            if n_boot > 0:
                table = _category_table(vals[m][k], code, len(cats))
                reps = bootstrap_nanmeans(rng, n, n_boot, table)
                boot[(m, k)] = intervals(reps)

        for m in METRICS:
            # the official per-sample CNR is a numpy float32, so its table means accumulate in
            # float32 (`dict_mean` over lists of float32); IoU and Dice are float64
            dt = np.float32 if m == "cnr" else np.float64
            dm = {k: _cat_nanmeans(vals[m][k].astype(dt), groups) for k in labels}
            dm["avg"] = _cat_nanmeans(vals[m]["avg"], groups)
            counts = {k: _cat_counts(vals[m][k], groups) for k in labels + ["avg"]}
            with quiet():
                per_t_macro = {k: float(np.nanmean(dm[k].astype(dt))) for k in labels}
                thr_cat = np.nanmean(np.stack([dm[k] for k in labels]), axis=0)
                overall_dm = float(np.mean(np.array([per_t_macro[k] for k in labels], dt)))
            res: dict[str, Any] = {}
            res["per_category"] = {
                c: self._entry(boot.get((m, "avg")), j, float(thr_cat[j]), int(counts["avg"][j]))
                for j, c in enumerate(cats)}
            res["overall"] = self._overall(res["per_category"], overall_dm,
                                           int(counts["avg"].sum()))
            per_thr = {}
            for k in labels:
                pc = {c: self._entry(boot.get((m, k)), j, float(dm[k][j]), int(counts[k][j]))
                      for j, c in enumerate(cats)}
                per_thr[k] = {"overall": self._overall(pc, per_t_macro[k],
                                                       int(counts[k].sum())),
                              "per_category": pc}
            res["per_threshold"] = per_thr
            out["metrics"][m] = res
        return out

    def _entry(self, ivs, j: int, dataset_mean: float, n: int) -> dict[str, Any]:
        if ivs is None:
            return entry(np.nan, np.nan, np.nan, dataset_mean, n)
        e = interval_entry(ivs[j], dataset_mean, n)
        if self.official_rounding:
            for key in ("mean", "lower", "upper"):
                e[key] = float(np.round(e[key], 3))
        return e

    def _overall(self, per_cat: dict[str, dict], dataset_mean: float, n: int) -> dict:
        e = mean_entry(list(per_cat.values()), n)
        e["dataset_mean"] = dataset_mean
        if self.official_rounding:
            for key in ("mean", "lower", "upper"):
                e[key] = float(np.round(e[key], 3))
        return e


def _category_table(values: np.ndarray, code: np.ndarray, k: int) -> np.ndarray:
    """N x K: each row's value in its category's column, NaN elsewhere (`to_metric_df`)."""
    table = np.full((len(values), k), np.nan)
    table[np.arange(len(values)), code] = values
    return table


def _cat_nanmeans(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Per-category NaN-skipping means, accumulated in the values' dtype (as numpy does)."""
    with quiet():
        return np.array([np.nanmean(values[g]) if len(g) else np.nan for g in groups],
                        dtype=values.dtype)


def _cat_counts(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    return np.array([int((~np.isnan(values[g])).sum()) for g in groups])
