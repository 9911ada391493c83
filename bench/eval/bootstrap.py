"""Percentile bootstrap drawn exactly as the official AFLoc / CheXlocalize / AFLoc-classification
code draws it, but computed as array operations instead of a Python loop over replicates.

The official loops call ``np.random.choice(n, size=n, replace=True)`` once per replicate on a
generator seeded once per process (``np.random.seed(0)``). For the legacy generator that is the
same stream as one ``RandomState(seed).randint(0, n, size=(n_boot, n))`` call (checked in the
tests against the literal loop), so the whole index matrix is drawn at once.

AFLoc's classification bootstrap instead seeds every replicate separately
(``sklearn.utils.resample(idx, random_state=i)``, i.e. ``RandomState(i).randint(0, n, n)``);
`seeded_indices` reproduces those 1000 streams.

A replicate statistic is a NaN-skipping mean (``pandas.Series.mean``); it is computed from the
per-replicate multiplicity of every row (counts, chunked) times the row values, so NaN rules never
need a loop. Confidence bounds are the official sorted-index rule: positions
``int(alpha/2 * n_boot) - 1`` and ``int((1 - alpha/2) * n_boot) - 1`` (24 and 974 for 1000) of
the sorted replicates, NaN sorting last; the reported mean is the NaN-skipping replicate mean.
Under 40 replicates the lower position is -1 (the official code would take the largest
replicate): both bounds are NaN there instead.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

ALPHA = 0.05
_CHUNK_ELEMS = 250_000  # rows x samples per counts block: keeps the block in cache
_PIPELINE_MIN = 2_000_000  # draws above which drawing and scoring overlap on two threads


def ci_indices(n_boot: int, alpha: float = ALPHA) -> tuple[int, int]:
    """The official `compute_cis` positions in the sorted replicates (24, 974 for 1000)."""
    return int(alpha / 2 * n_boot) - 1, int((1 - alpha / 2) * n_boot) - 1


def worker_count(cap: int = 8) -> int:
    """Threads for replicate-parallel work: the cores this process may use, at most `cap`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cap, cores))


def official_stream(seed: int) -> np.random.RandomState:
    """The legacy generator `np.random.seed(seed)` sets up (a private instance, no global state)."""
    return np.random.RandomState(seed)


def draw_indices(rng: np.random.RandomState, n: int, n_boot: int) -> np.ndarray:
    """`n_boot` successive `np.random.choice(n, size=n, replace=True)` draws, as one matrix."""
    if n == 0:
        return np.zeros((n_boot, 0), dtype=np.int32)
    dtype = np.int32 if n < 2**31 else np.int64  # same draws, half the memory traffic
    return rng.randint(0, n, size=(n_boot, n), dtype=dtype)


def fill_counts(idx: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """Write the multiplicity of each of `n` rows in each replicate (row of `idx`) into `out`.

    One `bincount` per replicate, cast on assignment into a reused buffer: about five times
    faster than one `bincount` over offset flat indices, which pays for an int64 offset pass,
    a huge `minlength` and a separate cast.
    """
    for i, row in enumerate(idx):
        out[i] = np.bincount(row, minlength=n)
    return out


def resample_sums(idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum of `values` (n x k) over each replicate's resampled rows: (n_boot, k).

    Counts are built in blocks of replicates small enough to stay in cache, then one matrix
    product per block does every column at once.
    """
    n_boot, n = idx.shape
    values = np.asarray(values, dtype=np.float64).reshape(n, -1)
    out = np.empty((n_boot, values.shape[1]), dtype=np.float64)
    step = max(1, _CHUNK_ELEMS // max(n, 1))
    buf = np.empty((min(step, n_boot), n), dtype=np.float64)
    # one BLAS thread: these products are small and many; threads only contend for cores
    with threadpool_limits(1, user_api="blas"):
        for lo in range(0, n_boot, step):
            hi = min(n_boot, lo + step)
            out[lo:hi] = fill_counts(idx[lo:hi], n, buf[:hi - lo]) @ values
    return out


def bootstrap_nanmeans(rng: np.random.RandomState, n: int, n_boot: int,
                       values: np.ndarray) -> np.ndarray:
    """`replicate_nanmeans` of the next `n_boot` official draws from `rng`, drawn block by block.

    The legacy stream is sequential, so drawing cache-sized blocks of replicates one after
    another consumes exactly the draws of one (n_boot, n) call, without holding the matrix.
    """
    packed, k = _nan_packed(values, n)
    sums = np.empty((n_boot, 2 * k), dtype=np.float64)
    step = max(1, _CHUNK_ELEMS // max(n, 1))
    buf = np.empty((min(step, n_boot), n), dtype=np.float64)

    def consume(lo: int, idx: np.ndarray) -> None:
        sums[lo:lo + len(idx)] = fill_counts(idx, n, buf[:len(idx)]) @ packed

    blocks = range(0, n_boot, step)
    with threadpool_limits(1, user_api="blas"):
        if n_boot * n < _PIPELINE_MIN or worker_count() < 2:
            for lo in blocks:
                consume(lo, draw_indices(rng, n, min(n_boot, lo + step) - lo))
        else:
            # the stream is sequential, so only drawing and scoring can overlap: this thread
            # draws block i + 1 (numpy releases the GIL there) while one worker scores block i
            with ThreadPoolExecutor(1) as ex:
                pending = None
                for lo in blocks:
                    idx = draw_indices(rng, n, min(n_boot, lo + step) - lo)
                    if pending is not None:
                        pending.result()
                    pending = ex.submit(consume, lo, idx)
                pending.result()
    return _nan_ratio(sums, k)


def replicate_nanmeans(idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """NaN-skipping mean of each column over each replicate's rows (pandas `mean` semantics).

    `values` is n x k with NaN for missing entries; a replicate with no non-NaN entry in a column
    gives NaN there, as pandas does.
    """
    packed, k = _nan_packed(values, idx.shape[1])
    return _nan_ratio(resample_sums(idx, packed), k)


def _nan_packed(values: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """[values with NaN as 0 | non-NaN indicator]: sums of both give NaN-skipping means."""
    values = np.asarray(values, dtype=np.float64).reshape(n, -1)
    ok = ~np.isnan(values)
    return np.concatenate([np.where(ok, values, 0.0), ok], axis=1), values.shape[1]


def _nan_ratio(sums: np.ndarray, k: int) -> np.ndarray:
    num, den = sums[:, :k], sums[:, k:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass(frozen=True)
class Interval:
    """Bootstrap mean (NaN-skipping), sorted-index lower/upper bounds, and replicate count."""

    mean: float
    lower: float
    upper: float


def intervals(replicates: np.ndarray, alpha: float = ALPHA) -> list[Interval]:
    """Official `compute_cis` for each column of an (n_boot, k) replicate matrix."""
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.ndim == 1:
        reps = reps[:, None]
    n_boot, k = reps.shape
    if n_boot == 0:
        return [Interval(np.nan, np.nan, np.nan) for _ in range(k)]
    lo, hi = ci_indices(n_boot, alpha)
    srt = np.sort(reps, axis=0)  # NaN last, as pandas sort_values
    with np.errstate(invalid="ignore"), _quiet():
        means = np.nanmean(reps, axis=0)
    if lo < 0:  # under 40 replicates the official index is -1, the largest replicate: no bound
        return [Interval(float(means[j]), np.nan, np.nan) for j in range(k)]
    return [Interval(float(means[j]), float(srt[lo, j]), float(srt[hi, j])) for j in range(k)]


def ci_estimable(lower: float | None, upper: float | None) -> bool:
    """Whether (lower, upper) is an interval to print: both numbers, lower <= upper. NaN
    replicates sort last, so on tiny sets a bound can be NaN, and the official category-mean
    row (the mean of the categories' bounds, NaN skipped) can come out with upper < lower."""
    if lower is None or upper is None:
        return False
    lo, hi = float(lower), float(upper)
    return bool(np.isfinite(lo) and np.isfinite(hi) and lo <= hi)


class _quiet:
    """Silence numpy's 'mean of empty slice' warning (an all-NaN column is a legitimate NaN)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)
        return self

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


quiet = _quiet


def seeded_indices(seeds: np.ndarray, n: int) -> np.ndarray:
    """Row i equals `np.random.RandomState(seeds[i]).randint(0, n, size=n)`.

    That is sklearn `resample(idx, replace=True, random_state=seeds[i])`, the AFLoc
    classification bootstrap. Each replicate has its own seed, so the rows cannot come from one
    stream; one generator is re-seeded in place (the legacy `mt19937_seed`), which costs a
    fraction of constructing 1000 generators. Only index drawing is per replicate; every
    statistic is then computed for all replicates at once.
    """
    seeds = np.asarray(seeds, dtype=np.int64)
    dtype = np.int32 if n < 2**31 else np.int64  # same draws as the default int64
    out = np.empty((len(seeds), max(n, 0)), dtype=dtype)
    if n <= 0:
        return out
    rs = np.random.RandomState(0)
    for i, s in enumerate(seeds):
        rs.seed(int(s))
        out[i] = rs.randint(0, n, size=n, dtype=dtype)
    return out
