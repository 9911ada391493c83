"""The vectorized bootstrap against a literal re-implementation of the official replicate loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.eval.bootstrap import (
    ci_indices,
    draw_indices,
    fill_counts,
    intervals,
    official_stream,
    replicate_nanmeans,
    seeded_indices,
)


def official_bootci(df: pd.DataFrame, n_boot: int, seed: int | None):
    """AFLoc `bootci` / CheXlocalize `evaluate`: per-replicate np.random.choice on the global
    generator, pandas NaN-skipping column means, sorted-index bounds (unrounded here)."""
    if seed is not None:
        np.random.seed(seed)
    records = []
    for _ in range(n_boot):
        ids = np.random.choice(len(df), size=len(df), replace=True)
        rep = df.iloc[ids]
        records.append({c: rep[c].mean() for c in df.columns})
    bs = pd.DataFrame.from_records(records)
    out = {}
    for c in bs.columns:
        s = bs[c].sort_values()
        lo = int(0.05 / 2 * len(s)) - 1
        hi = int((1 - 0.05 / 2) * len(s)) - 1
        out[c] = (s.iloc[lo], s.mean(), s.iloc[hi])
    return bs, out


def category_frame(rng, n, cats=("a", "b", "c"), nan_frac=0.2):
    """`to_metric_df` layout: each row has a value in its category's column only."""
    which = rng.integers(0, len(cats), n)
    df = pd.DataFrame(np.nan, index=range(n), columns=list(cats))
    vals = rng.random(n)
    vals[rng.random(n) < nan_frac] = np.nan
    for i in range(n):
        df.iloc[i, which[i]] = vals[i]
    return df


def test_ci_indices_official():
    assert ci_indices(1000) == (24, 974)
    assert ci_indices(200) == (4, 194)


def test_one_matrix_is_the_official_choice_stream():
    np.random.seed(0)
    loop = np.stack([np.random.choice(37, size=37, replace=True) for _ in range(25)])
    np.testing.assert_array_equal(draw_indices(official_stream(0), 37, 25), loop)


@pytest.mark.parametrize("seed", [0, 7])
def test_vectorized_equals_official_loop(seed):
    rng = np.random.default_rng(seed)
    df = category_frame(rng, 80)
    bs, ci = official_bootci(df, 200, seed)
    reps = replicate_nanmeans(draw_indices(official_stream(seed), len(df), 200), df.to_numpy())
    np.testing.assert_allclose(reps, bs.to_numpy(), rtol=0, atol=1e-12)
    for j, c in enumerate(df.columns):
        iv = intervals(reps[:, j])[0]
        lo, mean, hi = ci[c]
        assert iv.lower == pytest.approx(lo, abs=1e-12)
        assert iv.upper == pytest.approx(hi, abs=1e-12)
        assert iv.mean == pytest.approx(mean, abs=1e-12)


def test_later_bootstraps_consume_later_draws():
    """Two bootci calls after one seed: the second uses the draws after the first's."""
    rng = np.random.default_rng(3)
    df1, df2 = category_frame(rng, 30), category_frame(rng, 30)
    np.random.seed(0)
    bs1, _ = official_bootci(df1, 50, None)
    bs2, _ = official_bootci(df2, 50, None)
    stream = official_stream(0)
    r1 = replicate_nanmeans(draw_indices(stream, 30, 50), df1.to_numpy())
    r2 = replicate_nanmeans(draw_indices(stream, 30, 50), df2.to_numpy())
    np.testing.assert_allclose(r1, bs1.to_numpy(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(r2, bs2.to_numpy(), atol=1e-12, rtol=0)


def test_nan_replicates_sort_last():
    reps = np.array([np.nan, 0.2, 0.1, np.nan] + [0.5] * 36)  # 40 replicates: indices 0, 38
    iv = intervals(reps)[0]
    assert ci_indices(40) == (0, 38)
    assert iv.lower == 0.1 and np.isnan(iv.upper)
    assert iv.mean == pytest.approx((0.3 + 0.5 * 36) / 38, abs=1e-15)


def test_seeded_indices_are_sklearn_resample():
    from sklearn.utils import resample

    got = seeded_indices(np.arange(30), 53)
    for i in range(30):
        np.testing.assert_array_equal(got[i], resample(np.arange(53), replace=True,
                                                       random_state=i))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=40), st.integers(0, 2**31 - 1))
def test_ci_contains_bootstrap_mean(values, seed):
    x = np.array(values)[:, None]
    reps = replicate_nanmeans(draw_indices(official_stream(seed), len(x), 100), x)
    iv = intervals(reps)[0]
    assert iv.lower <= iv.mean + 1e-12 and iv.mean <= iv.upper + 1e-12


def test_blockwise_draws_equal_one_matrix(monkeypatch):
    import bench.eval.bootstrap as bs

    rng = np.random.default_rng(9)
    df = category_frame(rng, 50)
    want = replicate_nanmeans(draw_indices(official_stream(4), 50, 90), df.to_numpy())
    monkeypatch.setattr(bs, "_CHUNK_ELEMS", 7 * 50)  # 7 replicates per block, 13 blocks
    got = bs.bootstrap_nanmeans(official_stream(4), 50, 90, df.to_numpy())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)  # BLAS block sizes differ


@pytest.mark.parametrize("pipelined", [False, True])
def test_blockwise_draws_follow_the_stream(monkeypatch, pipelined):
    """Drawn block by block (and scored on a second thread), the draws are the official loop's,
    and the stream ends where one (n_boot, n) call would leave it."""
    import bench.eval.bootstrap as bs

    rng = np.random.default_rng(11)
    df = category_frame(rng, 40)
    monkeypatch.setattr(bs, "_CHUNK_ELEMS", 3 * 40)  # 3 replicates per block
    monkeypatch.setattr(bs, "_PIPELINE_MIN", 0 if pipelined else 10**12)
    monkeypatch.setattr(bs, "worker_count", lambda cap=8: 2)
    stream = official_stream(2)
    got = bs.bootstrap_nanmeans(stream, 40, 50, df.to_numpy())
    bs_df, _ = official_bootci(df, 50, 2)
    np.testing.assert_allclose(got, bs_df.to_numpy(), rtol=0, atol=1e-14)
    np.random.seed(2)
    np.random.randint(0, 40, size=(50, 40))
    assert stream.randint(0, 10**6) == np.random.randint(0, 10**6)


def test_fill_counts_is_a_histogram_of_each_row():
    idx = np.random.RandomState(3).randint(0, 17, size=(9, 23))
    got = fill_counts(idx, 17, np.empty((9, 17)))
    for r in range(9):
        for j in range(17):
            assert got[r, j] == sum(1 for v in idx[r] if v == j)
