"""The paper's figures (Fig. 2-5) drawn from the results store.

Fig. 2 and 3 are bar charts of the same cells as Extended Data Tables 1/4 and 2/5 (so a figure
and its table can never disagree); Fig. 4 and 5 overlay stored heatmaps (`bench run
--keep-maps N`, maps/<k>.npz + maps/index.json). Output is deterministic: no timestamps or
software strings in the files, fixed fonts and sizes, Okabe-Ito (colour-blind-safe) colours.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.methods.catalog import CATALOG  # noqa: E402
from bench.report.build import TableResult, build_table  # noqa: E402
from bench.report.specs import (  # noqa: E402
    DATASET_LABELS,
    FIGURES,
    METHOD_LABELS,
    TABLES,
    Sel,
)
from bench.report.store_view import Run, StoreView  # noqa: E402

# one fixed, colour-blind-safe colour per method across every figure (the method table)
METHOD_COLORS = {name: info.colour for name, info in CATALOG.items()}
METHOD_HATCHES = {name: info.hatch for name, info in CATALOG.items() if info.hatch}
HEAT_CMAP = "Reds"
SYNTH_COLOR = "#B2182B"
PAPER_WIDTH_IN = 7.2  # a journal's two-column width

STYLE = {
    "font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "figure.titlesize": 8.5,
    "axes.spines.top": False, "axes.spines.right": False, "font.family": "DejaVu Sans",
    "svg.hashsalt": "bench", "pdf.fonttype": 42,
}


@dataclass
class Drawn:
    """A drawn figure and what went into it (for the report's provenance and the tests)."""

    figure: Figure
    runs: list[Run]
    synthetic: list[str]
    n_bars: int = 0
    n_panels: int = 0


# -- saving -------------------------------------------------------------------------------

def save(fig: Figure, path: Path, fmt: str) -> Path:
    """Byte-deterministic PNG/PDF: no creation date, no software/version strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pdf":
        fig.savefig(path, format="pdf",
                    metadata={"Creator": None, "Producer": None, "CreationDate": None})
    elif fmt == "png":
        fig.savefig(path, format="png", dpi=200, metadata={"Software": None})
    else:
        raise BenchError(f"unknown figure format {fmt!r} (png or pdf)")
    return path


def make_figure(name: str, view: StoreView, out_dir: Path, fmt: str = "png") -> Path:
    drawn = draw(name, view)
    try:
        return save(drawn.figure, Path(out_dir) / f"{name}.{fmt}", fmt)
    finally:
        plt.close(drawn.figure)


def draw(name: str, view: StoreView) -> Drawn:
    if name not in FIGURES:
        raise BenchError(f"unknown figure '{name}'; known: {', '.join(FIGURES)}")
    with plt.rc_context(STYLE):
        return {"fig2": draw_fig2, "fig3": draw_fig3, "fig4": draw_fig4,
                "fig5": draw_fig5}[name](view)


# -- bar charts (Fig. 2, Fig. 3) ----------------------------------------------------------

@dataclass
class Bar:
    method: str
    mean: float
    lower: float | None
    upper: float | None
    paper: float | None = None   # published value, drawn only beside real-data bars


def _bars(result: TableResult, section_id: str, column_id: str) -> list[Bar]:
    j = [c.id for c in result.spec.columns].index(column_id)
    sec = next(s for s in result.sections if s.section.id == section_id)
    out = []
    for r in sec.rows:
        cell = r.cells[j]
        m = cell.measured
        if m is not None and np.isfinite(m.mean):
            paper = None if cell.synthetic or cell.paper is None else cell.paper.value
            out.append(Bar(r.row.id, m.mean, m.lower, m.upper, paper))
    return out


def _draw_bar_group(ax, x: float, bars: list[Bar], slots: list[str], width: float) -> int:
    n = 0
    for bar in bars:
        k = slots.index(bar.method)
        pos = x + (k - (len(slots) - 1) / 2) * width
        yerr = None
        if bar.lower is not None and bar.upper is not None:
            yerr = [[max(bar.mean - bar.lower, 0.0)], [max(bar.upper - bar.mean, 0.0)]]
        ax.bar(pos, bar.mean, width=width * 0.92, color=METHOD_COLORS.get(bar.method, "#777777"),
               edgecolor="black", linewidth=0.4, yerr=yerr, capsize=1.5,
               error_kw={"elinewidth": 0.6, "capthick": 0.6},
               hatch=METHOD_HATCHES.get(bar.method),
               label=METHOD_LABELS.get(bar.method, bar.method))
        if bar.paper is not None:
            ax.plot([pos], [bar.paper], **PAPER_MARKER)
        n += 1
    return n


PAPER_MARKER = {"marker": "D", "markersize": 3.2, "markerfacecolor": "white",
                "markeredgecolor": "black", "markeredgewidth": 0.7, "linestyle": "none"}


def _paper_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], **PAPER_MARKER)


def _has_paper(bars: list[Bar]) -> bool:
    return any(b.paper is not None for b in bars)


def _synth_title(label: str, twins: list[str]) -> tuple[str, str]:
    if twins:
        return f"{label}\n({', '.join(twins)})", SYNTH_COLOR
    return label, "black"


def _legend(fig: Figure, methods: list[str], y: float = 1.0, paper: bool = False) -> None:
    handles = [Rectangle((0, 0), 1, 1, facecolor=METHOD_COLORS.get(m, "#777777"),
                         edgecolor="black", linewidth=0.4, hatch=METHOD_HATCHES.get(m))
               for m in methods]
    labels = [METHOD_LABELS.get(m, m) for m in methods]
    if paper:
        handles.append(_paper_handle())
        labels.append("paper (published)")
    fig.legend(handles, labels, loc="upper center", ncol=min(len(handles), 8), frameon=False,
               bbox_to_anchor=(0.5, y))


def _column_twins(result: TableResult, column_id: str) -> list[str]:
    j = [c.id for c in result.spec.columns].index(column_id)
    return sorted({r.cells[j].run.dataset for s in result.sections for r in s.rows
                   if r.cells[j].synthetic})


def draw_fig2(view: StoreView) -> Drawn:
    """Rows IoU / Dice / CNR; columns the localization datasets; bars per method with CIs."""
    ext1, ext4 = build_table(TABLES["extended-1"], view), build_table(TABLES["extended-4"], view)
    panels = [(ext1, "rsna", DATASET_LABELS["rsna"]), (ext1, "ms-cxr", DATASET_LABELS["ms-cxr"]),
              (ext1, "covid-rural", DATASET_LABELS["covid-rural"]),
              (ext4, "mean", "Fundus (lesion mean)")]
    metrics = [("iou", "IoU"), ("dice", "Dice"), ("cnr", "CNR")]
    cols = [(t, c, lab) for t, c, lab in panels
            if any(_bars(t, m, c) for m, _ in metrics)]
    if not cols:
        raise BenchError("fig2: no localization results in the store for RSNA, MS-CXR, COVID "
                         "Rural or fundus; see `bench table extended-1` for the runs to make")
    methods = [m for m in METHOD_LABELS
               if any(b.method == m for t, c, _ in cols for s, _ in metrics
                      for b in _bars(t, s, c))]
    fig, axes = plt.subplots(3, len(cols), figsize=(min(PAPER_WIDTH_IN, 1.9 * len(cols) + 0.8),
                                                    5.4), squeeze=False)
    n_bars = 0
    synth: set[str] = set()
    any_paper = False
    for j, (table, col, label) in enumerate(cols):
        twins = _column_twins(table, col)
        synth.update(twins)
        for i, (sid, mlabel) in enumerate(metrics):
            ax = axes[i][j]
            bars = _bars(table, sid, col)
            any_paper |= _has_paper(bars)
            n_bars += _draw_bar_group(ax, 0.0, bars, methods, 1.0)
            ax.set_xticks([])
            ax.set_xlim(-len(methods) / 2 - 0.1, len(methods) / 2 + 0.1)
            ax.axhline(0, color="black", linewidth=0.5)
            if not bars:
                ax.text(0.5, 0.5, "no result", transform=ax.transAxes, ha="center",
                        va="center", color="#555555")
            if j == 0:
                ax.set_ylabel(mlabel)
            if i == 0:
                title, color = _synth_title(label, twins)
                ax.set_title(title, color=color)
    runs = ext1.runs + ext4.runs
    fig.suptitle(_suptitle("Fig. 2", "localization, 95% CI error bars", synth), y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    _legend(fig, methods, y=0.945, paper=any_paper)
    return Drawn(fig, runs, sorted(synth), n_bars=n_bars, n_panels=3 * len(cols))


def _suptitle(fig_name: str, what: str, synth: set[str] | list[str]) -> str:
    text = f"{fig_name} (measured by this harness): {what}"
    if synth:
        text += "\nSYNTHETIC DATA - not the paper's datasets, not a reproduction of the paper"
    return text


def draw_fig3(view: StoreView) -> Drawn:
    """(a) MS-CXR IoU per pathology; (b) CheXlocalize IoU per pathology with the human benchmark."""
    parts = [("a", build_table(TABLES["extended-2"], view), "MS-CXR"),
             ("b", build_table(TABLES["extended-5"], view), "CheXlocalize")]
    parts = [p for p in parts if p[1].n_measured]
    if not parts:
        raise BenchError("fig3: no per-pathology IoU for MS-CXR or CheXlocalize in the store; "
                         "see `bench table extended-2` / `bench table extended-5`")
    fig, axes = plt.subplots(len(parts), 1, figsize=(PAPER_WIDTH_IN, 2.5 * len(parts) + 0.3),
                             squeeze=False)
    n_bars = 0
    synth: set[str] = set()
    runs: list[Run] = []
    for ax, (letter, table, label) in zip(axes[:, 0], parts):
        runs += table.runs
        synth.update(table.synthetic_datasets)
        sec = table.sections[0]
        methods = [r.row.id for r in sec.rows
                   if any(c.measured is not None for c in r.cells)]
        width = 0.8 / max(len(methods), 1)
        any_paper = False
        for x, col in enumerate(table.spec.columns):
            bars = _bars(table, sec.section.id, col.id)
            any_paper |= _has_paper(bars)
            n_bars += _draw_bar_group(ax, float(x), bars, methods, width)
        ax.set_xticks(range(len(table.spec.columns)))
        ax.set_xticklabels([textwrap.fill(c.label, 13, break_long_words=False)
                            for c in table.spec.columns])
        ax.set_ylabel("IoU")
        ax.set_xlim(-0.6, len(table.spec.columns) - 0.4)
        title, color = _synth_title(f"{letter}. {label}", table.synthetic_datasets)
        # the legend takes the line above the axes; the title sits above it (a long synthetic
        # title and five methods' legend overlapped on one line)
        ax.set_title(title.replace("\n", "  "), loc="left", color=color, fontweight="bold",
                     pad=16)
        handles = [Rectangle((0, 0), 1, 1, facecolor=METHOD_COLORS.get(m, "#777777"),
                             edgecolor="black", linewidth=0.4,
                             hatch=METHOD_HATCHES.get(m)) for m in methods]
        labels = [next(r.row.label.rstrip("*") for r in sec.rows if r.row.id == m)
                  for m in methods]
        if any_paper:
            handles.append(_paper_handle())
            labels.append("paper (published)")
        ax.legend(handles, labels, ncol=len(handles), frameon=False, loc="lower right",
                  bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(_suptitle("Fig. 3", "IoU per pathology, 95% CI error bars", synth))
    fig.tight_layout()
    return Drawn(fig, runs, sorted(synth), n_bars=n_bars, n_panels=len(parts))


# -- heatmap overlays (Fig. 4, Fig. 5) ----------------------------------------------------

@dataclass
class StoredMap:
    run: Run
    sample_id: str
    query_id: str
    pathology: str
    query: str
    path: Path

    @property
    def key(self) -> str:
        return self.query_id or f"{self.sample_id}|{self.pathology}"

    def load(self) -> dict[str, np.ndarray]:
        with np.load(self.path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def stored_maps(run: Run) -> list[StoredMap]:
    index = run.path / "maps" / "index.json"
    if not index.is_file():
        return []
    entries = json.loads(index.read_text())
    return [StoredMap(run, str(e["sample_id"]), str(e.get("query_id", "")),
                      str(e.get("pathology", "")), str(e.get("query", "")),
                      run.path / "maps" / e["file"]) for e in entries]


def _runs_with_maps(view: StoreView, dataset: str) -> list[Run]:
    """Best run per (method, tag, prompt) on `dataset` (or its synthetic twin) that kept maps."""
    best: dict[tuple, Run] = {}
    for run in view.candidates(Sel(dataset=dataset, task="localization")):
        key = (run.info.get("method"), run.tag, run.info.get("prompt"))
        if key not in best and stored_maps(run):
            best[key] = run
    order = list(METHOD_LABELS)
    prompts = {"simple": 0, "precise": 1}

    def rank(r: Run) -> tuple:
        m = r.info.get("method")
        return (order.index(m) if m in order else len(order), str(m), r.tag or "",
                prompts.get(r.info.get("prompt") or "", 2))

    return sorted(best.values(), key=rank)


def normalized(heat: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] over finite pixels; NaN (e.g. the protocol margin) stays NaN."""
    h = heat.astype(np.float64)
    finite = np.isfinite(h)
    if not finite.any():
        return np.full(h.shape, np.nan)
    lo, hi = h[finite].min(), h[finite].max()
    out = np.where(finite, (h - lo) / (hi - lo) if hi > lo else 0.0, np.nan)
    return out


def overlay(ax, m: dict[str, np.ndarray], cmap_name: str = HEAT_CMAP) -> None:
    """Grey image, heatmap whose opacity grows with its value, GT dashed (boxes, else contour)."""
    image = m["image"]
    ax.imshow(image, cmap=None if image.ndim == 3 else "gray", vmin=0, vmax=255,
              interpolation="nearest")
    h = normalized(m["heatmap"])
    cmap = plt.get_cmap(cmap_name)
    rgba = cmap(np.nan_to_num(h, nan=0.0))
    rgba[..., 3] = np.where(np.isfinite(h), 0.7 * np.nan_to_num(h), 0.0)
    ax.imshow(rgba, interpolation="bilinear")
    boxes = np.asarray(m.get("boxes", np.zeros((0, 4))), dtype=float).reshape(-1, 4)
    if len(boxes):
        for x, y, w, h_ in boxes:
            for color, ls, lw in (("white", "-", 1.6), ("black", (0, (3, 2)), 1.0)):
                ax.add_patch(Rectangle((x, y), w, h_, fill=False, edgecolor=color,
                                       linestyle=ls, linewidth=lw))
    elif "gt" in m and np.any(m["gt"]):
        ax.contour(m["gt"] > 0, levels=[0.5], colors="white", linewidths=1.6)
        ax.contour(m["gt"] > 0, levels=[0.5], colors="black", linewidths=1.0,
                   linestyles="dashed")
    ax.set_xticks([])
    ax.set_yticks([])


def _image_grid(nrows: int, ncols: int, left_in: float, top_in: float,
                row_gap_in: float = 0.12) -> tuple[Figure, np.ndarray, float]:
    """Square image panels sized so the grid fits the paper width with room for labels and a
    colour bar; layout in inches so it does not depend on the number of panels."""
    right_in, gap, bottom_in = 1.0, 0.06, 0.1
    p = min(1.25, (PAPER_WIDTH_IN - left_in - right_in - gap * (ncols - 1)) / ncols)
    width = left_in + right_in + ncols * p + gap * (ncols - 1)
    height = top_in + bottom_in + nrows * p + row_gap_in * (nrows - 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=left_in / width, right=1 - right_in / width, top=1 - top_in / height,
                        bottom=bottom_in / height, wspace=gap / p, hspace=row_gap_in / p)
    for ax in axes.flat:
        for sp in ax.spines.values():
            sp.set_visible(False)
    return fig, axes, p


def _colorbar(fig: Figure, axes) -> None:
    """A colour bar in its own axes right of the grid (the grid keeps its size)."""
    boxes = [ax.get_position() for ax in np.ravel(axes)]
    x1 = max(b.x1 for b in boxes)
    y0, y1 = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    w = fig.get_figwidth()
    cax = fig.add_axes((x1 + 0.12 / w, y0, 0.1 / w, y1 - y0))
    sm = plt.cm.ScalarMappable(norm=Normalize(0, 1), cmap=HEAT_CMAP)
    cb = fig.colorbar(sm, cax=cax)
    cb.set_label("heatmap (min-max scaled per image)")


def _row_label(ax, text: str, width: int = 22) -> None:
    ax.text(-0.05, 0.5, textwrap.fill(text, width), transform=ax.transAxes, ha="right",
            va="center", fontsize=6)


def _run_label(run: Run) -> str:
    label = METHOD_LABELS.get(run.info.get("method"), str(run.info.get("method")))
    if run.tag:
        label += f" [{run.tag}]"
    if run.info.get("prompt"):
        label += f"\n{run.info['prompt']}"
    return label


def draw_fig4(view: StoreView, max_images: int = 3, max_columns: int = 8) -> Drawn:
    """Rows: the same MS-CXR images; columns: method x prompt (simple, precise), AFLoc first."""
    runs = _runs_with_maps(view, "ms-cxr")
    runs = sorted(runs, key=lambda r: r.info.get("method") != "afloc")[:max_columns]
    if not runs:
        raise BenchError("fig4: no stored heatmaps for MS-CXR; run e.g. `bench run --methods "
                         "afloc --datasets ms-cxr --prompt precise --keep-maps 8` (and "
                         "--prompt simple)")
    # one finding = one (image, GT) pair; its query_id is the same for every method and prompt
    per_run = {r.run_id: {m.key: m for m in stored_maps(r)} for r in runs}
    order: list[str] = []
    for r in runs:
        order += [s for s in per_run[r.run_id] if s not in order]
    coverage = {s: sum(s in per_run[r.run_id] for r in runs) for s in order}
    ranked = sorted(order, key=lambda s: (-coverage[s], order.index(s)))
    image_of = {m.key: m.sample_id for r in runs for m in per_run[r.run_id].values()}
    samples: list[str] = []
    for s in ranked:  # different images first, then more findings of the same ones
        if len(samples) < max_images and image_of[s] not in {image_of[x] for x in samples}:
            samples.append(s)
    samples += [s for s in ranked if s not in samples][:max_images - len(samples)]
    fig, axes, _ = _image_grid(len(samples), len(runs), left_in=1.3, top_in=0.85)
    n = 0
    for i, s in enumerate(samples):
        with_s = [r for r in runs if s in per_run[r.run_id]]
        precise = next((per_run[r.run_id][s].query for r in with_s
                        if r.info.get("prompt") == "precise"), per_run[with_s[0].run_id][s].query)
        pathology = next(per_run[r.run_id][s].pathology for r in runs if s in per_run[r.run_id])
        for j, r in enumerate(runs):
            ax = axes[i][j]
            sm = per_run[r.run_id].get(s)
            if sm is None:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "no stored map", ha="center", va="center",
                        transform=ax.transAxes, color="#555555")
                continue
            overlay(ax, sm.load())
            n += 1
            if i == 0:
                ax.set_title(_run_label(r), color=SYNTH_COLOR if r.synthetic else "black")
        _row_label(axes[i][0], f"{pathology}: {precise}")
    synth = sorted({r.dataset for r in runs if r.synthetic})
    fig.suptitle(_suptitle("Fig. 4", "MS-CXR" + (f" ({', '.join(synth)})" if synth else ""),
                           synth) + "\nGT boxes dashed", fontsize=7.5)
    _colorbar(fig, axes)
    return Drawn(fig, runs, synth, n_panels=n)


def _prefer_afloc(runs: list[Run]) -> Run | None:
    for r in runs:
        if r.info.get("method") == "afloc" and not r.tag:
            return r
    return runs[0] if runs else None


def draw_fig5(view: StoreView, max_images: int = 2, max_pathologies: int = 4) -> Drawn:
    """(a) several pathologies on one ChestX-Det10 image; (b) fundus lesions."""
    det = _prefer_afloc(_runs_with_maps(view, "chestx-det10"))
    fundus = _prefer_afloc(_runs_with_maps(view, "paired-folder"))
    rows: list[tuple[str, Run, list[StoredMap]]] = []
    if det is not None:
        by_sample: dict[str, list[StoredMap]] = {}
        for m in stored_maps(det):
            lst = by_sample.setdefault(m.sample_id, [])
            if all(x.pathology != m.pathology for x in lst):
                lst.append(m)
        multi = sorted(by_sample.items(), key=lambda kv: -len(kv[1]))[:max_images]
        rows += [("a", det, maps[:max_pathologies]) for _, maps in multi]
    if fundus is not None:
        seen: dict[str, StoredMap] = {}
        for m in stored_maps(fundus):
            seen.setdefault(m.pathology, m)
        rows.append(("b", fundus, list(seen.values())[:max_pathologies]))
    if not rows:
        raise BenchError("fig5: no stored heatmaps for ChestX-Det10 or fundus; run e.g. `bench "
                         "run --methods afloc --datasets chestx-det10 --keep-maps 8`")
    ncols = max(len(maps) for _, _, maps in rows)
    fig, axes, _ = _image_grid(len(rows), ncols, left_in=1.4, top_in=0.65, row_gap_in=0.45)
    n = 0
    synth: set[str] = set()
    labelled: set[str] = set()
    for i, (letter, run, maps) in enumerate(rows):
        if run.synthetic:
            synth.add(run.dataset)
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(maps):
                ax.set_axis_off()
                continue
            overlay(ax, maps[j].load())
            n += 1
            ax.set_title(textwrap.fill(maps[j].pathology, 18), fontsize=6.5)
        name = "ChestX-Det10" if letter == "a" else "Retinal fundus"
        ds = f"\n({run.dataset})" if run.synthetic else ""
        head = f"{letter}. {name}{ds}" if letter not in labelled else ""
        labelled.add(letter)
        sample = f"\n{maps[0].sample_id}" if letter == "a" and maps else ""
        axes[i][0].text(-0.05, 0.5, head + sample, transform=axes[i][0].transAxes, ha="right",
                        va="center", fontsize=6.5,
                        color=SYNTH_COLOR if run.synthetic and head else "black")
    method = METHOD_LABELS.get(rows[0][1].info.get("method"), rows[0][1].info.get("method"))
    fig.suptitle(_suptitle("Fig. 5", f"{method} heatmaps, GT dashed", synth), fontsize=7.5)
    _colorbar(fig, axes)
    used = [r for r in (det, fundus) if r is not None]
    return Drawn(fig, used, sorted(synth), n_panels=n)


__all__ = ["draw", "make_figure", "save", "stored_maps", "normalized"]
