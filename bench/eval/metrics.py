"""Per-sample localization metrics and AUROC, with the official codes' arithmetic.

Masks are reduced to counts first (intersection, union, predicted and GT areas per threshold);
IoU and Dice are derived from counts under an explicit empty-mask rule, so a stored row can be
re-scored under another rule without the pixels:

- ``EITHER_EMPTY_NAN``: AFLoc ``only_pos=True`` and CheXlocalize ``true_pos_only=True``: NaN if
  the prediction or the GT is empty.
- ``BOTH_EMPTY_NAN``: AFLoc ``only_pos=False`` and CheXlocalize ``true_pos_only=False``: NaN only
  if both are empty (the union is empty); 0 when exactly one is.

Heatmaps stay float32 through normalisation and thresholding: the official code ran on numpy
1.21, where ``float32_array > float64_scalar`` compares in float32 (value-based casting), so the
threshold is cast to float32 here too (numpy 2 would compare in float64).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bench.eval.bootstrap import fill_counts, quiet, seeded_indices, worker_count

EITHER_EMPTY_NAN = "either_empty_nan"
BOTH_EMPTY_NAN = "both_empty_nan"
EMPTY_RULES = (EITHER_EMPTY_NAN, BOTH_EMPTY_NAN)
_BLOCK = 4_000_000  # threshold x pixel comparisons per block
_COUNT_ELEMS = 250_000  # replicates x samples per counts block (stays in cache)


def _check_rule(rule: str) -> None:
    if rule not in EMPTY_RULES:
        raise ValueError(f"unknown empty-mask rule {rule!r}; one of {EMPTY_RULES}")


def threshold_label(t: float) -> str:
    """Column label of a mask threshold: one decimal for the official grids' values (the
    official code keys them by ``round(t, 1)``), otherwise enough digits to name the float32
    value the pixels are compared with, so 0.45 is scored at 0.45, not at 0.5."""
    r = round(float(t), 1)
    if np.float32(t) == np.float32(r):
        return f"{r:.1f}"
    return np.format_float_positional(np.float32(t), trim="-")  # shortest exact float32


def threshold_counts(
    values: np.ndarray, gt: np.ndarray, thresholds: np.ndarray
) -> dict[str, np.ndarray]:
    """Counts of ``pred = values > t`` against a GT, for every threshold at once.

    `values` (float32) and `gt` (nonzero = GT) are the evaluated pixels as flat lists of equal
    length. Returns int64 arrays over thresholds: ``inter``, ``pred``, ``union`` and scalars
    ``gt`` (nonzero count) and ``gt_sum`` (sum of GT values, which counts a summed-box overlap
    of 2 twice, as AFLoc's Dice does). Thresholds are broadcast against pixel blocks.
    """
    v = np.asarray(values, dtype=np.float32).ravel()
    g = np.asarray(gt).ravel()
    gbin = g != 0
    t = np.asarray(thresholds, dtype=np.float64).astype(np.float32)[:, None]
    pred = np.zeros(t.shape[0], dtype=np.int64)
    inter = np.zeros(t.shape[0], dtype=np.int64)
    step = max(1, _BLOCK // max(1, t.shape[0]))
    for lo in range(0, v.size, step):
        above = v[None, lo:lo + step] > t
        pred += np.count_nonzero(above, axis=1)
        inter += np.count_nonzero(above & gbin[None, lo:lo + step], axis=1)
    n_gt = int(np.count_nonzero(gbin))
    return {
        "inter": inter,
        "pred": pred,
        "union": pred + n_gt - inter,
        "gt": np.int64(n_gt),
        "gt_sum": np.int64(np.sum(g, dtype=np.float64)),
    }


def iou_from_counts(inter, union, pred, gt, rule: str = EITHER_EMPTY_NAN) -> np.ndarray:
    """IoU = |A and B| / |A or B| with the rule's NaN cases (see module docstring)."""
    _check_rule(rule)
    inter, union, pred, gt = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in
                                                   (inter, union, pred, gt)))
    if rule == EITHER_EMPTY_NAN:
        nan = (pred == 0) | (gt == 0)
    else:
        nan = union == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nan, np.nan, inter / np.where(union == 0, 1.0, union))


def dice_from_counts(inter, pred, gt, gt_sum=None, rule: str = EITHER_EMPTY_NAN) -> np.ndarray:
    """Dice = 2|A and B| / (sum A + sum B) (AFLoc `compute_dice`; sum B counts summed boxes' 2s)."""
    _check_rule(rule)
    gt_sum = gt if gt_sum is None else gt_sum
    inter, pred, gt, gt_sum = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in
                                                    (inter, pred, gt, gt_sum)))
    union_empty = (pred == 0) & (gt == 0)
    nan = ((pred == 0) | (gt == 0)) if rule == EITHER_EMPTY_NAN else union_empty
    den = pred + gt_sum
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nan, np.nan, 2 * inter / np.where(den == 0, 1.0, den))


def minmax(values: np.ndarray, mode: str = "pm1") -> np.ndarray:
    """AFLoc `norm_heatmap` on the evaluated pixels, in float32: [0, 1] or [-1, 1] (``"pm1"``).

    A constant map (max == min) cannot be normalised; the official code then returns a 1-D array
    and crashes. Here it maps to all zeros ([0, 1]) or all -1 ([-1, 1]) so that nothing is above
    any threshold in the grid (an empty prediction) and CNR is 0 (both variances 0).
    """
    v = np.asarray(values, dtype=np.float32)
    if v.size == 0:
        return v.copy()
    lo, hi = v.min(), v.max()
    if hi - lo == 0:
        out = np.zeros_like(v)
    else:
        out = (v - lo) / (hi - lo)
    if mode == "pm1":
        out = out * 2 - 1
    elif mode != "01":
        raise ValueError(f"unknown normalisation {mode!r}")
    return out


def signed_cnr(values: np.ndarray, gt: np.ndarray) -> float:
    """AFLoc `compute_cnr` on evaluated pixels: (mean_in - mean_out) / sqrt(var_in + var_out).

    `values` is the [-1, 1] map (float32); it is min-max normalised again first, as the official
    function does. In = GT == 1, out = GT == 0 (a summed-box overlap of 2 is in neither). numpy
    float32 mean/var (ddof 0); 0 when both variances are 0; NaN when a region is empty. The last
    step is float64: under the official numpy 1.21, ``pow(float32_scalar, 0.5)`` promotes to
    float64 (numpy 2 would stay in float32), and so does the division by it.
    """
    h = minmax(values, "pm1")
    g = np.asarray(gt).ravel()
    h = h.ravel()
    a = h[g == 1]
    b = h[g == 0]
    with np.errstate(invalid="ignore", divide="ignore"), quiet():
        ma, mb, va, vb = a.mean(), b.mean(), a.var(), b.var()
        if va + vb == 0:
            return 0.0
        return float(np.float64(ma - mb) / np.power(np.float64(va + vb), 0.5))


def pointing_hit(heatmap: np.ndarray, gt: np.ndarray) -> float:
    """CheXlocalize hit: 1 if GT == 1 at the map's argmax (first occurrence), NaN if GT empty.

    NaN map pixels (outside the method's field of view) never win the argmax; a map with no
    value at all points nowhere (NaN).
    """
    h = np.asarray(heatmap, dtype=np.float32)
    if np.isnan(h).all():
        return np.nan
    if np.isnan(h).any():
        h = np.where(np.isnan(h), -np.inf, h)
    flat = int(np.argmax(h, axis=None))
    y, x = np.unravel_index(flat, h.shape)
    g = np.asarray(gt)
    if g[y, x] == 1:
        return 1.0
    if np.sum(g) == 0:
        return np.nan
    return 0.0


# ---------------------------------------------------------------------------------------------
# AUROC
# ---------------------------------------------------------------------------------------------
def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC with ties counted one half (= sklearn `roc_auc_score`); NaN if one class only."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    return float(auroc_replicates(y, s, np.arange(len(y))[None, :])[0])


def auroc_replicates(labels: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """AUROC of every bootstrap replicate (rows of `idx` index into labels/scores): (n_boot,).

    Labels are 1 (positive), 0 (negative); anything else (NaN, -1) is drawn but ignored.
    Mann-Whitney with multiplicities (`_RankPlan`); counts are built in cache-sized blocks of
    replicates. NaN where a replicate holds one class only (sklearn raises there; the official
    code records NaN).
    """
    n_boot = idx.shape[0]
    out = np.full(n_boot, np.nan)
    plan = _RankPlan.build(labels, scores)
    if plan is None:
        return out
    n = plan.n
    step = max(1, _COUNT_ELEMS // n)
    buf = np.empty((min(step, n_boot), n), dtype=np.int64)
    for lo in range(0, n_boot, step):
        hi = min(n_boot, lo + step)
        out[lo:hi] = plan.aurocs(fill_counts(idx[lo:hi], n, buf[:hi - lo]))
    return out


def seeded_auroc_replicates(labels: np.ndarray, scores: np.ndarray, seeds: np.ndarray,
                            workers: int | None = None) -> np.ndarray:
    """AUROC of each column (n x k labels and scores) in each replicate i drawn with
    `sklearn.resample(random_state=seeds[i])`: (n_boot, k).

    Every replicate has its own seed, so blocks of replicates are independent: each worker
    thread draws its blocks' indices (`seeded_indices` rows), counts them once and scores every
    column from the same counts. numpy releases the GIL while drawing (most of the work;
    `bincount` keeps it), so threads share the cores; the result does not depend on the number
    of workers.
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim == 1:
        labels, scores = labels[:, None], scores[:, None]
    seeds = np.asarray(seeds, dtype=np.int64)
    n, k = labels.shape
    n_boot = len(seeds)
    out = np.full((n_boot, k), np.nan)
    plans = [_RankPlan.build(labels[:, j], scores[:, j]) for j in range(k)]
    if n == 0 or n_boot == 0 or all(p is None for p in plans):
        return out
    step = max(1, _COUNT_ELEMS // n)
    blocks = [(lo, min(n_boot, lo + step)) for lo in range(0, n_boot, step)]
    workers = max(1, min(workers or worker_count(), len(blocks)))

    def work(w: int) -> None:
        buf = np.empty((min(step, n_boot), n), dtype=np.int64)
        for lo, hi in blocks[w::workers]:
            counts = fill_counts(seeded_indices(seeds[lo:hi], n), n, buf[:hi - lo])
            for j, plan in enumerate(plans):
                if plan is not None:
                    out[lo:hi, j] = plan.aurocs(counts)

    if workers == 1:
        work(0)
    else:
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(work, range(workers)))
    return out


@dataclass(frozen=True)
class _RankPlan:
    """One column's samples in score order, split into negatives and positives.

    For each positive, the number of negatives strictly below its tie group (`below`) and up to
    the group's end (`upto`), as positions in the negatives' order. Given how often each sample
    was drawn, every drawn positive scores the drawn negatives below it plus half of those tied
    with it: exactly sklearn's tie handling, in exact integer arithmetic.
    """

    n: int
    neg: np.ndarray  # sample index of each negative, in score order
    pos: np.ndarray  # sample index of each positive, in score order
    below: np.ndarray
    upto: np.ndarray

    @classmethod
    def build(cls, labels: np.ndarray, scores: np.ndarray) -> _RankPlan | None:
        y = np.asarray(labels, dtype=np.float64).ravel()
        s = np.asarray(scores, dtype=np.float64).ravel()
        n = len(y)
        order = np.argsort(s, kind="mergesort")
        s_sorted, y_sorted = s[order], y[order]
        neg_at = np.flatnonzero(y_sorted == 0)  # sorted positions of negatives / positives
        pos_at = np.flatnonzero(y_sorted == 1)
        if n == 0 or len(neg_at) == 0 or len(pos_at) == 0:
            return None
        new = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
        gid = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], n]  # exclusive
        g = gid[pos_at]
        return cls(n, order[neg_at], order[pos_at],
                   np.searchsorted(neg_at, starts[g], side="left"),
                   np.searchsorted(neg_at, ends[g], side="left"))

    def aurocs(self, counts: np.ndarray) -> np.ndarray:
        """AUROC per replicate from its (r, n) draw counts."""
        r = counts.shape[0]
        cneg = np.zeros((r, len(self.neg) + 1), dtype=np.int64)
        np.cumsum(counts[:, self.neg], axis=1, out=cneg[:, 1:])  # drawn negs in first k
        cpos = counts[:, self.pos]
        twice = (cpos * (cneg[:, self.below] + cneg[:, self.upto])).sum(axis=1)  # exact
        n_pos = cpos.sum(axis=1)
        n_neg = cneg[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_pos > 0) & (n_neg > 0), twice / (2.0 * n_pos * n_neg), np.nan)
