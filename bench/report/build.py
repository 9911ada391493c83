"""Fills a table spec from the results store: one `CellResult` per cell, plus footnotes.

Nothing here formats text for a particular output; `render.py` does that. Missing cells stay
missing (never invented); each one yields the `bench run` command that would fill it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.report.paper_values import PaperCell, paper_values
from bench.report.seeds import SeedSpread
from bench.report.specs import Column, Row, Section, Sel, TableSpec, not_applicable
from bench.report.store_view import Run, Stat, StoreView

MISSING = "—"
NOT_APPLICABLE = "n/a"
SYNTHETIC_MARK = "†"
SEED_MARK = "±"


@dataclass
class CellResult:
    kind: str                        # "value" | "attr" | "derived"
    measured: Stat | None = None
    paper: PaperCell | None = None
    run: Run | None = None
    text: str | None = None          # for "attr" cells
    missing_sel: Sel | None = None   # the query of a missing measured cell
    na: str | None = None            # why the row's method cannot fill it (no command offered)
    reference: bool = False          # a reference row's cell: no published value
    spread: SeedSpread | None = None  # several training seeds: each one's value

    @property
    def synthetic(self) -> bool:
        return self.run is not None and self.run.synthetic


@dataclass
class RowResult:
    row: Row
    cells: list[CellResult]


@dataclass
class SectionResult:
    section: Section
    rows: list[RowResult]


@dataclass
class TableResult:
    spec: TableSpec
    sections: list[SectionResult]
    commands: list[str] = field(default_factory=list)
    synthetic_datasets: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    # methods with empty cells that no registered adapter can fill (no command to offer)
    unavailable: list[str] = field(default_factory=list)
    # why cells are not applicable (a method's missing capability), once each
    not_applicable: list[str] = field(default_factory=list)
    # the results folders of the training seeds (the folder itself first), when several
    seed_labels: list[str] = field(default_factory=list)

    @property
    def seeded(self) -> bool:
        return any(c.spread is not None for s in self.sections for r in s.rows
                   for c in r.cells)

    @property
    def n_measured(self) -> int:
        return sum(c.measured is not None for s in self.sections for r in s.rows for c in r.cells)

    @property
    def synthetic(self) -> bool:
        return bool(self.synthetic_datasets)

    def column_labels(self) -> list[str]:
        """Column headers; a dataset column filled by a synthetic twin names that twin."""
        labels = []
        for j, col in enumerate(self.spec.columns):
            twins = sorted({c.run.dataset for s in self.sections for r in s.rows
                            for c in [r.cells[j]] if c.synthetic})
            label = col.label
            if twins and col.sel.dataset is not None:
                label += " [" + ", ".join(twins) + "]"
            labels.append(label)
        return labels

    def caption(self) -> str:
        cap = f"{self.spec.source} (measured by this harness): {self.spec.caption}"
        if self.synthetic:
            cap = ("SYNTHETIC DATA - cells marked " + SYNTHETIC_MARK + " were measured on "
                   + ", ".join(self.synthetic_datasets) + ", procedurally generated synthetic "
                   "data, not the paper's datasets; they are not a reproduction of the paper. "
                   + cap)
        return cap

    def footnotes(self) -> list[str]:
        from bench.report.specs import REFERENCE_NOTE

        notes = list(self.spec.notes)
        if any(r.reference for r in self.spec.rows):
            notes.append(REFERENCE_NOTE)
        if self.seeded:
            counts = sorted({c.spread.n for s in self.sections for r in s.rows for c in r.cells
                             if c.spread is not None})
            notes.append(
                f"{SEED_MARK} training seeds: a trained row's value is the mean over "
                f"{'/'.join(map(str, counts))} training seeds (results folders: "
                f"{', '.join(self.seed_labels)}) of each seed's own value, ± their standard "
                "deviation (the spread from retraining); its CI is pooled: the same bootstrap "
                "resamples of the test units for every seed, the seed-mean of the statistic on "
                "each, categories combined as the protocol combines them (not an official "
                "protocol's CI: no official code trains several seeds). "
                "Rows without ± have one run (no trained model, or one seed).")
        if self.not_applicable:
            notes.append(f"{NOT_APPLICABLE} not applicable: " + "; ".join(self.not_applicable)
                         + ".")
        if self.synthetic:
            notes.append(f"{SYNTHETIC_MARK} synthetic data: "
                         + ", ".join(self.synthetic_datasets)
                         + " (the real dataset's adapter reading generated phantoms).")
        if self.commands:
            notes.append(f"{MISSING} no result in the store. Commands that would fill the "
                         "empty cells:")
            notes.extend(f"    {c}" for c in self.commands)
            if any("--tag " in c for c in self.commands):
                notes.append("--tag names a configuration of the method (e.g. levels=word: "
                             "AFLoc with a checkpoint trained with only those alignment "
                             "levels, given with --method-arg afloc.checkpoint=...); run.json "
                             "records it as method_tag.")
        notes.extend(map_notes(self.runs))
        if self.unavailable:
            notes.append(f"{MISSING} no adapter registered in this harness for "
                         + ", ".join(self.unavailable) + ": their cells stay empty "
                         "(`bench list methods` shows what is registered).")
        return notes


def map_notes(runs: list[Run]) -> list[str]:
    """The catalog's note on how a method's maps are made, once per method whose localization
    results the table shows (e.g. ConVIRT's maps: the harness's adaptation)."""
    from bench.methods.catalog import CATALOG

    names = dict.fromkeys(str(r.info.get("method")) for r in runs
                          if r.info.get("task") == "localization")
    return [f"{CATALOG[n].display}: {CATALOG[n].map_note}" for n in names
            if n in CATALOG and CATALOG[n].map_note]


def _tag(sel: Sel) -> str | None:
    """The `--tag` a run needs to fill `sel` (none when an untagged run is accepted)."""
    if sel.tags and None not in sel.tags:
        return str(sel.tags[0])
    return None


def run_command(methods: list[str], datasets: list[str], sel: Sel) -> str:
    """The `bench run` invocation that would produce runs matching `sel` for these names."""
    parts = ["bench run", f"--methods {','.join(methods)}", f"--datasets {','.join(datasets)}"]
    if sel.split:
        parts.append(f"--split {sel.split}")
    if sel.task == "classification":
        parts.append("--task classification")
    if sel.protocol:
        parts.append(f"--protocol {sel.protocol}")
    if sel.prompt:
        parts.append(f"--prompt {sel.prompt}")
    if sel.tags:
        parts.append(f"--tag {sel.tags[0]}")
    return " ".join(parts)


def missing_commands(sels: list[Sel]) -> list[str]:
    """Few commands for many empty cells: datasets grouped per method, then methods that share
    the same datasets and options grouped into one command (first-seen order)."""
    def options(s: Sel) -> tuple:
        tag = _tag(s)
        return (s.split, s.task, s.protocol, s.prompt, (tag,) if tag else None)

    per_method: dict[tuple, list[str]] = {}
    for s in sels:
        ds = per_method.setdefault((s.method or "?", options(s)), [])
        if (s.dataset or "?") not in ds:
            ds.append(s.dataset or "?")
    grouped: dict[tuple, list[str]] = {}
    for (method, opts), datasets in per_method.items():
        ms = grouped.setdefault((tuple(datasets), opts), [])
        if method not in ms:
            ms.append(method)
    out = []
    for (datasets, opts), methods in grouped.items():
        split, task, protocol, prompt, tags = opts
        out.append(run_command(methods, list(datasets), Sel(split=split, task=task,
                                                            protocol=protocol, prompt=prompt,
                                                            tags=tags)))
    return out


def build_table(spec: TableSpec, view: StoreView) -> TableResult:
    paper = paper_values()
    sections: list[SectionResult] = []
    missing: list[Sel] = []
    synth: set[str] = set()
    runs: dict[str, Run] = {}
    na: list[str] = []
    for section in spec.sections:
        rows = []
        for row in spec.rows:
            cells = [_cell(spec, view, paper, section, row, col) for col in spec.columns]
            _fill_derived(spec.columns, cells)
            for cell in cells:
                if cell.na is not None and cell.na not in na:
                    na.append(cell.na)
                if cell.missing_sel is not None:
                    missing.append(cell.missing_sel)
                if cell.run is not None:
                    runs[cell.run.run_id] = cell.run
                    if cell.synthetic:
                        synth.add(cell.run.dataset)
            rows.append(RowResult(row, cells))
        sections.append(SectionResult(section, rows))
    known = registered_methods()
    runnable = [s for s in missing if s.method is None or s.method in known]
    unavailable = list(dict.fromkeys(s.method for s in missing
                                     if s.method is not None and s.method not in known))
    return TableResult(spec, sections, missing_commands(runnable), sorted(synth),
                       [runs[k] for k in sorted(runs)], unavailable, na,
                       view.seed_labels if view.seed_views else [])


def registered_methods() -> set[str]:
    """Method names `bench run` accepts (built-ins and plugins)."""
    from bench.registry import METHODS

    return set(METHODS.names())


def _cell(spec: TableSpec, view: StoreView, paper: dict, section: Section, row: Row,
          col: Column) -> CellResult:
    if col.attr is not None:
        return CellResult("attr", text=row.attrs.get(col.attr, ""))
    ref = row.reference
    pub = None if ref else paper.get((spec.name, section.id, row.id, col.id))
    if col.derived is not None:
        return CellResult("derived", paper=pub, reference=ref)
    if row.paper_only:
        return CellResult("value", paper=pub)
    sel = spec.query(section, row, col)
    na = not_applicable(sel)
    if na is not None:
        return CellResult("value", paper=pub, na=na, reference=ref)
    found = view.find(sel)
    if found is None:
        return CellResult("value", paper=pub, missing_sel=sel, reference=ref)
    return CellResult("value", measured=found.stat, paper=pub, run=found.run, reference=ref,
                      spread=found.spread)


def _fill_derived(columns: tuple[Column, ...], cells: list[CellResult]) -> None:
    """`row-mean`: the mean of the row's measured values, only when every one is there."""
    values = [c for col, c in zip(columns, cells) if col.derived is None and col.attr is None]
    for col, cell in zip(columns, cells):
        if col.derived == "row-mean" and values and all(v.measured for v in values):
            means = [v.measured.mean for v in values]  # type: ignore[union-attr]
            cell.measured = Stat(float(sum(means) / len(means)), None, None)
            if any(v.synthetic for v in values):
                cell.run = next(v.run for v in values if v.synthetic)


def fmt_number(x: float | None, digits: int = 3) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    return f"{x:.{digits}f}"


def fmt_ci(value: float, lower: float | None, upper: float | None, digits: int = 3) -> str:
    """`0.342 (0.332, 0.350)`; the value alone when there is no CI; `0.342 (CI not
    estimable)` when a bound is NaN or upper < lower (tiny sets: `ci_estimable`)."""
    from bench.eval.bootstrap import ci_estimable

    text = fmt_number(value, digits)
    if lower is None and upper is None:
        return text
    if not ci_estimable(lower, upper):
        return text + " (CI not estimable)"
    return text + f" ({fmt_number(lower, digits)}, {fmt_number(upper, digits)})"


def measured_text(cell: CellResult, digits: int = 3) -> str:
    if cell.kind == "attr":
        return cell.text or ""
    if cell.na is not None:
        return NOT_APPLICABLE
    if cell.measured is None:
        return MISSING
    m = cell.measured
    text = fmt_number(m.mean, digits)
    if cell.spread is not None and cell.spread.n > 1:
        text += f" {SEED_MARK}{fmt_number(cell.spread.sd, digits)}"
    text += fmt_ci(m.mean, m.lower, m.upper, digits)[len(fmt_number(m.mean, digits)):]
    return text + (SYNTHETIC_MARK if cell.synthetic else "")


def paper_text(cell: CellResult, digits: int = 3) -> str:
    if cell.kind == "attr" or cell.reference:
        return cell.text or ""  # a reference row has no published value: nothing, not "—"
    if cell.paper is None:
        return MISSING
    p = cell.paper
    return fmt_ci(p.value, p.lower, p.upper, digits)
