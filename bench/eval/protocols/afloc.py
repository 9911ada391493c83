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
  plain   (RSNA, COVID, CheXlocalize, MS_CXR_CLS = MS-CXR with the simple prompt, ...):
          avg-IoU, avg-CNR, avg-Dice
  ms-cxr  (MS_CXR, the precise phrase prompt): IoU at t=0.1..0.5, then avg-IoU, avg-CNR,
          avg-Dice
  sicapv2 : (IoU, CNR, Dice) at each t, then avg-IoU, avg-CNR, avg-Dice
"avg" is the threshold-averaged per-row table (`DataFrame.add(fill_value=0)` then / 5).

CheXlocalize (`opt_th`, on by default for chexlocalize datasets, as run.sh passes `--opt_th
--only_pos` there): `get_opt_th` on the val rows picks per category a mask threshold on the
[0, 1] map (0.2..0.8, best only_pos mIoU) and a confidence threshold (0.1..0.8, confidence =
max(clip(raw map, 0, 2) / 2), best IoU with only_pos=False); `test_use_opt_th` then scores
IoU only (mask emptied below the confidence threshold), and bootstraps once per split: the
test bootstrap follows the val bootstrap's draws in the official single process.
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
    threshold_label,
)
from bench.eval.protocols.base import Protocol, number_list
from bench.eval.summary import entry, interval_entry, mean_entry, require_columns, skeleton
from bench.imaging.geometry import (
    Frame,
    boxes_to_letterbox_mask,
    map_to_letterbox,
    mask_to_letterbox,
)
from bench.types import Finding

SIZE = 224
THRESHOLDS = tuple(float(t) for t in np.arange(0.1, 0.6, 0.1))
MASK_GRID = tuple(float(t) for t in np.arange(0.2, 0.8, 0.1))  # get_opt_th (a): 0.2 .. 0.8
CONF_GRID = tuple(float(t) for t in np.arange(0.1, 0.9, 0.1))  # get_opt_th (b): 0.1 .. 0.8
METRICS = ("iou", "dice", "cnr")
STREAMS = ("plain", "ms-cxr", "sicapv2")
_MS_CXR_NAMES = ("ms-cxr", "synthetic-ms-cxr")


def margin_px(size: int = SIZE, resize: int = 512, crop: int = 448) -> tuple[int, int]:
    """`set_margin`: NaN border (before, after) leaving int(crop * size / resize) pixels."""
    kept = int(crop * size / resize)
    pad = size - kept
    return pad // 2, pad - pad // 2


tlabel = threshold_label  # the official `round(threshold, 1)` on its grid; exact elsewhere


def map_to_afloc_frame(heatmap: np.ndarray, frame: Frame, hw: tuple[int, int]) -> np.ndarray:
    """A method's map on the AFLoc 224 letterbox frame (`geometry.map_to_letterbox`)."""
    return map_to_letterbox(heatmap, frame, hw, SIZE)


def row_metrics(heat224: np.ndarray, gt224: np.ndarray, thresholds=THRESHOLDS,
                margin: tuple[int, int] | None = margin_px(),
                rule: str = EITHER_EMPTY_NAN, opt_th: bool = False) -> dict[str, Any]:
    """Metric columns of one row from a 224 map and GT (the official per-sample body of `test`).

    With `opt_th`, also what `get_opt_th` / `test_use_opt_th` need: counts of the [0, 1] map
    above each mask-grid threshold (``inter01@t``, ``pred01@t``) and the confidence
    max(clip(map, 0, 2) / 2) of the raw (margin-cut) map, all in float32.
    """
    h = np.array(heat224, dtype=np.float32)
    # a map with no value at all (a missing map in `bench score`) is no prediction: an empty
    # one on the evaluated field (IoU/Dice NaN under only_pos, as any empty prediction), and
    # no CNR or confidence (there is no map to contrast)
    no_map = bool(np.isnan(h).all())
    if no_map:
        h = np.zeros_like(h)
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
    out["cnr"] = np.nan if no_map else signed_cnr(v, g)
    if no_map:
        out["no_map"] = True
    if opt_th:
        raw = h[valid]
        c01 = threshold_counts(minmax(raw, "01"), g, MASK_GRID)
        for j, t in enumerate(MASK_GRID):
            out[f"inter01@{tlabel(t)}"] = int(c01["inter"][j])
            out[f"pred01@{tlabel(t)}"] = int(c01["pred"][j])
        out["confidence"] = float(np.max((np.clip(raw, 0, 2) - 0) / (2 - 0))) \
            if raw.size and not no_map else np.nan
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
                 official_rounding: bool = False, prompt: str | None = None,
                 group: str = "auto", opt_th: bool | str = "auto", **options: Any) -> None:
        if options:
            raise UsageError(f"afloc protocol: unknown options {sorted(options)}")
        self.thresholds = number_list(thresholds, "afloc protocol: thresholds")
        self.margin = margin_px() if margin else None
        self.sum_boxes = bool(sum_boxes)
        self.rule = EITHER_EMPTY_NAN if only_pos else BOTH_EMPTY_NAN
        # MS-CXR with the category prompt is the official MS_CXR_CLS run: `merge_annotation(
        # use_cxr_text=False)` keys an image's boxes by "Findings suggesting {category}.", so
        # one row per (image, category), and `test` bootstraps only the averaged tables
        ms_cls = (dataset or "").lower() in _MS_CXR_NAMES and prompt == "simple"
        if group == "auto":
            group = "category" if ms_cls else "query"
        if group not in ("query", "category"):
            raise UsageError("afloc protocol: group must be query, category or auto")
        self.group = group
        # run.sh evaluates CHEXLOCALIZE with --opt_th --only_pos: thresholds tuned on val
        if opt_th == "auto":
            opt_th = "chexlocalize" in (dataset or "").lower()
        self.opt_th = str(opt_th).lower() in ("true", "1", "yes")
        if self.opt_th:
            self.tuning_split = "val"
        if stream == "auto":
            stream = "ms-cxr" if (dataset or "").lower() in _MS_CXR_NAMES and not ms_cls \
                else "plain"
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
                         official_rounding=official_rounding, prompt=prompt, group=group,
                         opt_th=self.opt_th)

    # -- rows ----------------------------------------------------------------------------
    def gt_mask(self, sample, finding) -> np.ndarray:
        """The finding's GT on the 224 letterbox frame, as the official loaders build it."""
        hw = sample.hw
        if finding.boxes is not None and len(np.asarray(finding.boxes).reshape(-1, 4)):
            return boxes_to_letterbox_mask(finding.boxes, hw, SIZE, accumulate=self.sum_boxes)
        if finding.mask is not None:
            # the values the official loader resizes, when the adapter kept them (COVID Rural)
            m = np.asarray(finding.meta.get("afloc_mask_values", finding.mask))
            if m.shape[:2] != tuple(hw):
                raise DataError(f"mask of {finding.query_id} is {m.shape[:2]}, image is {hw}",
                                path=sample.meta.get("path", sample.id))
            if not m.any():
                return np.zeros((SIZE, SIZE), dtype=np.uint8)
            how = finding.meta.get("afloc_mask_resize", self.mask_resize)
            return mask_to_letterbox(m, SIZE, 1e-5, np.uint8 if how == "uint8" else np.float32)
        return np.zeros((SIZE, SIZE), dtype=np.uint8)

    def merged_by_category(self, findings, maps) -> tuple[list, list]:
        """One finding per pathology (first-appearance order): boxes pooled (summed into one
        mask, as `mask_dct[label_text] += mask`), masks added; the first finding's map and id."""
        groups: dict[str, list[int]] = {}
        for i, f in enumerate(findings):
            groups.setdefault(f.pathology, []).append(i)
        out_f, out_m = [], []
        for idx in groups.values():
            f0 = findings[idx[0]]
            if len(idx) > 1:
                parts = [findings[i] for i in idx]
                if all(p.boxes is not None and len(np.asarray(p.boxes).reshape(-1, 4))
                       for p in parts):
                    boxes = np.concatenate([np.asarray(p.boxes, np.float64).reshape(-1, 4)
                                            for p in parts])
                    f0 = Finding(f0.pathology, f0.query_id, boxes=boxes, phrase=f0.phrase,
                                 positive=any(p.positive for p in parts), meta=dict(f0.meta))
                else:
                    mask = sum(np.asarray(p.mask, np.uint8) for p in parts
                               if p.mask is not None)
                    f0 = Finding(f0.pathology, f0.query_id, mask=np.asarray(mask, np.uint8),
                                 phrase=f0.phrase, positive=any(p.positive for p in parts),
                                 meta=dict(f0.meta))
            out_f.append(f0)
            out_m.append(maps[idx[0]])
        return out_f, out_m

    def localization_rows(self, sample, findings, maps, frame, probs=None) -> list[dict]:
        rows = []
        if self.group == "category":
            findings, maps = self.merged_by_category(list(findings), list(maps))
        for f, m in zip(findings, maps):
            heat = map_to_afloc_frame(m, frame, sample.hw)
            row = self.id_columns(sample, f)
            row.update(row_metrics(heat, self.gt_mask(sample, f), self.thresholds, self.margin,
                                   self.rule, self.opt_th))
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

    def unit_table(self, rows: pd.DataFrame, metric: str,
                   tuning_rows: pd.DataFrame | None = None,
                   decided: dict[str, Any] | None = None) -> pd.DataFrame:
        """(sample_id, query_id) x category table of one metric ("iou", "iou@0.3", ...).

        With ``opt_th``, "iou" is the summary's IoU: at the run's tuned thresholds
        (``decided``, its summary) or tuned here on `tuning_rows` (else on these rows)."""
        rows, cats = self.ordered(rows)
        name, _, k = metric.partition("@")
        if self.opt_th and metric == "iou":
            th = (decided or {}).get("opt_th") or self.tune_opt_th(
                tuning_rows if tuning_rows is not None else rows)
            vals = self.tuned_ious(rows, cats, th)
        else:
            vals = self.per_row_values(rows)[name][k or "avg"]
        table = _category_table(vals, pd.Index(cats).get_indexer(rows["pathology"].astype(str)),
                                len(cats))
        index = pd.MultiIndex.from_arrays([rows["sample_id"].astype(str),
                                           rows["query_id"].astype(str)])
        return pd.DataFrame(table, index=index, columns=cats)

    # -- the --opt_th path (`get_opt_th` + `test_use_opt_th`, CheXlocalize) ----------------
    def opt_th_ious(self, rows: pd.DataFrame, mask_th: dict[str, float],
                    conf_th: dict[str, float] | None, rule: str) -> np.ndarray:
        """Per-row IoU of ``map01 > mask_th[cat]``, emptied where confidence < conf_th[cat]."""
        path = rows["pathology"].astype(str).to_numpy()
        gt = rows["gt"].to_numpy(np.float64)
        inter, pred = np.zeros(len(rows)), np.zeros(len(rows))
        for cat in pd.unique(path):
            sel = path == cat
            k = tlabel(mask_th[cat])
            inter[sel] = rows.loc[sel, f"inter01@{k}"].to_numpy(np.float64)
            pred[sel] = rows.loc[sel, f"pred01@{k}"].to_numpy(np.float64)
            if conf_th is not None:
                gated = sel & (rows["confidence"].to_numpy(np.float64) < conf_th[cat])
                inter[gated] = 0
                pred[gated] = 0
        return iou_from_counts(inter, pred + gt - inter, pred, gt, rule)

    def tuned_ious(self, rows: pd.DataFrame, cats: list[str],
                   th: dict[str, dict[str, float]]) -> np.ndarray:
        """`test_use_opt_th`'s per-row IoU at tuned (mask, confidence) thresholds per category."""
        missing = sorted(set(cats) - set(th))
        if missing:
            raise UsageError(f"afloc opt_th: no tuned thresholds for {missing}")
        return self.opt_th_ious(rows, {c: th[c]["mask"] for c in cats},
                                {c: th[c]["confidence"] for c in cats}, self.rule)

    def tune_opt_th(self, rows: pd.DataFrame) -> dict[str, dict[str, float]]:
        """`get_opt_th`: per category, (a) the mask threshold on the [0, 1] map with the best
        only_pos mIoU over 0.2..0.8, then (b) the confidence threshold over 0.1..0.8 with the
        best IoU (only_pos=False) under (a). numpy argmax over thresholds (a NaN wins, first
        maximum otherwise); values rounded to 3 decimals, as the CSVs store them."""
        rows, cats = self.ordered(rows)
        path = rows["pathology"].astype(str).to_numpy()
        groups = [np.flatnonzero(path == c) for c in cats]

        def best(grid, score) -> dict[str, float]:
            table = np.array([_cat_nanmeans(score(t), groups) for t in grid])
            arg = table.argmax(axis=0)
            return {c: round(float(grid[arg[j]]), 3) for j, c in enumerate(cats)}

        mask_th = best(MASK_GRID, lambda t: self.opt_th_ious(
            rows, dict.fromkeys(cats, t), None, EITHER_EMPTY_NAN))
        conf_th = best(CONF_GRID, lambda t: self.opt_th_ious(
            rows, mask_th, dict.fromkeys(cats, t), BOTH_EMPTY_NAN))
        return {c: {"mask": mask_th[c], "confidence": conf_th[c]} for c in cats}

    def summarize_opt_th(self, rows: pd.DataFrame, n_boot: int, seed: int,
                         tuning_rows: pd.DataFrame | None) -> dict[str, Any]:
        """`test_use_opt_th` (IoU only). The official runs it on val, then on test, in one
        process seeded once: the test bootstrap follows the val bootstrap's 1000 draws, which
        are skipped here (when this is the val split itself, nothing is skipped)."""
        need = ["sample_id", "query_id", "pathology", "gt", "confidence"] + [
            f"{c}@{tlabel(t)}" for t in MASK_GRID for c in ("inter01", "pred01")]
        require_columns(rows, need, "afloc (opt_th)")
        tune = tuning_rows if tuning_rows is not None else rows
        require_columns(tune, need, "afloc (opt_th) tuning")
        th = self.tune_opt_th(tune)
        rows, cats = self.ordered(rows)
        n = len(rows)
        ious = self.tuned_ious(rows, cats, th)
        path = rows["pathology"].astype(str).to_numpy()
        code = pd.Index(cats).get_indexer(path)
        groups = [np.flatnonzero(code == j) for j in range(len(cats))]
        n_skip = len(tuning_rows) if tuning_rows is not None else 0
        out = skeleton("localization", self.name, n, rows["sample_id"].nunique(), n_boot, seed,
                       "row", stream="opt_th", skipped_draws=n_skip * (n_boot > 0),
                       official_rounding=self.official_rounding)
        out["opt_th"] = {c: th[c] for c in sorted(th)}
        out["tuned_on"] = "tuning split" if tuning_rows is not None else "these rows"
        ivs = None
        if n_boot > 0:
            rng = official_stream(seed)
            if n_skip:
                bootstrap_nanmeans(rng, n_skip, n_boot, np.zeros((n_skip, 1)))
            ivs = intervals(bootstrap_nanmeans(rng, n, n_boot,
                                               _category_table(ious, code, len(cats))))
        dm = _cat_nanmeans(ious, groups)
        counts = _cat_counts(ious, groups)
        per = {c: self._entry(ivs, j, float(dm[j]), int(counts[j])) for j, c in enumerate(cats)}
        with quiet():
            macro = float(np.nanmean(dm)) if len(dm) else np.nan
        out["metrics"]["iou"] = {"overall": self._overall(per, macro, int(counts.sum())),
                                 "per_category": per}
        return out

    def summarize(self, rows: pd.DataFrame, n_boot: int, seed: int,
                  tuning_rows: pd.DataFrame | None = None) -> dict[str, Any]:
        if len(rows) == 0:
            return skeleton("localization", self.name, 0, 0, n_boot, seed, "row",
                            stream=self.stream, draws=[])
        if self.opt_th:
            return self.summarize_opt_th(rows, n_boot, seed, tuning_rows)
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
            # every official per-sample value is a float64 (CNR too: numpy 1.21 promotes its
            # final `pow(float32, 0.5)` to float64), so `dict_mean` accumulates in float64
            dt = np.float64
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
