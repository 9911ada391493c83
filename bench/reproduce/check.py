"""`bench reproduce --check`: does each ordering the paper states hold in the measured results?

The claims are data in the plan (`[[claim]]`: the paper's sentence, where it is, the table, the
cells that should be higher and those they should beat). Each claim is a set of comparisons,
one per (section, column, a, b): the difference a - b of the two cells' values, paired by
training seed (seed s of a against seed s of b; a row with no trained model, e.g. the centre
prior, is the same run for every seed), averaged over the seeds, with a pooled 95% CI: the same
bootstrap resamples of the test units for every run of both cells, the seed-mean difference on
each (`bench.report.seeds`). Beside it, the across-seed 95% interval: a paired t-interval
over the seeds' differences (mean +- t(0.975, n-1) SD / sqrt(n)), what retraining moves, which
the bootstrap over test images cannot see. A comparison "holds" when both intervals lie above 0
and every seed has a > b, "fails" when both lie below 0 and every seed has a < b, and is
"unresolved" otherwise: a difference smaller than what retraining moves is not called either
way (at the tiny scale, calls made on the test-image CI and the seeds' signs alone flipped with
the thread count). A claim holds when all of its comparisons hold and fails when any fails.
With one seed there is no across-seed interval and the pairing is
trivially that seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.reproduce.plan import Claim, Plan

HOLDS, UNRESOLVED, FAILS, MISSING = "holds", "unresolved", "fails", "not measured"


@dataclass
class Comparison:
    section: str
    a: str                       # "row@column"
    b: str
    diff: float = math.nan       # mean over paired seeds of a - b (each seed's table values)
    lower: float | None = None   # pooled paired-bootstrap CI of the difference
    upper: float | None = None
    seeds: int = 0               # pairs compared
    seeds_positive: int = 0      # pairs with a > b
    seeds_negative: int = 0      # pairs with a < b
    seed_lower: float | None = None  # paired t-interval over the seeds' differences (2+ seeds)
    seed_upper: float | None = None
    missing: str = ""            # which cell has no result
    per_seed: dict[str, float] = field(default_factory=dict)  # seed folder -> a - b

    @property
    def verdict(self) -> str:
        if self.missing:
            return MISSING
        if self.lower is None or self.upper is None or not self.seeds:
            return UNRESOLVED
        one = self.seed_lower is None or self.seed_upper is None
        if (self.lower > 0 and self.seeds_positive == self.seeds
                and (one or self.seed_lower > 0)):
            return HOLDS
        if (self.upper < 0 and self.seeds_negative == self.seeds
                and (one or self.seed_upper < 0)):
            return FAILS
        return UNRESOLVED

    def record(self) -> dict[str, Any]:
        return {"section": self.section, "a": self.a, "b": self.b, "diff": _num(self.diff),
                "lower": self.lower, "upper": self.upper, "seed_lower": self.seed_lower,
                "seed_upper": self.seed_upper, "seeds": self.seeds,
                "seeds_positive": self.seeds_positive,
                "seeds_negative": self.seeds_negative, "verdict": self.verdict,
                "missing": self.missing or None,
                "per_seed": {k: _num(v) for k, v in self.per_seed.items()}}


@dataclass
class ClaimResult:
    claim: Claim
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.comparisons}
        if not verdicts or verdicts == {MISSING}:
            return MISSING
        if FAILS in verdicts:
            return FAILS
        if MISSING in verdicts:
            return "partly measured"
        return HOLDS if verdicts == {HOLDS} else UNRESOLVED

    def record(self) -> dict[str, Any]:
        c = self.claim
        return {"id": c.id, "sentence": c.sentence, "where": c.where, "table": c.table,
                "verdict": self.verdict, "comparisons": [x.record() for x in self.comparisons]}


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def comparisons_of(claim: Claim) -> list[tuple[Any, Any, Any, Any, Any]]:
    """(section, row a, column a, row b, column b) of every comparison the claim makes."""
    from bench.report.specs import TABLES

    spec = TABLES[claim.table]
    rows = {r.id: r for r in spec.rows}
    cols = {c.id: c for c in spec.columns}
    sections = [s for s in spec.sections if not claim.sections or s.id in claim.sections]
    columns = [c for c in spec.columns if c.attr is None and c.derived is None
               and (not claim.columns or c.id in claim.columns)]
    out: dict[tuple, tuple] = {}
    for sec in sections:
        for col in columns:
            for ra in claim.a:
                for rb in claim.b:
                    a_row, _, a_col = ra.partition("@")
                    b_row, _, b_col = rb.partition("@")
                    ca, cb = cols[a_col] if a_col else col, cols[b_col] if b_col else col
                    key = (sec.id, a_row, ca.id, b_row, cb.id)
                    out.setdefault(key, (sec, rows[a_row], ca, rows[b_row], cb))
    return list(out.values())


def check_claims(plan: Plan, results_dir: str | Path,
                 only: list[str] | None = None) -> list[ClaimResult]:
    from bench.report.specs import TABLES, not_applicable
    from bench.report.store_view import StoreView

    view = StoreView(results_dir)
    out = []
    for claim in plan.claims:
        if only and claim.table not in only:
            continue
        spec = TABLES[claim.table]
        res = ClaimResult(claim)
        for sec, ra, ca, rb, cb in comparisons_of(claim):
            sa, sb = spec.query(sec, ra, ca), spec.query(sec, rb, cb)
            if not_applicable(sa) or not_applicable(sb):
                continue
            comp = Comparison(sec.id, f"{ra.id}@{ca.id}", f"{rb.id}@{cb.id}")
            compare(view, sa, sb, comp)
            res.comparisons.append(comp)
        out.append(res)
    return out


def untrained(founds: dict[str, Any]) -> bool:
    """One run of a method that trains nothing (random, center, oracle, human): the same for
    every seed. A trained model's runs pair seed by seed, even when only one seed is there."""
    from bench.methods.catalog import CATALOG, SALIENCY

    if len(founds) != 1:
        return False
    info = CATALOG.get(str(next(iter(founds.values())).run.info.get("method")))
    return info is not None and "trainable" not in info.capabilities and info.family != SALIENCY


def seed_interval(diffs: list[float]) -> tuple[float | None, float | None]:
    """The paired t-interval (95%) of the mean over seeds of a - b; (None, None) with one seed.
    Seeds that all give the same difference make a zero-width interval."""
    if len(diffs) < 2:
        return None, None
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return _num(d.mean() - half), _num(d.mean() + half)


def compare(view: Any, sa: Any, sb: Any, comp: Comparison) -> None:
    fa, fb = view.find_each(sa), view.find_each(sb)
    if not fa or not fb:
        comp.missing = comp.a if not fa else comp.b
        return
    one_a, one_b = untrained(fa), untrained(fb)
    if one_a or one_b:  # a run of no trained model (a reference row) pairs with every seed
        labels = list(fb) if one_a and not one_b else list(fa)
        paired = {lab: (fa[lab] if not one_a else next(iter(fa.values())),
                        fb[lab] if not one_b else next(iter(fb.values()))) for lab in labels}
    else:
        paired = {lab: (fa[lab], fb[lab]) for lab in fa if lab in fb}
        if not paired:
            comp.missing = f"{comp.a} and {comp.b} share no seed"
            return
    pairs = list(paired.values())
    comp.per_seed = {lab: float(a.stat.mean - b.stat.mean) for lab, (a, b) in paired.items()}
    diffs = list(comp.per_seed.values())
    comp.diff = float(np.mean(diffs))
    comp.seeds = len(pairs)
    comp.seeds_positive = sum(d > 0 for d in diffs)
    comp.seeds_negative = sum(d < 0 for d in diffs)
    comp.seed_lower, comp.seed_upper = seed_interval(diffs)
    runs = [a.run for a, _ in pairs] + [b.run for _, b in pairs]
    try:
        reps = view.replicates(sa, runs)
    except (KeyError, ValueError):
        reps = None
    if reps is not None and sa.task == sb.task:
        from bench.report.seeds import interval

        k = len(pairs)
        with np.errstate(invalid="ignore"):
            _, lo, hi = interval(reps[:, :k].mean(axis=1) - reps[:, k:].mean(axis=1))
        comp.lower, comp.upper = _num(lo), _num(hi)


def render_check(results: list[ClaimResult], digits: int = 3,
                 synthetic: list[str] | None = None) -> str:
    """Markdown: one block per claim (its sentence and verdict), one line per comparison;
    `synthetic`: the synthetic datasets measured (said first, loudly)."""
    counts = {v: sum(r.verdict == v for r in results)
              for v in (HOLDS, UNRESOLVED, FAILS, "partly measured", MISSING)}
    head = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    lines = [f"# The paper's orderings, checked ({len(results)} claims: {head})", "",
             "Each comparison: the mean over paired training seeds of a - b, its pooled 95% "
             "CI (the same bootstrap resamples of the test units for every run), the 95% "
             "paired t-interval across seeds (what retraining moves; 2+ seeds), and how many "
             "seeds have a > b. holds: both intervals are above 0 and every seed has a > b; "
             "fails: both are below 0 and every seed has a < b; unresolved: otherwise.", ""]
    if synthetic:
        lines[1:1] = ["", "SYNTHETIC DATA: measured on " + ", ".join(synthetic) + " "
                      "(procedurally generated, not the paper's datasets). Whether an ordering "
                      "holds here tests the harness and the methods on the synthetic world; it "
                      "is not a reproduction of the paper's result."]
    for r in results:
        c = r.claim
        lines.append(f"## {c.id}: {r.verdict.upper()}")
        lines.append(f"> {c.sentence} ({c.where}; {c.table})")
        lines.append("")
        for x in r.comparisons:
            sec = f"{x.section} " if x.section != "all" else ""
            if x.missing:
                lines.append(f"- {sec}{x.a} vs {x.b}: not measured ({x.missing} has no result)")
                continue
            ci = ("CI not estimable" if x.lower is None or x.upper is None
                  else f"CI {x.lower:+.{digits}f}, {x.upper:+.{digits}f}")
            seeds = ("" if x.seed_lower is None or x.seed_upper is None else
                     f"; across seeds {x.seed_lower:+.{digits}f}, {x.seed_upper:+.{digits}f}")
            lines.append(f"- {sec}{x.a} vs {x.b}: {x.diff:+.{digits}f} ({ci}{seeds}); "
                         f"{x.seeds_positive}/{x.seeds} seeds a > b: {x.verdict}")
        lines.append("")
    return "\n".join(lines)
