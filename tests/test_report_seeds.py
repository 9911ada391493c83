"""Tables over several training seeds: a results folder with ``seed-<n>/`` subfolders shows, per
cell every seed fills, the mean of the seeds' own values, their standard deviation and a pooled
CI over paired resamples of the test units; brute-force references below."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reproduce_helpers import MINI

from bench.cli.main import main as bench_main
from bench.eval.summary import summarize_classification
from bench.report.build import build_table
from bench.report.render import render
from bench.report.specs import Column, Row, Sel, TableSpec
from bench.report.store_view import StoreView
from bench.store import RunDir

N_BOOT = 200
LO, HI = 4, 194  # the official sorted positions for 200 replicates


def _bench(*args: str) -> None:
    try:
        bench_main(list(args))
    except SystemExit as e:
        assert not e.code


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """results/ (sigma 0.2), results/seed-2 (0.3), results/seed-3 (0.4): the centre prior on
    shapes as three "seeds" of one row; a random row only in results/ (a reference row)."""
    root = tmp_path_factory.mktemp("seeded") / "results"
    for folder, sigma in ((root, 0.2), (root / "seed-2", 0.3), (root / "seed-3", 0.4)):
        _bench("run", "--methods", "center", "--datasets", "shapes", "--split", "test",
               "--task", "localization", "--method-arg", f"center.sigma={sigma}",
               "--bootstrap", str(N_BOOT), "--results-dir", str(folder), "--quiet")
    _bench("run", "--methods", "random", "--datasets", "shapes", "--split", "test",
           "--task", "localization", "--bootstrap", str(N_BOOT), "--results-dir", str(root),
           "--quiet")
    return root


def _one(folder: Path, method: str) -> tuple[dict, dict, pd.DataFrame]:
    for p in sorted(folder.iterdir()):
        rd = RunDir(p)
        info = rd.read_run()
        if info and info.get("method") == method:
            return info, rd.read_summary(), rd.read_rows()
    raise AssertionError(f"no {method} run in {folder}")


def _brute_ci(tables: list[pd.DataFrame], n_boot: int, seed: int) -> tuple[float, float]:
    units = tables[0].index.sort_values()
    idx = np.random.RandomState(seed).randint(0, len(units), size=(n_boot, len(units)))
    stats = []
    for rep in idx:
        per_seed = []
        for t in tables:
            a = t.reindex(index=units).to_numpy(np.float64)[rep]
            cat_means = [np.nanmean(a[:, j]) for j in range(a.shape[1])
                         if not np.all(np.isnan(a[:, j]))]
            per_seed.append(np.mean(cat_means))
        stats.append(np.mean(per_seed))
    s = np.sort(stats)
    return float(s[LO]), float(s[HI])


def test_a_cell_every_seed_fills_is_their_mean_sd_and_pooled_ci(seeded: Path):
    from bench.eval.protocols import get_protocol

    folders = (seeded, seeded / "seed-2", seeded / "seed-3")
    runs = [_one(f, "center") for f in folders]
    values = [s["metrics"]["iou"]["overall"]["mean"] for _, s, _ in runs]
    assert len(set(values)) == 3  # three different "seeds"

    view = StoreView(seeded)
    assert view.seed_labels == ["results", "seed-2", "seed-3"]
    found = view.find(Sel(method="center", dataset="shapes", task="localization",
                          metric="iou"))
    assert found is not None and found.spread is not None
    assert found.stat.mean == pytest.approx(np.mean(values), abs=1e-12)
    assert found.spread.sd == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert dict(found.spread.values) == pytest.approx(
        {"results": values[0], "seed-2": values[1], "seed-3": values[2]})
    proto = get_protocol("afloc", dataset="shapes", prompt="simple")
    tables = [proto.unit_table(rows, "iou", decided=s) for _, s, rows in runs]
    # the overall row as the protocol makes it: each category's pooled interval, then the
    # mean of the categories' bounds
    cats = list(tables[0].columns)
    assert len(cats) > 1
    bounds = [_brute_ci([t[[c]] for t in tables], N_BOOT, runs[0][1]["bootstrap"]["seed"])
              for c in cats]
    lo, hi = np.mean([b[0] for b in bounds]), np.mean([b[1] for b in bounds])
    assert (found.stat.lower, found.stat.upper) == pytest.approx((lo, hi), abs=1e-12)
    # wider than the CI of the mean over categories (what the paired comparisons use)
    macro = _brute_ci(tables, N_BOOT, runs[0][1]["bootstrap"]["seed"])
    assert hi - lo > macro[1] - macro[0]


def test_a_cell_only_the_first_folder_fills_is_that_run(seeded: Path):
    view = StoreView(seeded)
    sel = Sel(method="random", dataset="shapes", task="localization", metric="iou")
    found = view.find(sel)
    info, summary, _ = _one(seeded, "random")
    entry = summary["metrics"]["iou"]["overall"]
    assert found.spread is None
    assert (found.stat.mean, found.stat.lower, found.stat.upper) == (
        entry["mean"], entry["lower"], entry["upper"])


def test_a_per_category_cell_pools_that_category(seeded: Path):
    from bench.eval.protocols import get_protocol

    runs = [_one(f, "center") for f in (seeded, seeded / "seed-2", seeded / "seed-3")]
    cat = sorted(runs[0][1]["metrics"]["dice"]["per_category"])[0]
    view = StoreView(seeded)
    found = view.find(Sel(method="center", dataset="shapes", task="localization",
                          metric="dice", category=(cat,)))
    values = [s["metrics"]["dice"]["per_category"][cat]["mean"] for _, s, _ in runs]
    assert found.stat.mean == pytest.approx(np.mean(values), abs=1e-12)
    proto = get_protocol("afloc", dataset="shapes", prompt="simple")
    tables = [proto.unit_table(rows, "dice", decided=s)[[cat]] for _, s, rows in runs]
    lo, hi = _brute_ci(tables, N_BOOT, runs[0][1]["bootstrap"]["seed"])
    assert (found.stat.lower, found.stat.upper) == pytest.approx((lo, hi), abs=1e-12)


def test_the_table_shows_the_spread_and_says_how(seeded: Path):
    spec = TableSpec(name="seeds", title="t", source="test", caption="c",
                     base=Sel(task="localization", dataset="shapes", metric="iou"),
                     rows=(Row("center", "Centre", Sel(method="center")),
                           Row("random", "Random", Sel(method="random"), reference=True)),
                     columns=(Column("iou", "IoU"),))
    result = build_table(spec, StoreView(seeded))
    md = render(result, "md")
    center = result.sections[0].rows[0].cells[0]
    sd = center.spread.sd
    assert f"{center.measured.mean:.3f} ±{sd:.3f} ({center.measured.lower:.3f}, " \
           f"{center.measured.upper:.3f})" in md
    assert "±" not in render(result, "md").split("| Random")[1].split("\n")[0]
    assert "mean over 3 training seeds (results folders: results, seed-2, seed-3)" in md
    cells = json.loads(render(result, "json"))["rows"][0]["cells"]["iou"]["measured"]
    assert cells["seeds"]["n"] == 3 and cells["seeds"]["sd"] == pytest.approx(sd)


def test_classification_pools_auroc_over_shared_images(tmp_path: Path):
    from bench.eval.metrics import auroc

    rng = np.random.default_rng(0)
    n = 40
    labels = rng.integers(0, 2, size=(n, 2))
    folders = [tmp_path / "results", tmp_path / "results" / "seed-2"]
    tables = []
    for i, folder in enumerate(folders):
        scores = labels + rng.normal(0, 0.8 + 0.4 * i, size=(n, 2))
        rows = pd.DataFrame([{"sample_id": f"s{j}", "pathology": p, "label": float(labels[j, k]),
                              "score": float(scores[j, k])}
                             for j in range(n) for k, p in enumerate(("A", "B"))])
        tables.append(rows)
        rd = RunDir(folder / "run-1")
        rd.path.mkdir(parents=True)
        rd.write_chunk(0, rows)
        rd.write_summary(summarize_classification(rows, N_BOOT, 0))
        rd.write_run({"run_id": "run-1", "status": "complete", "method": "m",
                      "dataset": "shapes", "task": "classification",
                      "protocol": "classification", "split": "test", "prompt": None})
    found = StoreView(folders[0]).find(Sel(method="m", task="classification", metric="auroc"))
    # brute force: replicate i resamples images with sklearn's resample(random_state=i)
    from sklearn.utils import resample

    stats = []
    for i in range(N_BOOT):
        idx = resample(np.arange(n), replace=True, random_state=i)
        per = []
        for rows in tables:
            lab = rows.pivot(index="sample_id", columns="pathology", values="label")
            sc = rows.pivot(index="sample_id", columns="pathology", values="score")
            order = [f"s{j}" for j in range(n)]
            lab, sc = lab.loc[order].to_numpy()[idx], sc.loc[order].to_numpy()[idx]
            per.append(np.mean([auroc(lab[:, k], sc[:, k]) for k in range(2)]))
        stats.append(np.mean(per))
    s = np.sort(stats)
    assert (found.stat.lower, found.stat.upper) == pytest.approx((s[LO], s[HI]), abs=1e-12)
    assert found.spread.n == 2


# -- the orderings check pairs by seed --------------------------------------------------------

CHECK_PLAN = MINI + """
[[claim]]
id = "center-beats-random"
sentence = "The centre prior beats noise."
where = "test"
table = "seeds"
a = ["center"]
b = ["random"]

[[claim]]
id = "random-beats-center"
sentence = "Noise beats the centre prior."
where = "test"
table = "seeds"
a = ["random"]
b = ["center"]
sections = ["dice"]
"""


@pytest.fixture()
def check_spec(monkeypatch):
    from bench.report import specs

    spec = TableSpec(name="seeds", title="t", source="test", caption="c",
                     base=Sel(task="localization", dataset="shapes"),
                     sections=specs.METRIC_SECTIONS,
                     rows=(Row("center", "Centre", Sel(method="center")),
                           Row("random", "Random", Sel(method="random"), reference=True)),
                     columns=(Column("all", "All"),))
    monkeypatch.setitem(specs.TABLES, "seeds", spec)
    return spec


def test_check_pairs_seeds_against_a_single_reference_run(seeded: Path, tmp_path: Path,
                                                          check_spec):
    from bench.eval.protocols import get_protocol
    from bench.reproduce.check import FAILS, check_claims, render_check
    from bench.reproduce.plan import load_plan

    path = tmp_path / "plan.toml"
    path.write_text(CHECK_PLAN)
    results = check_claims(load_plan(path), seeded)
    first, second = results
    assert [c.section for c in first.comparisons] == ["iou", "dice", "cnr"]
    proto = get_protocol("afloc", dataset="shapes", prompt="simple")
    centers = [_one(f, "center") for f in (seeded, seeded / "seed-2", seeded / "seed-3")]
    rnd = _one(seeded, "random")
    for comp in first.comparisons:
        m = comp.section
        want = np.mean([s["metrics"][m]["overall"]["mean"] for _, s, _ in centers]) \
            - rnd[1]["metrics"][m]["overall"]["mean"]
        assert comp.diff == pytest.approx(want, abs=1e-12)
        assert comp.seeds == 3
        per_seed = {lab: s["metrics"][m]["overall"]["mean"]
                    - rnd[1]["metrics"][m]["overall"]["mean"]
                    for lab, (_, s, _) in zip(("results", "seed-2", "seed-3"), centers)}
        assert comp.per_seed == pytest.approx(per_seed, abs=1e-12)
        assert comp.record()["per_seed"] == pytest.approx(per_seed, abs=1e-12)
        d = np.array(list(per_seed.values()))
        half = 4.30265273 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2), printed tables
        assert (comp.seed_lower, comp.seed_upper) == pytest.approx(
            (d.mean() - half, d.mean() + half), abs=1e-8)
        # brute force: the same resamples for the three centre runs and the one random run
        tables = [proto.unit_table(rows, m, decided=s) for _, s, rows in centers + [rnd]]
        units = tables[0].index.sort_values()
        idx = np.random.RandomState(rnd[1]["bootstrap"]["seed"]).randint(
            0, len(units), size=(N_BOOT, len(units)))

        def macro(t, rep, units=units):
            a = t.reindex(index=units).to_numpy(np.float64)[rep]
            return np.mean([np.nanmean(a[:, j]) for j in range(a.shape[1])
                            if not np.all(np.isnan(a[:, j]))])

        stats = np.sort([np.mean([macro(t, rep) for t in tables[:3]]) - macro(tables[3], rep)
                         for rep in idx])
        assert (comp.lower, comp.upper) == pytest.approx((stats[LO], stats[HI]), abs=1e-12)
    assert [c.section for c in second.comparisons] == ["dice"]
    assert second.comparisons[0].diff == pytest.approx(
        -[c for c in first.comparisons if c.section == "dice"][0].diff, abs=1e-12)
    assert second.verdict == FAILS
    text = render_check(results, synthetic=["shapes"])
    assert "SYNTHETIC DATA" in text and "## random-beats-center: FAILS" in text
    assert "> Noise beats the centre prior. (test; seeds)" in text


def test_a_seed_that_disagrees_keeps_a_comparison_from_holding_or_failing():
    from bench.reproduce.check import FAILS, HOLDS, MISSING, UNRESOLVED, Comparison

    c = Comparison("iou", "a", "b", diff=0.1, lower=0.05, upper=0.15, seeds=3,
                   seeds_positive=3)
    assert c.verdict == HOLDS
    c.seeds_positive, c.seeds_negative = 2, 1  # a narrow CI does not outvote a retrained seed
    assert c.verdict == UNRESOLVED
    c.diff, c.lower, c.upper, c.seeds_positive, c.seeds_negative = -0.1, -0.15, -0.05, 0, 3
    assert c.verdict == FAILS
    c.seeds_positive, c.seeds_negative = 1, 2
    assert c.verdict == UNRESOLVED
    c.diff, c.lower, c.upper, c.seeds_positive, c.seeds_negative = -0.01, -0.03, 0.01, 0, 3
    assert c.verdict == UNRESOLVED  # every seed below, but the CI covers 0
    c.lower = c.upper = None
    assert c.verdict == UNRESOLVED
    # every seed above and the test-image CI above 0, but retraining moves more than that
    c = Comparison("iou", "a", "b", diff=0.015, lower=0.01, upper=0.02, seeds=3,
                   seeds_positive=3, seed_lower=-0.009, seed_upper=0.039)
    assert c.verdict == UNRESOLVED
    c.seed_lower = 0.002
    assert c.verdict == HOLDS
    c.missing = "b"
    assert c.verdict == MISSING


def test_the_across_seed_interval_is_the_paired_t_interval():
    from scipy import stats

    from bench.reproduce.check import seed_interval

    diffs = [0.004, 0.022, 0.019]  # hand check: mean 0.015, SD 0.009644, t(0.975, 2) 4.3027
    lo, hi = seed_interval(diffs)
    assert (lo, hi) == pytest.approx((0.015 - 4.302653 * 0.0096437 / 3 ** 0.5,
                                      0.015 + 4.302653 * 0.0096437 / 3 ** 0.5), abs=1e-6)
    want = stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (lo, hi) == pytest.approx(want, abs=1e-12)
    assert seed_interval([0.1]) == (None, None)
    assert seed_interval([0.1, 0.1]) == pytest.approx((0.1, 0.1))


@settings(max_examples=200, deadline=None)
@given(diffs=st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=5),
       lo=st.floats(-1, 1, allow_nan=False), width=st.floats(0, 1, allow_nan=False))
def test_swapping_a_and_b_swaps_holds_and_fails(diffs, lo, width):
    from bench.reproduce.check import FAILS, HOLDS, UNRESOLVED, Comparison, seed_interval

    def comp(ds, lower, upper):
        slo, shi = seed_interval(ds)
        return Comparison("iou", "a", "b", diff=float(np.mean(ds)), lower=lower, upper=upper,
                          seeds=len(ds), seeds_positive=sum(d > 0 for d in ds),
                          seeds_negative=sum(d < 0 for d in ds), seed_lower=slo,
                          seed_upper=shi)

    ab = comp(diffs, lo, lo + width)
    ba = comp([-d for d in diffs], -(lo + width), -lo)
    assert (ab.verdict, ba.verdict) in {(HOLDS, FAILS), (FAILS, HOLDS),
                                        (UNRESOLVED, UNRESOLVED)}
    assert ab.verdict != HOLDS or (lo > 0 and all(d > 0 for d in diffs)
                                   and (len(diffs) == 1 or ab.seed_lower > 0))


def test_a_trained_model_with_one_seed_pairs_only_that_seed(tmp_path: Path, monkeypatch):
    """AFLoc evaluated for the first seed only, GLoRIA for two: one pair (the first seed), not
    AFLoc's seed 1 against each GLoRIA seed."""
    from bench.reproduce.check import Comparison, compare

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=40)

    def write(folder: Path, method: str, noise: float) -> float:
        scores = labels + rng.normal(0, noise, size=40)
        rows = pd.DataFrame({"sample_id": [f"s{j}" for j in range(40)], "pathology": "A",
                             "label": labels.astype(float), "score": scores})
        rd = RunDir(folder / f"run-{method}")
        rd.path.mkdir(parents=True)
        rd.write_chunk(0, rows)
        summary = summarize_classification(rows, N_BOOT, 0)
        rd.write_summary(summary)
        rd.write_run({"run_id": rd.path.name, "status": "complete", "method": method,
                      "dataset": "shapes", "task": "classification",
                      "protocol": "classification", "split": "test", "prompt": None})
        return summary["metrics"]["auroc"]["overall"]["mean"]

    root = tmp_path / "results"
    a1 = write(root, "afloc", 0.5)
    g1 = write(root, "gloria", 1.0)
    write(root / "seed-2", "gloria", 2.0)
    view = StoreView(root)
    comp = Comparison("all", "afloc", "gloria")
    compare(view, Sel(method="afloc", task="classification", metric="auroc"),
            Sel(method="gloria", task="classification", metric="auroc"), comp)
    assert comp.seeds == 1 and comp.diff == pytest.approx(a1 - g1, abs=1e-12)
    assert comp.per_seed == pytest.approx({"results": a1 - g1}, abs=1e-12)


# -- benchmarks/reproduce_stability.py: several reproduce folders side by side ----------------

def _stability_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_stability.py"
    spec = importlib.util.spec_from_file_location("reproduce_stability", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_comparison_is_stable_only_when_every_run_agrees():
    sign_of = _stability_script().sign_of
    assert sign_of([0.1, 0.2, 0.01]) == "stable a > b (3 runs)"
    assert sign_of([-0.1, 0.0, None]) == "stable a <= b (2 runs)"
    assert sign_of([0.1, -0.2, float("nan"), 0.3]) == "flips 2/3"


def test_the_stability_table_lists_each_folder_and_seed(seeded: Path, tmp_path: Path,
                                                         check_spec, capsys):
    import shutil

    from bench.reproduce.check import check_claims
    from bench.reproduce.plan import load_plan

    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(CHECK_PLAN)
    outs = []
    for name in ("two-threads", "one-thread"):
        out = tmp_path / name
        shutil.copytree(seeded, out / "results")
        (out / "reproduce.json").write_text(json.dumps({"scale": "micro", "threads": 1}))
        outs.append(out)
    shutil.rmtree(outs[1] / "results" / "seed-3")  # the second folder has two seeds
    _stability_script().main([*map(str, outs), "--tables", "seeds", "--plan", str(plan_path),
                              "--label", "A", "--label", "B"])
    text = capsys.readouterr().out
    assert "SYNTHETIC DATA (shapes)" in text
    heads = ["A s1", "A s2", "A s3", "B s1", "B s2"]  # micro's first seed is 1
    assert "| claim | section | a | b | " + " | ".join(heads) + " | sign |" in text
    want = check_claims(load_plan(plan_path), seeded)
    lines = [x for x in text.splitlines() if x.startswith("| center-beats-random | iou |")
             and x.endswith(" runs) |")]
    per_seed = [c for c in want[0].comparisons if c.section == "iou"][0].per_seed
    values = [per_seed["results"], per_seed["seed-2"], per_seed["seed-3"],
              per_seed["results"], per_seed["seed-2"]]
    assert lines == ["| center-beats-random | iou | center@all | random@all | "
                     + " | ".join(f"{v:+.3f}" for v in values) + " | "
                     + _stability_script().sign_of(values) + " |"]
    n = sum(len(r.comparisons) for r in want)
    stable = sum(len({v > 0 for v in c.per_seed.values()}) == 1
                 for r in want for c in r.comparisons)
    assert f"\n{stable} of {n} comparisons keep their sign in every (folder, seed)." in text
    # each folder's own check verdict (over its seeds), side by side
    two = check_claims(load_plan(plan_path), outs[1] / "results")
    for first, second in zip(want, two):
        for ca, cb in zip(first.comparisons, second.comparisons):
            row = (f"| {first.claim.id} | {ca.section} | {ca.a} | {ca.b} | {ca.verdict} | "
                   f"{cb.verdict} | {_stability_script().agreement([ca.verdict, cb.verdict])} |")
            assert row in text
    assert "comparisons get the same verdict in every folder" in text


def test_folders_contradict_only_when_one_holds_and_another_fails():
    agreement = _stability_script().agreement
    assert agreement(["holds", "holds", None]) == "same"
    assert agreement(["holds", "unresolved"]) == "differs"
    assert agreement(["fails", "unresolved", "holds"]) == "contradicts"
