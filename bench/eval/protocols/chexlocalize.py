"""The `chexlocalize` protocol: the official CheXlocalize evaluation (rajpurkarlab/cheXlocalize).

Per (CXR, task) row at native resolution:
  map -> original H x W (bilinear, align_corners=False, `create_map` / `pkl_to_mask`) ->
  min-max to [0, 1] in float32 (no epsilon) -> segmentation, either ``map > threshold`` with a
  per-task threshold tuned on the validation rows over np.arange(0.2, 0.8, 0.1) (7 values; the
  first maximal true-positive mIoU wins, `tune_heatmap_threshold.py`; the chosen value is
  rounded to one decimal as its CSV stores it) or Otsu (`method="otsu"`: uint8 map, optional
  JET/box-filter smoothing, cv2 Otsu, RETR_TREE contours filled with PIL).
  Optional probability gate: an empty mask when prob < cutoff (`pkl_to_mask`); the cutoff is
  fixed, per task, or ``"tune"``d on the validation rows as `tune_probability_threshold.py`
  does: Otsu masks kept when prob > c for c in np.arange(0, .9, .1) (compared in the pkl's own
  type: a float as a float, a float32 tensor in float32; `prob_above`), IoU with
  true_pos_only=False over every CXR of the task (no GT -> empty GT), mIoU rounded to 3
  decimals, the first maximal cutoff wins (`groupby('task')['mIoU'].idxmax()` on its CSV),
  applied rounded to one decimal.
  IoU: true_pos_only (default) NaN if either mask is empty; otherwise NaN only if both are.
  Hit (pointing game, `get_hitrates`): GT == 1 at the first argmax of the upsampled map, NaN if
  the GT is empty; no gate. A missing map (`bench score`) is an empty prediction for IoU, as
  `eval.py` scores a CXR absent from the predictions (NaN under true_pos_only, 0 otherwise when
  the GT is not empty), and has no hit (NaN) and no say in cutoff tuning, as the official
  scripts iterate the pkls they find. That is the official HEAD's `get_map` and the default
  (`hit="map"`). One official commit (a9619f8, "use pkl_to_mask func") took the argmax of
  `pkl_to_mask(pkl_path)` instead, i.e. of the default Otsu segmentation, whose first segmented
  pixel in row-major order is the point; the next commit (ea1e035) went back to the map.
  `hit="segmentation"` reproduces that one commit, for comparison only.
The rows keep counts for every grid threshold, so tuning and gating happen in `summarize`.

Summary (`eval.py:evaluate`): one table per metric with one row per CXR sorted by id, one column
per task; the IoU table holds the CXRs of the GT file (those with a positive task: `in_gt`), or
every CXR when true_pos_only is False (prediction-only CXRs join with an empty GT); the hit table
holds the GT-file CXRs. Each metric is bootstrapped in its own run of the official script, so
each starts from ``np.random.seed(seed)``: 1000 x ``np.random.choice(N, N)``, all tasks share the
indices; NaN-skipping means; bounds at sorted indices 24/974; bootstrap mean reported
(PR #6, dataset mean, was never merged) and the dataset mean beside it. `overall` averages the
per-task entries (the official output has no overall row).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

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
    iou_from_counts,
    minmax,
    pointing_hit,
    threshold_counts,
    threshold_label,
)
from bench.eval.protocols.base import Protocol, finite_number, number_map
from bench.eval.summary import interval_entry, mean_entry, require_columns, skeleton
from bench.imaging.geometry import map_to_original

GRID = tuple(float(t) for t in np.arange(0.2, 0.8, 0.1))  # 7 values, the last is 0.7999...
CUTOFF_GRID = tuple(float(t) for t in np.arange(0, 0.9, 0.1))  # 0.0 .. 0.8 (0.30000000000000004)
# `tune_probability_threshold.py`: Lung Lesion's search starts at 0.1 (its val set has one
# segmentation)
CUTOFF_FROM = {"Lung Lesion": 0.1}
METHODS = ("threshold", "otsu")
HIT_SOURCES = ("map", "segmentation")


tlabel = threshold_label  # one decimal on the grid; a user's 0.45 stays 0.45


def cutoff_grid(task: str) -> tuple[float, ...]:
    """The probability cutoffs searched for `task`."""
    lo = CUTOFF_FROM.get(task)
    return CUTOFF_GRID if lo is None else tuple(c for c in CUTOFF_GRID if c >= lo - 1e-9)


def otsu_segmentation(norm01: np.ndarray, smoothing: bool = False, k: int = 0) -> np.ndarray:
    """`cam_to_segmentation` with no threshold: Otsu on the uint8 map, contours filled (0/1)."""
    mask = np.uint8(255 * np.nan_to_num(norm01, nan=0.0))
    if smoothing:
        heat = cv2.applyColorMap(mask, cv2.COLORMAP_JET)
        gray = cv2.boxFilter(cv2.cvtColor(heat, cv2.COLOR_RGB2GRAY), -1, (k, k))
        mask = 255 - gray
    maxval = np.max(mask)
    thresh = cv2.threshold(mask, 0, int(maxval), cv2.THRESH_OTSU)[1]
    cnts = cv2.findContours(thresh, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    cnts = cnts[0] if len(cnts) == 2 else cnts[1]
    seg = Image.new("1", (mask.shape[1], mask.shape[0]))
    draw = ImageDraw.Draw(seg)
    for cnt in cnts:
        if len(cnt) > 1:
            draw.polygon([(int(p[0][0]), int(p[0][1])) for p in cnt], outline=1, fill=1)
    return np.array(seg, dtype=np.uint8)


def points_hit(points, gt: np.ndarray) -> float:
    """CheXlocalize `get_hb_hitrates`: NaN if the GT is empty; 0 without a point; 1 if any
    point [x, y] lands in the GT (indexed gt[int(y), int(x)])."""
    if not gt.any():
        return np.nan
    pts = np.asarray(points if points is not None else [], dtype=np.float64).reshape(-1, 2)
    return float(any(gt[int(y), int(x)] for x, y in pts))


def prob_above(prob: np.ndarray, f32: np.ndarray, cutoff: float) -> np.ndarray:
    """`pred_prob > cutoff` of `tune_probability_threshold.py`: in float32 where the pkl's prob
    was a float32 tensor (torch compares in the tensor's dtype), else in float64."""
    p32 = prob.astype(np.float32)
    return np.where(f32, p32 > np.float32(cutoff), prob > cutoff)


def prob_below(prob: np.ndarray, f32: np.ndarray, cutoff: float) -> np.ndarray:
    """`pred_prob < prob_cutoff` of `pkl_to_mask` (the gate), float32 where it compares a
    tensor (not the 14-vector, whose entry it takes with `.item()`)."""
    p32 = prob.astype(np.float32)
    return np.where(f32, p32 < np.float32(cutoff), prob < cutoff)


def _flag(rows: pd.DataFrame, column: str) -> np.ndarray:
    """A boolean row column; False where rows lack it (probabilities that are floats)."""
    if column not in rows.columns:
        return np.zeros(len(rows), dtype=bool)
    return rows[column].fillna(False).to_numpy(bool)


def pick_threshold(mious: list[float], grid=GRID) -> float:
    """`thresholds[mious.index(max(mious))]`, with Python's max over NaN (a leading NaN wins)."""
    best = max(mious)  # same NaN behaviour as the official list max
    j = next(i for i, m in enumerate(mious) if m is best or m == best)
    return round(float(grid[j]), 1)


class ChexlocalizeProtocol(Protocol):
    name = "chexlocalize"
    description = ("CheXlocalize official: native resolution, per-task threshold tuned on val "
                   "(0.2-0.8) or Otsu, true-positive IoU, pointing-game hit rate, 1000x CXR "
                   "bootstrap (seed 0, indices 24/974)")
    bootstrap_unit = "image"

    def __init__(self, method: str = "threshold", thresholds: dict[str, float] | None = None,
                 true_pos_only: bool = True, prob_cutoff: float | dict[str, float] | None = None,
                 smoothing: bool = False, k: int = 0, official_rounding: bool = False,
                 dataset: str | None = None, prompt: str | None = None, hit: str = "map",
                 **options: Any) -> None:
        del dataset, prompt  # passed by the evaluator to every protocol; no variant here
        if options:
            raise UsageError(f"chexlocalize protocol: unknown options {sorted(options)}")
        if hit not in HIT_SOURCES:
            raise UsageError(f"chexlocalize protocol: hit must be one of {HIT_SOURCES}")
        self.hit = hit
        if method not in METHODS:
            raise UsageError(f"chexlocalize protocol: method must be one of {METHODS}")
        self.method = method
        self.fixed = number_map(thresholds, "chexlocalize protocol: thresholds") \
            if thresholds is not None else {}
        on_grid = {tlabel(t) for t in GRID}
        extra = {tlabel(t): t for t in sorted(self.fixed.values()) if tlabel(t) not in on_grid}
        self.grid = GRID + tuple(extra.values())
        self.true_pos_only = bool(true_pos_only)
        self.rule = EITHER_EMPTY_NAN if true_pos_only else BOTH_EMPTY_NAN
        self.tune_cutoffs = isinstance(prob_cutoff, str)
        bad_number = (prob_cutoff is not None and not isinstance(prob_cutoff, (str, dict))
                      and ((c := finite_number(prob_cutoff)) is None or not 0 <= c <= 1))
        if (self.tune_cutoffs and prob_cutoff != "tune") or bad_number:
            raise UsageError(f"chexlocalize protocol: prob_cutoff must be a number in [0, 1], a "
                             f"{{task: number}} map or 'tune', not {prob_cutoff!r}")
        if isinstance(prob_cutoff, dict):
            prob_cutoff = number_map(prob_cutoff, "chexlocalize protocol: prob_cutoff", 0, 1)
        self.prob_cutoff = None if self.tune_cutoffs else prob_cutoff
        self.wants_probs = prob_cutoff is not None
        self.smoothing, self.k = bool(smoothing), int(k)
        self.official_rounding = bool(official_rounding)
        self.tuning_split = ("val" if (method == "threshold" and not self.fixed)
                             or self.tune_cutoffs else None)
        super().__init__(method=method, thresholds=self.fixed or None,
                         true_pos_only=true_pos_only, prob_cutoff=prob_cutoff,
                         smoothing=smoothing, k=k, official_rounding=official_rounding,
                         hit=hit)

    # -- rows ----------------------------------------------------------------------------
    @staticmethod
    def gt_native(sample, finding) -> np.ndarray:
        hw = tuple(sample.hw)
        if finding.mask is not None:
            m = np.asarray(finding.mask)
            if m.shape[:2] != hw:
                raise DataError(f"mask of {finding.query_id} is {m.shape[:2]}, image is {hw}",
                                path=sample.meta.get("path", sample.id))
            return (m != 0).astype(np.uint8)
        g = np.zeros(hw, dtype=np.uint8)
        if finding.boxes is not None:
            for x, y, w, h in np.asarray(finding.boxes, dtype=np.float64).reshape(-1, 4):
                g[int(y):int(y + h), int(x):int(x + w)] = 1
        return g

    def localization_rows(self, sample, findings, maps, frame, probs=None,
                          points=None, prob_f32=None) -> list[dict]:
        """`points`, when a method gives them (the human benchmark's salient points), replace
        the map's argmax in the hit rate, as CheXlocalize's `get_hb_hitrates` does.
        `prob_f32`, when the method knows them (pkls): per finding, whether the official
        scripts compare its prob in float32 when tuning cutoffs and in the gate (`read_prob`)."""
        hw = tuple(sample.hw)
        gts = [self.gt_native(sample, f) for f in findings]
        in_gt = bool(sample.meta.get("in_gt", any(g.any() for g in gts)))
        probs = list(probs) if probs is not None else [None] * len(findings)
        points = list(points) if points is not None else [False] * len(findings)
        f32s = list(prob_f32) if prob_f32 is not None else [None] * len(findings)
        rows = []
        for f, m, g, p, pts, f32 in zip(findings, maps, gts, probs, points, f32s):
            heat = map_to_original(np.asarray(m, dtype=np.float32), frame, hw)
            valid = ~np.isnan(heat)
            no_map = not valid.any()  # a missing map (`bench score`): no prediction at all
            if no_map:  # an empty prediction on the whole image, as eval.py scores a CXR
                valid = np.ones(heat.shape, dtype=bool)  # missing from the predictions
                heat = np.zeros(heat.shape, dtype=np.float32)
            norm = np.full(heat.shape, np.nan, dtype=np.float32)
            norm[valid] = minmax(heat[valid], "01")
            c = threshold_counts(norm[valid], g[valid], self.grid)
            row = self.id_columns(sample, f)
            seg = None
            if self.method == "otsu":
                seg = otsu_segmentation(norm, self.smoothing, self.k)
                seg[~valid] = 0
            if no_map:  # `get_hitrates` iterates the maps it finds: no map, no hit
                hit = np.nan
            elif pts is not False:
                hit = points_hit(pts, g)
            elif self.hit == "segmentation":  # a9619f8: argmax of the `pkl_to_mask` output
                hit = pointing_hit(otsu_segmentation(norm) * valid, g)
            else:
                hit = pointing_hit(heat, g)
            row.update({"in_gt": in_gt, "prob": np.nan if p is None else float(p),
                        "gt": int(c["gt"]), "hit": hit})
            if f32 is not None:
                row["prob_tune_f32"], row["prob_gate_f32"] = bool(f32[0]), bool(f32[1])
            if no_map:
                row["no_map"] = True
            for j, t in enumerate(self.grid):
                row[f"inter@{tlabel(t)}"] = int(c["inter"][j])
                row[f"pred@{tlabel(t)}"] = int(c["pred"][j])
            if self.method != "otsu" and self.tune_cutoffs:  # cutoffs are tuned on Otsu masks
                seg = otsu_segmentation(norm)
                seg[~valid] = 0
            if seg is not None:
                row["inter@otsu"] = int(np.count_nonzero(seg & g))
                row["pred@otsu"] = int(np.count_nonzero(seg))
            rows.append(row)
        return rows

    # -- tuning and summary --------------------------------------------------------------
    def tune(self, rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
        """Per task: the grid threshold with the best true-positive mIoU on these rows."""
        out = {}
        for task in sorted(pd.unique(rows["pathology"].astype(str))):
            r = rows[rows["pathology"].astype(str) == task]
            gt = r["gt"].to_numpy(np.float64)
            mious = []
            for t in GRID:
                inter = r[f"inter@{tlabel(t)}"].to_numpy(np.float64)
                pred = r[f"pred@{tlabel(t)}"].to_numpy(np.float64)
                iou = iou_from_counts(inter, pred + gt - inter, pred, gt, EITHER_EMPTY_NAN)
                with quiet():
                    mious.append(float(np.nanmean(iou)) if len(iou) else np.nan)
            out[task] = {"threshold": pick_threshold(mious), "miou": mious}
        return out

    def tune_prob_cutoffs(self, rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
        """Per task: the probability cutoff with the best all-CXR Otsu mIoU on these rows."""
        require_columns(rows, ["prob", "inter@otsu", "pred@otsu"], "chexlocalize cutoff tuning")
        rows = rows[~_flag(rows, "no_map")]  # the official script tunes on the pkls it finds
        out = {}
        for task in sorted(pd.unique(rows["pathology"].astype(str))):
            r = rows[rows["pathology"].astype(str) == task]
            gt = r["gt"].to_numpy(np.float64)
            prob = r["prob"].to_numpy(np.float64)
            if np.isnan(prob).any():
                raise DataError(f"chexlocalize: no probability for some {task} rows; cutoff "
                                f"tuning needs the method's per-task probabilities")
            grid = cutoff_grid(task)
            f32 = _flag(r, "prob_tune_f32")
            mious = []
            for c in grid:
                keep = prob_above(prob, f32, c)  # `if pred_prob > cutoff: segm = ...`
                inter = np.where(keep, r["inter@otsu"].to_numpy(np.float64), 0.0)
                pred = np.where(keep, r["pred@otsu"].to_numpy(np.float64), 0.0)
                iou = iou_from_counts(inter, pred + gt - inter, pred, gt, BOTH_EMPTY_NAN)
                with quiet():
                    m = np.nanmean(iou) if len(iou) else np.float64(np.nan)
                # `round(np.nanmean(...), 3)` on a numpy float: numpy's rounding, not Python's
                mious.append(float(round(np.float64(m), 3)))
            valid = [j for j, m in enumerate(mious) if not np.isnan(m)]
            best = max(valid, key=lambda j: (mious[j], -j)) if valid else 0  # first max
            out[task] = {"cutoff": round(grid[best], 1), "miou": mious, "grid": grid}
        return out

    def _cutoff(self, task: str, tuned: dict[str, float] | None = None) -> float | None:
        if tuned is not None:
            return tuned.get(task)
        if self.prob_cutoff is None:
            return None
        if isinstance(self.prob_cutoff, dict):
            return self.prob_cutoff.get(task)
        return float(self.prob_cutoff)

    def row_ious(self, rows: pd.DataFrame, thresholds: dict[str, float] | None,
                 cutoffs: dict[str, float] | None = None) -> np.ndarray:
        """Final per-row IoU: chosen segmentation, probability gate, empty-mask rule."""
        path = rows["pathology"].astype(str).to_numpy()
        gt = rows["gt"].to_numpy(np.float64)
        inter = np.zeros(len(rows))
        pred = np.zeros(len(rows))
        for task in pd.unique(path):
            sel = path == task
            if self.method == "otsu":
                key = "otsu"
            else:
                if task not in thresholds:
                    raise UsageError(f"chexlocalize: no tuned threshold for task {task!r}")
                key = tlabel(thresholds[task])
                if f"inter@{key}" not in rows.columns:
                    raise UsageError(f"chexlocalize: rows lack counts at threshold {key}")
            inter[sel] = rows.loc[sel, f"inter@{key}"].to_numpy(np.float64)
            pred[sel] = rows.loc[sel, f"pred@{key}"].to_numpy(np.float64)
            cut = self._cutoff(task, cutoffs)
            if cut is not None:
                prob = rows.loc[sel, "prob"].to_numpy(np.float64)
                gated = prob_below(prob, _flag(rows.loc[sel], "prob_gate_f32"), cut)
                idx = np.flatnonzero(sel)[gated]
                inter[idx] = 0
                pred[idx] = 0
        return iou_from_counts(inter, pred + gt - inter, pred, gt, self.rule)

    @staticmethod
    def cxr_table(rows: pd.DataFrame, values: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
        """CXR x task table, CXRs sorted by id (`metric_df.sort_values(by='img_id')`)."""
        r = rows.loc[keep]
        df = pd.DataFrame({"sample_id": r["sample_id"].astype(str).to_numpy(),
                           "pathology": r["pathology"].astype(str).to_numpy(),
                           "v": values[keep]})
        if df.duplicated(["sample_id", "pathology"]).any():
            dup = df[df.duplicated(["sample_id", "pathology"])].iloc[0]
            raise DataError(f"chexlocalize: two rows for {dup.sample_id} / {dup.pathology}")
        table = df.pivot(index="sample_id", columns="pathology", values="v")
        return table.sort_index().reindex(columns=sorted(table.columns))

    def cutoffs_for(self, rows, tuning_rows) -> tuple[dict[str, float] | None, dict]:
        if not self.tune_cutoffs:
            return None, {}
        tuned = self.tune_prob_cutoffs(tuning_rows if tuning_rows is not None else rows)
        return {t: v["cutoff"] for t, v in tuned.items()}, tuned

    def thresholds_for(self, rows, tuning_rows) -> tuple[dict[str, float] | None, dict]:
        if self.method == "otsu":
            return None, {}
        if self.fixed:
            return dict(self.fixed), {}
        tuned = self.tune(tuning_rows if tuning_rows is not None else rows)
        return {t: v["threshold"] for t, v in tuned.items()}, tuned

    def unit_table(self, rows: pd.DataFrame, metric: str,
                   tuning_rows: pd.DataFrame | None = None,
                   decided: dict[str, Any] | None = None) -> pd.DataFrame:
        """CXR x task table of "iou" or "hit" (the bootstrap's unit table).

        IoU at the run's own thresholds and cutoffs when ``decided`` (its summary) has them,
        else tuned on `tuning_rows` (the val split) or, without those, on these rows."""
        in_gt = rows["in_gt"].to_numpy(bool)
        if metric == "hit":
            return self.cxr_table(rows, rows["hit"].to_numpy(np.float64), in_gt)
        if metric != "iou":
            raise UsageError(f"chexlocalize: metric must be iou or hit, not {metric!r}")
        decided = decided or {}
        thresholds = decided.get("thresholds") if self.method != "otsu" else None
        if thresholds is None:
            thresholds, _ = self.thresholds_for(rows, tuning_rows)
        cutoffs = decided.get("prob_cutoffs")
        if cutoffs is None:
            cutoffs, _ = self.cutoffs_for(rows, tuning_rows)
        keep = in_gt if self.true_pos_only else np.ones(len(rows), bool)
        return self.cxr_table(rows, self.row_ious(rows, thresholds, cutoffs), keep)

    def summarize(self, rows: pd.DataFrame, n_boot: int, seed: int,
                  tuning_rows: pd.DataFrame | None = None) -> dict[str, Any]:
        if len(rows) == 0:
            return skeleton("localization", self.name, 0, 0, n_boot, seed, "image")
        require_columns(rows, ["sample_id", "query_id", "pathology", "in_gt", "gt", "hit"],
                        "chexlocalize")
        thresholds, tuned = self.thresholds_for(rows, tuning_rows)
        cutoffs, cut_tuning = self.cutoffs_for(rows, tuning_rows)
        out = skeleton("localization", self.name, len(rows), rows["sample_id"].nunique(),
                       n_boot, seed, "image", method=self.method,
                       true_pos_only=self.true_pos_only,
                       official_rounding=self.official_rounding)
        if thresholds is not None:
            out["thresholds"] = {t: float(v) for t, v in sorted(thresholds.items())}
        if tuned:
            out["tuning"] = {t: {"threshold": v["threshold"],
                                 "miou": dict(zip([tlabel(g) for g in GRID], v["miou"]))}
                             for t, v in tuned.items()}
        if cutoffs is not None:
            out["prob_cutoffs"] = {t: float(v) for t, v in sorted(cutoffs.items())}
            out["prob_cutoff_tuning"] = {
                t: {"cutoff": v["cutoff"],
                    "miou": dict(zip([tlabel(c) for c in v["grid"]], v["miou"]))}
                for t, v in cut_tuning.items()}
        in_gt = rows["in_gt"].to_numpy(bool)
        keep = in_gt if self.true_pos_only else np.ones(len(rows), bool)
        out["bootstrap"]["n_units"] = {}
        tables = {"iou": self.cxr_table(rows, self.row_ious(rows, thresholds, cutoffs), keep),
                  "hit": self.cxr_table(rows, rows["hit"].to_numpy(np.float64), in_gt)}
        for metric, table in tables.items():
            x = table.to_numpy(np.float64)
            tasks = list(table.columns)
            if n_boot > 0 and len(x):
                reps = bootstrap_nanmeans(official_stream(seed), len(x), n_boot, x)
                ivs = intervals(reps)
            else:
                ivs = intervals(np.full((0, len(tasks)), np.nan))
            with quiet():
                dmeans = np.nanmean(x, axis=0) if len(x) else np.full(len(tasks), np.nan)
            counts = (~np.isnan(x)).sum(axis=0)
            per = {}
            for j, t in enumerate(tasks):
                e = interval_entry(ivs[j], float(dmeans[j]), int(counts[j]))
                if self.official_rounding:
                    for key in ("mean", "lower", "upper", "dataset_mean"):
                        e[key] = float(np.round(e[key], 3))
                per[t] = e
            out["bootstrap"]["n_units"][metric] = int(len(x))
            out["metrics"][metric] = {"overall": mean_entry(list(per.values()), int(counts.sum())),
                                      "per_category": per}
        return out
