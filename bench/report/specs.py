"""The paper's tables and figures as small declarative specs.

A table is a grid of cells. Every cell is one lookup in the results store, described by a
`Sel` (method, tag, dataset, prompt, protocol, task, split, metric, category, threshold). The
table, its section (e.g. the IoU / Dice / CNR blocks), its row and its column each carry a
partial `Sel`; a cell's query is their merge (later ones win), so a transposed table (Table 1:
rows are prompts, columns are methods) needs no code of its own.

Row, column and section ids are the keys of the paper's published values
(`bench/data/paper/afloc_paper_values.json`).

Method and dataset names are the registry names used by `bench run`; the run commands in the
footnotes of missing cells are built from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from bench.methods.catalog import CATALOG

# Display names of methods (registry names -> names), from the one method table.
METHOD_LABELS = {name: info.display for name, info in CATALOG.items()}

# Display names of datasets (registry names). The fundus set is a `paired-folder` dataset.
DATASET_LABELS = {
    "rsna": "RSNA Pneumonia",
    "siim": "SIIM",
    "ms-cxr": "MS-CXR",
    "covid-rural": "COVID Rural",
    "chexlocalize": "CheXlocalize",
    "chestx-det10": "ChestX-Det10",
    "paired-folder": "Retinal fundus",
}

# Synthetic twin of each real dataset (`synthetic-<name>`; the fundus twin is `synthetic-fundus`).
SYNTHETIC_TWIN = {name: f"synthetic-{name}" for name in DATASET_LABELS}
SYNTHETIC_TWIN["paired-folder"] = "synthetic-fundus"


@dataclass(frozen=True)
class Sel:
    """A partial query into the results store; `None` means "any"."""

    method: str | None = None
    tags: tuple[str | None, ...] | None = None  # accepted run.json method_tag values
    dataset: str | None = None                   # real registry name; its synthetic twin also fills
    prompt: str | None = None
    protocol: str | None = None
    task: str | None = None
    split: str | None = None
    metric: str | None = None
    category: tuple[str, ...] | None = None      # accepted per_category keys (aliases)
    threshold: float | None = None

    def merge(self, other: Sel) -> Sel:
        """`self` overridden by the fields `other` sets."""
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(other)
                                if getattr(other, f.name) is not None})


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    sel: Sel = Sel()
    paper_only: bool = False         # not measurable by this harness (e.g. fine-tuned RETFound)
    attrs: dict[str, str] = field(default_factory=dict, hash=False)
    reference: bool = False          # a reference row (random / center / oracle): not the paper's
    harness: bool = False            # the harness's own configuration: not the paper's, no value


@dataclass(frozen=True)
class Column:
    id: str
    label: str
    sel: Sel = Sel()
    derived: str | None = None       # "row-mean": mean of the row's measured cells (no CI)
    attr: str | None = None          # a static column filled from Row.attrs


@dataclass(frozen=True)
class Section:
    id: str
    label: str | None
    sel: Sel = Sel()


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str                        # one line, for `bench list tables`
    source: str                       # the paper's table this reproduces
    caption: str
    base: Sel
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    sections: tuple[Section, ...] = (Section("all", None),)
    row_header: str = "Method"
    digits: int = 3
    notes: tuple[str, ...] = ()

    def query(self, section: Section, row: Row, column: Column) -> Sel:
        return self.base.merge(section.sel).merge(row.sel).merge(column.sel)


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    source: str


# ---------------------------------------------------------------------------------------------
# building blocks

def method_row(name: str, label: str | None = None, **kw) -> Row:
    return Row(name, label or METHOD_LABELS[name], Sel(method=name), **kw)


def method_col(name: str) -> Column:
    return Column(name, METHOD_LABELS[name], Sel(method=name))


def dataset_col(name: str, label: str | None = None, **sel) -> Column:
    return Column(name, label or DATASET_LABELS[name], Sel(dataset=name, **sel))


def category_col(cid: str, label: str, *aliases: str) -> Column:
    return Column(cid, label, Sel(category=(label, *aliases)))


# Reference rows, under the paper's rows of every method-row table: what no information
# (`random`: noise maps, constant scores; `center`: a fixed centred prior) and perfect (`oracle`:
# the ground truth as the map / the labels as scores) score under the table's protocol. They
# have no published values.
REFERENCE_LABELS = {"random": "Random (reference)", "center": "Centre prior (reference)",
                    "oracle": "Oracle (reference)"}
REFERENCE_NOTE = ("Reference rows: not in the paper; what no information (random, a fixed centre "
                  "prior) and perfect (oracle) score under the same protocol.")


def reference_rows(oracle: bool = True, **sel) -> tuple[Row, ...]:
    """`random`, `center` and (`oracle`) rows, marked as references. The oracle is left out
    where it says nothing: its labels-as-scores AUROC is 1 by construction."""
    names = ("random", "center") + (("oracle",) if oracle else ())
    return tuple(Row(n, REFERENCE_LABELS[n], Sel(method=n, **sel), reference=True)
                 for n in names)


def not_applicable(sel: Sel) -> str | None:
    """Why the cell `sel` cannot be measured by its method (a capability it lacks, e.g. the
    centre prior has no classification scores), or None. Such a cell stays empty, with no
    command to fill it."""
    info = CATALOG.get(sel.method or "")
    if info is None or info.module is None:
        return None
    caps = info.capabilities
    if sel.task == "classification" and "classify" not in caps:
        return f"{info.display} has no classification scores"
    if sel.task == "localization" and "localize" not in caps:
        return f"{info.display} makes no maps"
    if sel.task == "localization" and sel.prompt == "precise" and "free-text" not in caps:
        return f"{info.display} takes no free-text queries"
    return None


METRIC_SECTIONS = (
    Section("iou", "IoU", Sel(metric="iou")),
    Section("dice", "Dice", Sel(metric="dice")),
    Section("cnr", "CNR", Sel(metric="cnr")),
)

AFLOC_TAGS = (None, "levels=word+sentence+report")
LOC = Sel(protocol="afloc", task="localization")

MS_CXR_PATHOLOGIES = (
    category_col("pneumonia", "Pneumonia"),
    category_col("atelectasis", "Atelectasis"),
    category_col("consolidation", "Consolidation"),
    category_col("pneumothorax", "Pneumothorax"),
    category_col("pleural-effusion", "Pleural Effusion", "Effusion"),
    category_col("lung-opacity", "Lung Opacity", "Airspace Opacity"),
    category_col("cardiomegaly", "Cardiomegaly"),
    category_col("edema", "Edema"),
)

CHEXLOCALIZE_PATHOLOGIES = (
    category_col("airspace-opacity", "Airspace opacity", "Lung Opacity"),
    category_col("atelectasis", "Atelectasis"),
    category_col("edema", "Edema"),
    category_col("consolidation", "Consolidation"),
    category_col("pleural-effusion", "Pleural effusion"),
    category_col("cardiomegaly", "Cardiomegaly"),
    category_col("enlarged-cardiomediastinum", "Enlarged cardio", "Enlarged Cardiomediastinum"),
    category_col("lung-lesion", "Lung lesion"),
    category_col("pneumothorax", "Pneumothorax"),
    category_col("support-devices", "Support devices"),
)

FUNDUS_DISEASES = (
    category_col("md", "MD", "Macular Degeneration"),
    category_col("retinopathy", "Retinopathy"),
    category_col("myopia", "Myopia"),
    category_col("glaucoma", "Glaucoma"),
    category_col("coda", "CODA", "Congenital Optic Disc Anomalies"),
    category_col("ras", "RAS", "Retinal Arteriosclerosis"),
    category_col("cataract", "Cataract"),
    category_col("mem", "MEM", "Macular Epiretinal Membrane"),
    category_col("ml", "ML", "Macular Lesion"),
)

FUNDUS_LESIONS = (
    category_col("cnv", "Choroidal neovascularization", "CNV"),
    category_col("drusen", "Drusen"),
    category_col("hemorrhage", "Intraretinal hemorrhage", "Retinal hemorrhage", "Hemorrhage"),
)

LEVELS = ("word", "sentence", "report")


def _level_row(levels: tuple[str, ...]) -> Row:
    tag = "levels=" + "+".join(levels)
    tags: tuple[str | None, ...] = (tag,) if len(levels) < 3 else (tag, None)
    marks = {f"level-{lv}": ("✓" if lv in levels else "") for lv in LEVELS}
    return Row("+".join(levels), " + ".join(levels), Sel(method="afloc", tags=tags), attrs=marks)


TABLE_LIST = (
    # Table 1 and Extended Data Table 6 get no reference rows: their rows are prompt sets and
    # thresholds, not methods; random and centre maps ignore the query (both prompt rows would
    # be equal) and the oracle reads the ground truth, so they say nothing about either axis.
    TableSpec(
        name="table-1",
        title="MS-CXR localization with simple vs precise descriptions (IoU, Dice, CNR)",
        source="Table 1",
        caption="Quantitative results of different models on the MS-CXR dataset evaluated "
                "under two different descriptive scenarios. Numbers within parentheses "
                "indicate 95% CI.",
        base=LOC.merge(Sel(dataset="ms-cxr", tags=AFLOC_TAGS)),
        sections=METRIC_SECTIONS,
        rows=(Row("simple", "Simple description", Sel(prompt="simple")),
              Row("precise", "Precise description", Sel(prompt="precise"))),
        columns=tuple(method_col(m) for m in ("biovil", "gloria", "afloc")),
        row_header="Description",
    ),
    TableSpec(
        name="table-2",
        title="Zero-shot classification AUROC on RSNA Pneumonia and SIIM",
        source="Table 2",
        caption="Comparison of AUROC on RSNA and SIIM datasets for the zero-shot "
                "classification task.",
        base=Sel(task="classification", metric="auroc", tags=AFLOC_TAGS),
        rows=tuple(method_row(m) for m in ("recontrast", "rdpp", "convirt", "gloria", "biovil",
                                            "chexzero", "medklip", "afloc"))
        # no oracle row: its labels-as-scores AUROC is 1 by construction
        + reference_rows(oracle=False),
        columns=(dataset_col("rsna"), dataset_col("siim")),
    ),
    TableSpec(
        name="table-3",
        title="Zero-shot classification AUROC on retinal fundus (nine diseases and mean)",
        source="Table 3",
        caption="Comparison of AUROC on retinal fundus datasets for the zero-shot "
                "classification task. RETFound utilizes human-annotated classification labels "
                "during fine-tuning.",
        base=Sel(task="classification", metric="auroc", dataset="paired-folder", tags=AFLOC_TAGS),
        rows=tuple(method_row(m, attrs={"label-free": "✓"})
                   for m in ("recontrast", "rdpp", "convirt", "gloria", "afloc"))
        + (method_row("retfound", paper_only=True, attrs={"label-free": "✗"}),)
        + reference_rows(oracle=False),  # no oracle: AUROC 1 by construction
        columns=(Column("label-free", "Label free", attr="label-free"),) + FUNDUS_DISEASES
        + (Column("mean", "Mean"),),
        notes=("RETFound is fine-tuned with labels; its row is the paper's value only.",),
    ),
    TableSpec(
        name="extended-1",
        title="Localization on RSNA Pneumonia, COVID Rural and MS-CXR (IoU, Dice, CNR)",
        source="Extended Data Table 1",
        caption="Quantitative pathology localization results of different models on the 3 "
                "chest x-ray datasets: RSNA Pneumonia, COVID Rural, MS-CXR. Numbers within "
                "parentheses indicate 95% CI. MS-CXR uses the precise descriptions.",
        base=LOC.merge(Sel(tags=AFLOC_TAGS)),
        sections=METRIC_SECTIONS,
        rows=tuple(method_row(m) for m in ("recontrast", "rdpp", "gloria", "biovil", "medklip",
                                            "afloc")) + reference_rows(),
        columns=(dataset_col("rsna", split="test"), dataset_col("covid-rural"),
                 dataset_col("ms-cxr", prompt="precise")),
    ),
    TableSpec(
        name="extended-2",
        title="MS-CXR IoU per pathology",
        source="Extended Data Table 2",
        caption="Quantitative results (IoU) of different models for different pathologies on "
                "the MS-CXR dataset. Numbers within parentheses indicate 95% CI.",
        base=LOC.merge(Sel(dataset="ms-cxr", prompt="precise", metric="iou", tags=AFLOC_TAGS)),
        rows=tuple(method_row(m) for m in ("recontrast", "rdpp", "gloria", "biovil", "medklip",
                                            "afloc")) + reference_rows(),
        columns=MS_CXR_PATHOLOGIES,
    ),
    TableSpec(
        name="extended-3",
        title="Ablation of alignment levels (word / sentence / report), IoU",
        source="Extended Data Table 3",
        caption="Quantitative results (IoU) from the ablation study to investigate the "
                "importance of aligning image features with text features at different levels "
                "(word - shallow local, sentence - deep local, report - global). Mean is the "
                "mean of the four datasets' values.",
        base=LOC.merge(Sel(metric="iou")),
        rows=tuple(_level_row(lv) for lv in (("word",), ("sentence",), ("report",),
                                            ("word", "sentence"), ("word", "report"),
                                            ("sentence", "report"),
                                            ("word", "sentence", "report")))
        + reference_rows(),
        columns=(Column("level-word", "Word – Shallow local", attr="level-word"),
                 Column("level-sentence", "Sentence – Deep local", attr="level-sentence"),
                 Column("level-report", "Report – Global", attr="level-report"),
                 dataset_col("rsna", split="test"), dataset_col("covid-rural"),
                 dataset_col("ms-cxr", prompt="precise"), dataset_col("chexlocalize",
                                                                      split="test"),
                 Column("mean", "Mean", derived="row-mean")),
        row_header="Levels",
    ),
    TableSpec(
        name="extended-4",
        title="Retinal fundus localization per lesion (IoU, Dice, CNR)",
        source="Extended Data Table 4",
        caption="Quantitative results of different models on the retinal fundus dataset. "
                "Numbers within parentheses indicate 95% CI.",
        base=LOC.merge(Sel(dataset="paired-folder", tags=AFLOC_TAGS)),
        sections=METRIC_SECTIONS,
        rows=tuple(method_row(m) for m in ("recontrast", "rdpp", "convirt", "gloria", "afloc"))
        + reference_rows(),
        columns=FUNDUS_LESIONS + (Column("mean", "Mean"),),
    ),
    TableSpec(
        name="extended-5",
        title="CheXlocalize IoU per pathology, with the human benchmark",
        source="Extended Data Table 5",
        caption="Quantitative results (IoU) of different models for different pathologies on "
                "the CheXlocalize dataset. *Results obtained from CheXlocalize [14] "
                "(protocol chexlocalize); AFLoc under protocol afloc.",
        base=Sel(dataset="chexlocalize", split="test", task="localization", metric="iou",
                 tags=AFLOC_TAGS),
        rows=(Row("gradcam", "Grad-CAM*", Sel(method="gradcam", protocol="chexlocalize")),
              Row("gradcampp", "Grad-CAM++*", Sel(method="gradcampp", protocol="chexlocalize")),
              Row("eigencam", "Eigen-CAM*", Sel(method="eigencam", protocol="chexlocalize")),
              Row("afloc", "AFLoc", Sel(method="afloc", protocol="afloc")),
              Row("human", "Human benchmark*", Sel(method="human", protocol="chexlocalize")))
        # the reference rows under AFLoc's protocol, the one this harness's own row uses
        + reference_rows(protocol="afloc"),
        columns=CHEXLOCALIZE_PATHOLOGIES,
    ),
    TableSpec(
        name="extended-6",
        title="AFLoc IoU per threshold and pathology on MS-CXR",
        source="Extended Data Table 6",
        caption="Quantitative results (IoU) of the proposed AFLoc model at different thresholds "
                "for eight pathologies in the MS-CXR dataset. Numbers within parentheses "
                "indicate 95% CI.",
        base=LOC.merge(Sel(method="afloc", tags=AFLOC_TAGS, dataset="ms-cxr", prompt="precise",
                           metric="iou")),
        rows=tuple(Row(f"{t:.1f}", f"{t:.1f}", Sel(threshold=t))
                   for t in (0.1, 0.2, 0.3, 0.4, 0.5)),
        columns=MS_CXR_PATHOLOGIES,
        row_header="Threshold",
    ),
    TableSpec(
        name="extended-7",
        title="Text encoders (AFLoc on MS-CXR: IoU, Dice, CNR)",
        source="Extended Data Table 7",
        caption="Quantitative results from replacing different text encoders in the MS-CXR "
                "dataset to investigate their impact on localization outcomes.",
        base=LOC.merge(Sel(method="afloc", dataset="ms-cxr", prompt="precise")),
        rows=(Row("llava-med", "llava-med-v1.5-mistral-7b",
                  Sel(tags=("text=llava-med", "text=llava-med-v1.5-mistral-7b"))),
              Row("bio-clinicalbert", "BioClinicalBERT (default; tiny preset: BERT 4x64 from "
                  "scratch)", Sel(tags=AFLOC_TAGS)),
              Row("second-text", "Harness: BERT 8x64 from scratch (tiny) / local folder "
                  "(paper)", Sel(tags=("text=bert-8x64", "text=local")), harness=True))
        + reference_rows(),
        columns=(Column("iou", "IoU", Sel(metric="iou")),
                 Column("dice", "Dice", Sel(metric="dice")),
                 Column("cnr", "CNR", Sel(metric="cnr"))),
        row_header="Text encoder",
        notes=("llava-med: the paper's published value only. LLaVA-Med's text side is a 7B "
               "Mistral language model, not a BERT-family encoder: AFLoc's word units need "
               "WordPiece pieces ('##') between [CLS] and [SEP], so --text-encoder takes bert, "
               "distilbert and electra folders and refuses the rest.",
               "BioClinicalBERT: the default AFLoc runs; the tiny preset's default text encoder "
               "is a 4-layer, 64-wide BERT trained from scratch, not BioClinicalBERT.",
               "Harness row (not in the paper; no published value): AFLoc with a second text "
               "encoder, run tag text=bert-8x64 (the tiny preset's BERT at 8 layers of width "
               "64, from scratch: --text-layers 8) or text=local (a local "
               "BERT-family folder: --text-encoder DIR; README, Text encoders)."),
    ),
)

TABLES: dict[str, TableSpec] = {t.name: t for t in TABLE_LIST}

FIGURE_LIST = (
    FigureSpec("fig2", "IoU, Dice and CNR with 95% CI per method on each localization dataset",
               "Fig. 2"),
    FigureSpec("fig3", "Per-pathology IoU with 95% CI: MS-CXR (a), CheXlocalize with the human "
               "benchmark (b)", "Fig. 3"),
    FigureSpec("fig4", "Heatmap overlays of the same MS-CXR images per method, simple vs "
               "precise prompts", "Fig. 4"),
    FigureSpec("fig5", "Several pathologies on one image (ChestX-Det10) and fundus lesions",
               "Fig. 5"),
)

FIGURES: dict[str, FigureSpec] = {f.name: f for f in FIGURE_LIST}


def paper_tables(method: str) -> list[str]:
    """The paper's tables (their `source`) with a row or column for `method`."""
    out = []
    for t in TABLE_LIST:
        names = {r.sel.method for r in t.rows if not r.reference} | {
            c.sel.method for c in t.columns} | {t.base.method}
        if method in names:
            out.append(t.source)
    return out
