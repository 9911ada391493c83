"""The paper's plan (`bench/data/paper_plan.toml`): load it, check it, resolve it into jobs.

The plan names training entries (a trainable method, its pretraining dataset, a variant with its
own `bench train` arguments and `bench run --tag`) and evaluation entries (methods, datasets,
split, task, protocol, prompt, and per method the training entry its checkpoint comes from).
`resolve(scale, data)` turns it into an ordered list of `Job`s, each one `bench` command line:
a training job per (training entry, seed), an evaluation job per (evaluation entry, seed) (one
per choice where an entry lists several checkpoints; once where it uses none), training before
the evaluations that read its checkpoint. With `data="synthetic"` every real dataset becomes
its synthetic twin.

Outputs live under one root: `train/<method>-<variant>-s<seed>/` per training job (done as
`training_state` says: finished by this command, or holding a checkpoint and nothing to
resume), `results/` for the first seed's evaluations and those without a trained model,
`results/seed-<n>/` for the other seeds (the same run ids made with another checkpoint cannot
share a folder). An evaluation job is done when the results folder holds a
complete run (run.json `status` "complete", with its summary.json) for every run its command
makes: same method, tag, dataset, split, task, protocol and prompt.

`coverage` checks the plan against the table specs: every measurable cell of every table must
be produced by an evaluation job that names the table in its `fills`, or be listed in the
plan's `pending` entries with the reason.
"""

from __future__ import annotations

import itertools
import json
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, UsageError

PLAN_PATH = Path(__file__).resolve().parents[1] / "data" / "paper_plan.toml"
DATA_KINDS = ("synthetic", "real")
TASKS = ("localization", "classification")
PROTOCOLS = ("afloc", "chexlocalize", "medklip-rsna")
PROMPTS = ("simple", "precise")
CHECKPOINT_FILE = "best.safetensors"
STATE_FILE = "last.pt"              # bench.train.loop.STATE_FILE (not imported: no torch here)
FINISHED_FILE = "reproduce-done.json"


class PlanError(BenchError):
    """A malformed plan file; the message names the file and the entry."""


# -- the plan ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    name: str
    description: str
    preset: str
    seeds: tuple[int, ...]
    data: str
    synthetic_args: tuple[str, ...] = ()
    train_args: tuple[str, ...] = ()
    eval_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainEntry:
    method: str
    dataset: str
    variant: str = "default"
    args: tuple[str, ...] = ()
    tag: str | None = None
    scales: tuple[str, ...] = ()  # the scales it belongs to (empty: every scale)

    @property
    def name(self) -> str:
        return f"{self.method}-{self.variant}"

    def at(self, scale: str) -> bool:
        return not self.scales or scale in self.scales


@dataclass(frozen=True)
class EvalEntry:
    name: str
    fills: tuple[str, ...]
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    task: str
    split: str | None = None
    protocol: str | None = None   # localization only
    prompt: str | None = None     # localization only
    keep_maps: int = 0
    checkpoints: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    scales: tuple[str, ...] = ()

    def at(self, scale: str) -> bool:
        return not self.scales or scale in self.scales


@dataclass(frozen=True)
class Pending:
    table: str
    reason: str
    rows: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    scales: tuple[str, ...] = ()

    def at(self, scale: str) -> bool:
        return not self.scales or scale in self.scales

    def covers(self, table: str, row: str, column: str) -> bool:
        return (table == self.table and (not self.rows or row in self.rows)
                and (not self.columns or column in self.columns))


@dataclass(frozen=True)
class Claim:
    """An ordering the paper states, as data: on every chosen cell of `table`, each cell `a`
    names is higher than each cell `b` names. A cell is "row" (taken in each of `columns`) or
    "row@column" (that one cell); `sections` (e.g. iou, dice, cnr) default to all."""

    id: str
    sentence: str        # the paper's words
    where: str           # where in the paper
    table: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    columns: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    path: Path
    scales: dict[str, Scale]
    train: dict[str, TrainEntry]
    evals: tuple[EvalEntry, ...]
    figure_tables: dict[str, tuple[str, ...]]
    pending: tuple[Pending, ...]
    claims: tuple[Claim, ...] = ()
    timings: dict[str, Any] = field(default_factory=dict, hash=False)  # scale -> Timings

    def targets(self) -> list[str]:
        """Names `--only` accepts: the tables and figures."""
        from bench.report.specs import FIGURES, TABLES

        return list(TABLES) + list(FIGURES)

    def expand(self, only: list[str]) -> set[str]:
        """`--only` names with Fig. 2 / 3 replaced by the tables they draw (kept as well)."""
        known = self.targets()
        out: set[str] = set()
        for name in only:
            if name not in known:
                raise UsageError(f"unknown table or figure '{name}'; known: {', '.join(known)}")
            out.add(name)
            out.update(self.figure_tables.get(name, ()))
        return out

    def pending_for(self, names: set[str] | None = None,
                    scale: str | None = None) -> list[Pending]:
        return [p for p in self.pending if (names is None or p.table in names)
                and (scale is None or p.at(scale))]


def load_plan(path: str | Path | None = None) -> Plan:
    """Read and validate a plan file (default: the package's); errors are one line that names
    the file and the entry."""
    path = Path(path) if path is not None else PLAN_PATH
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the plan ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: not valid TOML ({exc})") from exc
    return _Validator(path).plan(raw)


class _Validator:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, msg: str) -> PlanError:
        return PlanError(f"{self.path}: {where}: {msg}")

    def keys(self, where: str, d: Any, required: set[str], optional: set[str]) -> dict:
        if not isinstance(d, dict):
            raise self.fail(where, "expected a table")
        missing = sorted(required - set(d))
        if missing:
            raise self.fail(where, f"missing {', '.join(missing)}")
        unknown = sorted(set(d) - required - optional)
        if unknown:
            raise self.fail(where, f"unknown key {', '.join(unknown)} (known: "
                            f"{', '.join(sorted(required | optional))})")
        return d

    def string(self, where: str, d: dict, key: str, default: Any = None,
               choices: tuple[str, ...] | None = None) -> Any:
        v = d.get(key, default)
        if v is default and key not in d:
            return v
        if not isinstance(v, str) or not v:
            raise self.fail(where, f"{key} must be a non-empty string")
        if choices is not None and v not in choices:
            raise self.fail(where, f"{key} '{v}' is not one of {', '.join(choices)}")
        return v

    def strings(self, where: str, d: dict, key: str, required: bool = False) -> tuple[str, ...]:
        v = d.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.fail(where, f"{key} must be a list of strings")
        if required and not v:
            raise self.fail(where, f"{key} must not be empty")
        return tuple(v)

    # -- sections -----------------------------------------------------------------------------
    def plan(self, raw: dict) -> Plan:
        self.keys("top level", raw, {"version", "scales", "train", "eval"},
                  {"figure_tables", "pending", "claim", "timings"})
        if raw["version"] != 1:
            raise self.fail("top level", f"version {raw['version']!r} is not supported (1)")
        if not isinstance(raw["scales"], dict) or not raw["scales"]:
            raise self.fail("[scales]", "expected at least one scale")
        scales = {n: self.scale(n, s) for n, s in raw["scales"].items()}
        self.scale_names = tuple(scales)
        train: dict[str, TrainEntry] = {}
        for i, t in enumerate(self.array(raw, "train")):
            entry = self.train(i, t)
            if entry.name in train:
                raise self.fail(f"[[train]] '{entry.name}'", "defined twice (method and "
                                "variant must be unique)")
            train[entry.name] = entry
        evals: list[EvalEntry] = []
        for i, e in enumerate(self.array(raw, "eval")):
            entry = self.eval(i, e, train)
            if any(x.name == entry.name for x in evals):
                raise self.fail(f"[[eval]] '{entry.name}'", "defined twice")
            evals.append(entry)
        figure_tables = self.figure_tables(raw.get("figure_tables", {}))
        pending = tuple(self.pending(i, p) for i, p in enumerate(self.array(raw, "pending")))
        claims = tuple(self.claim(i, c) for i, c in enumerate(self.array(raw, "claim")))
        if len({c.id for c in claims}) != len(claims):
            raise self.fail("[[claim]]", "two claims share an id")
        from bench.reproduce.estimate import parse_timings

        raw_t = raw.get("timings", {})
        if not isinstance(raw_t, dict):
            raise self.fail("[timings]", "expected a table of scales")
        timings = {}
        for name, t in raw_t.items():
            if name not in scales:
                raise self.fail(f"[timings.{name}]", f"'{name}' is not a scale of the plan")
            timings[name] = parse_timings(f"[timings.{name}]", t, self.fail)
        return Plan(self.path, scales, train, tuple(evals), figure_tables, pending, claims,
                    timings)

    def array(self, raw: dict, key: str) -> list:
        v = raw.get(key, [])
        if not isinstance(v, list):
            raise self.fail(f"[[{key}]]", "expected an array of tables")
        return v

    def scale(self, name: str, s: Any) -> Scale:
        where = f"[scales.{name}]"
        self.keys(where, s, {"preset", "seeds", "data"},
                  {"description", "synthetic_args", "train_args", "eval_args"})
        seeds = s["seeds"]
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                           for x in seeds) or len(set(seeds)) != len(seeds)):
            raise self.fail(where, "seeds must be a non-empty list of distinct integers >= 0")
        return Scale(name, self.string(where, s, "description", ""),
                     self.string(where, s, "preset"), tuple(seeds),
                     self.string(where, s, "data", choices=DATA_KINDS),
                     self.strings(where, s, "synthetic_args"), self.strings(where, s, "train_args"),
                     self.strings(where, s, "eval_args"))

    def train(self, i: int, t: Any) -> TrainEntry:
        from bench.methods.catalog import CATALOG

        label = t.get("method", f"#{i + 1}") if isinstance(t, dict) else f"#{i + 1}"
        where = f"[[train]] '{label}'"
        self.keys(where, t, {"method", "dataset"}, {"variant", "args", "tag", "scales"})
        method = self.string(where, t, "method")
        info = CATALOG.get(method)
        if info is None or "trainable" not in info.capabilities:
            trainable = [n for n, m in CATALOG.items() if "trainable" in m.capabilities]
            raise self.fail(where, f"'{method}' is not a trainable method (trainable: "
                            f"{', '.join(trainable)})")
        entry = TrainEntry(method, self.string(where, t, "dataset"),
                           self.string(where, t, "variant", "default"),
                           self.strings(where, t, "args"), self.string(where, t, "tag"),
                           self.scales(where, t))
        self.dataset(f"[[train]] '{entry.name}'", entry.dataset)
        return entry

    def scales(self, where: str, d: dict) -> tuple[str, ...]:
        names = self.strings(where, d, "scales")
        if "scales" in d and not names:
            raise self.fail(where, "scales must not be empty (leave it out for every scale)")
        for n in names:
            if n not in self.scale_names:
                raise self.fail(where, f"scales names '{n}', not a scale of the plan "
                                f"({', '.join(self.scale_names)})")
        return names

    def dataset(self, where: str, name: str) -> None:
        from bench.registry import DATASETS

        known = set(DATASETS.names())
        if name not in known:
            raise self.fail(where, f"unknown dataset '{name}'")
        if synthetic_twin(name) not in known:
            raise self.fail(where, f"dataset '{name}' has no synthetic twin "
                            f"'{synthetic_twin(name)}'")

    def eval(self, i: int, e: Any, train: dict[str, TrainEntry]) -> EvalEntry:
        from bench.methods.catalog import CATALOG, SALIENCY

        label = e.get("name", f"#{i + 1}") if isinstance(e, dict) else f"#{i + 1}"
        where = f"[[eval]] '{label}'"
        self.keys(where, e, {"name", "fills", "methods", "datasets", "task"},
                  {"split", "protocol", "prompt", "keep_maps", "checkpoints", "scales"})
        task = self.string(where, e, "task", choices=TASKS)
        loc = task == "localization"
        if not loc and ("protocol" in e or "prompt" in e):
            raise self.fail(where, "protocol and prompt are for localization only")
        keep = e.get("keep_maps", 0)
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            raise self.fail(where, "keep_maps must be an integer >= 0")
        methods = self.strings(where, e, "methods", required=True)
        for m in methods:
            if m not in CATALOG or CATALOG[m].module is None:
                raise self.fail(where, f"unknown method '{m}' (no adapter in the catalog)")
        datasets = self.strings(where, e, "datasets", required=True)
        for d in datasets:
            self.dataset(where, d)
        fills = self.strings(where, e, "fills", required=True)
        from bench.report.specs import FIGURES, TABLES

        for f in fills:
            if f not in TABLES and f not in FIGURES:
                raise self.fail(where, f"fills names '{f}', not a table or figure")
        ckpts = e.get("checkpoints", {})
        if not isinstance(ckpts, dict):
            raise self.fail(where, "checkpoints must be a table: method = training entry(s)")
        checkpoints: dict[str, tuple[str, ...]] = {}
        for m, names in ckpts.items():
            if m not in methods:
                raise self.fail(where, f"checkpoints names '{m}', not one of its methods")
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not names or not all(
                    isinstance(n, str) for n in names):
                raise self.fail(where, f"checkpoints.{m} must be a training entry name or a "
                                "list of them")
            for n in names:
                t = train.get(n)
                if t is None:
                    raise self.fail(where, f"checkpoints.{m} names '{n}', not a [[train]] entry "
                                    f"(known: {', '.join(train)})")
                saliency = CATALOG[m].family == SALIENCY
                if t.method != m and not (saliency and t.method == "classifier"):
                    raise self.fail(where, f"checkpoints.{m} names '{n}', a {t.method} model")
            checkpoints[m] = tuple(names)
        for m in methods:
            info = CATALOG[m]
            if m not in checkpoints and ("trainable" in info.capabilities
                                         or info.family == SALIENCY):
                raise self.fail(where, f"method '{m}' needs a trained model: name its training "
                                "entry in checkpoints")
        entry = EvalEntry(self.string(where, e, "name"), fills, methods, datasets, task,
                          self.string(where, e, "split"),
                          self.string(where, e, "protocol", "afloc" if loc else None, PROTOCOLS),
                          self.string(where, e, "prompt", "simple" if loc else None, PROMPTS),
                          keep, checkpoints, self.scales(where, e))
        for n in {n for names in checkpoints.values() for n in names}:
            missing = [sc for sc in (entry.scales or self.scale_names) if not train[n].at(sc)]
            if missing:
                raise self.fail(where, f"its checkpoint '{n}' is not trained at scale "
                                f"{', '.join(missing)}")
        for choice in checkpoint_choices(entry):
            tags = {train[n].tag for n in choice.values()}
            if len(tags) > 1:
                raise self.fail(where, "its checkpoints carry different tags ("
                                + ", ".join(sorted(str(t) for t in tags)) + "); one bench run "
                                "has one --tag")
        return entry

    def figure_tables(self, d: Any) -> dict[str, tuple[str, ...]]:
        from bench.report.specs import FIGURES, TABLES

        if not isinstance(d, dict):
            raise self.fail("[figure_tables]", "expected a table: figure = [tables]")
        out = {}
        for fig in d:
            where = f"[figure_tables] '{fig}'"
            if fig not in FIGURES:
                raise self.fail(where, f"not a figure (known: {', '.join(FIGURES)})")
            out[fig] = self.strings(where, d, fig, required=True)
            for t in out[fig]:
                if t not in TABLES:
                    raise self.fail(where, f"'{t}' is not a table")
        return out

    def pending(self, i: int, p: Any) -> Pending:
        from bench.report.specs import TABLES

        label = p.get("table", f"#{i + 1}") if isinstance(p, dict) else f"#{i + 1}"
        where = f"[[pending]] '{label}'"
        self.keys(where, p, {"table", "reason"}, {"rows", "columns", "scales"})
        table = self.string(where, p, "table")
        spec = TABLES.get(table)
        if spec is None:
            raise self.fail(where, f"'{table}' is not a table (known: {', '.join(TABLES)})")
        rows, cols = self.strings(where, p, "rows"), self.strings(where, p, "columns")
        for r in rows:
            if r not in {x.id for x in spec.rows}:
                raise self.fail(where, f"'{r}' is not a row of {table}")
        for c in cols:
            if c not in {x.id for x in spec.columns}:
                raise self.fail(where, f"'{c}' is not a column of {table}")
        return Pending(table, self.string(where, p, "reason"), rows, cols, self.scales(where, p))


    def claim(self, i: int, c: Any) -> Claim:
        from bench.report.specs import TABLES

        label = c.get("id", f"#{i + 1}") if isinstance(c, dict) else f"#{i + 1}"
        where = f"[[claim]] '{label}'"
        self.keys(where, c, {"id", "sentence", "where", "table", "a", "b"},
                  {"columns", "sections"})
        table = self.string(where, c, "table")
        spec = TABLES.get(table)
        if spec is None:
            raise self.fail(where, f"'{table}' is not a table (known: {', '.join(TABLES)})")
        rows = {r.id for r in spec.rows}
        measured = {x.id for x in spec.columns if x.attr is None and x.derived is None}
        sections = {x.id for x in spec.sections}
        a, b = self.strings(where, c, "a", True), self.strings(where, c, "b", True)
        for ref in a + b:
            row, _, col = ref.partition("@")
            if row not in rows:
                raise self.fail(where, f"'{row}' is not a row of {table}")
            if col and col not in measured:
                raise self.fail(where, f"'{col}' is not a measured column of {table}")
        columns, secs = self.strings(where, c, "columns"), self.strings(where, c, "sections")
        for col in columns:
            if col not in measured:
                raise self.fail(where, f"'{col}' is not a measured column of {table}")
        for sec in secs:
            if sec not in sections:
                raise self.fail(where, f"'{sec}' is not a section of {table} "
                                f"({', '.join(sorted(sections))})")
        return Claim(self.string(where, c, "id"), self.string(where, c, "sentence"),
                     self.string(where, c, "where"), table, a, b, columns, secs)


def synthetic_twin(dataset: str) -> str:
    """The synthetic dataset that stands for `dataset` (itself when already synthetic)."""
    from bench.report.specs import SYNTHETIC_TWIN

    if dataset.startswith("synthetic-") or dataset == "shapes":
        return dataset
    twins = {**SYNTHETIC_TWIN, "mimic-cxr": "synthetic-mimic"}
    return twins.get(dataset, f"synthetic-{dataset}")


def checkpoint_choices(entry: EvalEntry) -> list[dict[str, str]]:
    """Method -> training entry, one dict per job of the entry (a list of checkpoints for a
    method makes one job per name)."""
    methods = [m for m in entry.methods if m in entry.checkpoints]
    combos = itertools.product(*(entry.checkpoints[m] for m in methods))
    return [dict(zip(methods, c)) for c in combos]


# -- jobs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    id: str
    kind: str                      # "train" | "eval"
    argv: tuple[str, ...]          # the bench command line, "bench" first
    out: Path                      # train: its folder; eval: its results folder
    deps: tuple[str, ...] = ()
    done: bool = False
    seed: int | None = None        # training seed (None: no trained model)
    fills: tuple[str, ...] = ()    # eval: the tables and figures its entry is for
    runs: tuple[dict[str, Any], ...] = ()  # eval: the run.json fields of every run it makes
    entry: str = ""

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


# what a resumed training may change (its length), and where it is (a moved --out folder)
EXTENDING = ("--epochs", "--max-steps", "--max-total-steps", "--out")


def _fixed_part(command: str) -> list[str]:
    """The command without the options a resumed training may change, nor its folder."""
    out, skip = [], False
    for tok in shlex.split(command):
        if skip:
            skip = False
        elif tok in EXTENDING:
            skip = True
        elif tok != "--resume":
            out.append(tok)
    return out


def training_state(folder: Path, command: str) -> str:
    """"done", "resume", "conflict" or "todo" for the training folder of `command`: done when
    the runner finished this same command there (its FINISHED_FILE), or when the folder holds
    a checkpoint and no training state (trained some other way); "resume" when it holds a
    training state (a run cut off, or one finished with another length: the loop continues
    after the last epoch it saved); "conflict" when the runner finished a command there that
    differs in more than its length (another seed, thread count, preset...): resuming would
    pass that model off as this command's."""
    marker = folder / FINISHED_FILE
    if marker.is_file():
        try:
            before = str(json.loads(marker.read_text(encoding="utf-8")).get("command"))
        except (OSError, ValueError):
            before = ""
        if before == command:
            return "done"
        if before and _fixed_part(before) != _fixed_part(command):
            return "conflict"
    if (folder / STATE_FILE).is_file():
        return "resume"
    if (folder / CHECKPOINT_FILE).is_file():
        return "done"
    return "todo"


def conflict_reason(folder: Path) -> str:
    """What a "conflict" training folder means, for the runner's failure and --dry-run."""
    return (f"{folder} holds a training the runner finished with another command "
            f"({FINISHED_FILE}); move it away or use another --out")


RUN_KEYS = ("method", "method_tag", "dataset", "split", "task", "protocol", "prompt")


def resolve(scale: str, data: str | None = None, only: list[str] | None = None,
            out: str | Path | None = None, plan: Plan | None = None,
            check_done: bool = True, seeds: list[int] | None = None,
            threads: int | None = None) -> list[Job]:
    """The plan's jobs at `scale` on `data` ("synthetic" | "real"; default: the scale's), in an
    order that runs every training job before the evaluations that need it; `only` keeps the
    evaluations for these tables / figures and the training they need. `out` is the root of
    every output (default `reproduce/<scale>-<data>`). `seeds`: some of the scale's seeds only
    (the folders stay those of the full plan: the scale's first seed writes to results/).
    `threads`: every training with `--threads N` (CPU training depends on the thread count:
    the kernels split their sums differently; give such a run its own `out`)."""
    plan = plan or load_plan()
    if scale not in plan.scales:
        raise UsageError(f"unknown scale '{scale}'; the plan has: {', '.join(plan.scales)}")
    sc = plan.scales[scale]
    data = data or sc.data
    if data not in DATA_KINDS:
        raise UsageError(f"unknown data kind '{data}' (synthetic or real)")
    root = Path(out) if out is not None else default_out(scale, data)
    targets = plan.expand(only) if only else None
    synthetic = data == "synthetic"

    stored: dict[Path, list[dict[str, Any]]] = {}  # results folder -> its complete runs, read once

    def ds(name: str) -> str:
        return synthetic_twin(name) if synthetic else name

    def dataset_args() -> list[str]:
        return [a for x in sc.synthetic_args for a in ("--dataset-arg", x)] if synthetic else []

    def train_job(t: TrainEntry, seed: int) -> Job:
        folder = root / "train" / f"{t.name}-s{seed}"
        argv = ("bench", "train", t.method, "--dataset", ds(t.dataset), *dataset_args(),
                "--preset", sc.preset, "--seed", str(seed), *t.args, *sc.train_args,
                *(("--threads", str(threads)) if threads else ()), "--out", str(folder),
                "--quiet")
        done = check_done and training_state(folder, shlex.join(argv)) == "done"
        return Job(f"train/{t.name}-s{seed}", "train", argv, folder, (), done, seed,
                   entry=t.name)

    def eval_job(e: EvalEntry, choice: dict[str, str], seed: int | None, label: str) -> Job:
        results = root / "results"
        if seed is not None and seed != sc.seeds[0]:
            results = results / f"seed-{seed}"
        datasets = [ds(d) for d in e.datasets]
        tags = {plan.train[n].tag for n in choice.values()}
        tag = next(iter(tags)) if tags else None
        argv = ["bench", "run", "--methods", ",".join(e.methods), "--datasets",
                ",".join(datasets)]
        if e.split:
            argv += ["--split", e.split]
        argv += ["--task", e.task]
        if e.task == "localization":
            argv += ["--protocol", str(e.protocol), "--prompt", str(e.prompt)]
        if tag:
            argv += ["--tag", tag]
        deps = []
        for m, n in choice.items():
            folder = root / "train" / f"{n}-s{seed}"
            argv += ["--method-arg", f"{m}.checkpoint={folder / CHECKPOINT_FILE}"]
            if f"train/{n}-s{seed}" not in deps:
                deps.append(f"train/{n}-s{seed}")
        argv += dataset_args()
        if e.keep_maps:
            argv += ["--keep-maps", str(e.keep_maps)]
        argv += [*sc.eval_args, "--results-dir", str(results), "--quiet"]
        runs = planned_runs(e, datasets, tag)
        if not runs:
            raise PlanError(f"{plan.path}: [[eval]] '{e.name}': bench run would make no run "
                            "(no method serves these datasets with this task and prompt)")
        if check_done and results not in stored:
            stored[results] = complete_runs(results)
        done = check_done and runs_done(results, runs, stored.get(results))
        suffix = f"-s{seed}" if seed is not None else ""
        return Job(f"eval/{e.name}{label}{suffix}", "eval", tuple(argv), results, tuple(deps),
                   done, seed, e.fills, tuple(runs), e.name)

    evals = [e for e in plan.evals if e.at(scale)
             and (targets is None or targets & set(e.fills))]
    jobs: list[Job] = []
    if seeds:
        unknown = [s for s in seeds if s not in sc.seeds]
        if unknown:
            raise UsageError(f"seed {unknown[0]} is not a seed of scale '{scale}' "
                             f"({', '.join(map(str, sc.seeds))})")
    for i, seed in enumerate(sc.seeds):
        if seeds and seed not in seeds:
            continue
        seeded: list[Job] = []
        for e in evals:
            choices = checkpoint_choices(e)
            if not e.checkpoints:
                if i == 0:
                    seeded.append(eval_job(e, {}, None, ""))
                continue
            many = len(choices) > 1
            for choice in choices:
                label = ("-" + "-".join(dict.fromkeys(plan.train[n].variant
                                                      for n in choice.values()))
                         if many else "")
                seeded.append(eval_job(e, choice, seed, label))
        needed = {d for j in seeded for d in j.deps}
        train = [train_job(t, seed) for t in plan.train.values() if t.at(scale)
                 and (targets is None or f"train/{t.name}-s{seed}" in needed)]
        jobs += train + [j for j in seeded if j.seed is not None] + [
            j for j in seeded if j.seed is None]
    return jobs


def default_out(scale: str, data: str, threads: int | None = None) -> Path:
    return Path("reproduce") / (f"{scale}-{data}" + (f"-threads{threads}" if threads else ""))


def planned_runs(e: EvalEntry, datasets: list[str], tag: str | None) -> list[dict[str, Any]]:
    """The run.json fields (`RUN_KEYS`) of each run `bench run` makes for this entry, as
    `bench.eval.plan.build_plan` chooses them: a method serves a dataset's task when it can
    (catalog capabilities), and a precise prompt only when it takes free text."""
    from bench.eval.runner import CLASSIFICATION_PROTOCOL
    from bench.methods.catalog import CATALOG
    from bench.registry import get_dataset

    out = []
    for d in datasets:
        tasks = get_dataset(d).tasks
        for m in e.methods:
            caps = CATALOG[m].capabilities
            if e.task not in tasks:
                continue
            if e.task == "localization" and ("localize" not in caps or (
                    e.prompt == "precise" and "free-text" not in caps)):
                continue
            if e.task == "classification" and "classify" not in caps:
                continue
            loc = e.task == "localization"
            out.append({"method": m, "method_tag": tag, "dataset": d, "split": e.split,
                        "task": e.task,
                        "protocol": e.protocol if loc else CLASSIFICATION_PROTOCOL,
                        "prompt": e.prompt if loc else None})
    return out


def complete_runs(results: Path) -> list[dict[str, Any]]:
    """The run.json of every complete run in `results`."""
    from bench.store import iter_runs

    return [info for _, info, _ in iter_runs(results)]


def runs_done(results: Path, runs: list[dict[str, Any]],
              have: list[dict[str, Any]] | None = None) -> bool:
    """Every run of `runs` is complete in `results` (its run.json fields equal; a planned split
    of None, the dataset's default, matches the split the run recorded); `have`: the folder's
    `complete_runs`, when already read."""
    have = complete_runs(results) if have is None else have
    return all(any(all(r[k] is None and k == "split" or info.get(k) == r[k] for k in RUN_KEYS)
                   for info in have) for r in runs)


# -- coverage of the table specs --------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    table: str
    section: str
    row: str
    column: str

    def __str__(self) -> str:
        sec = f" [{self.section}]" if self.section != "all" else ""
        return f"{self.table}{sec} row {self.row}, column {self.column}"


@dataclass
class Coverage:
    uncovered: list[Cell]                 # no job fills it and no pending entry names it
    idle_claims: list[tuple[str, str]]    # (eval entry, table) it names in fills but fills none of
    stale_pending: list[Pending]          # pending entries whose every cell a job fills


def run_matches(run: dict[str, Any], sel: Any) -> bool:
    """`run` (run.json fields) fills a cell asking for `sel`, as the tables find runs."""
    from bench.report.store_view import Run, _matches

    return _matches(Run("", Path(), run, {}), sel)


def coverage(plan: Plan | None = None, scale: str = "tiny", data: str = "synthetic") -> Coverage:
    """Which measurable cells of the table specs no evaluation job of `scale` fills (a job
    fills a cell when one of its runs matches the cell's query and its entry names the table
    in `fills`); paper-only rows, attribute / derived columns and cells the row's method cannot
    measure (`specs.not_applicable`) hold no measured value; reference rows are measured cells."""
    from bench.report import specs

    plan = plan or load_plan()
    jobs = [j for j in resolve(scale, data, plan=plan, out=Path("."), check_done=False)
            if j.kind == "eval"]
    uncovered: list[Cell] = []
    claimed: set[tuple[str, str]] = set()
    pending_hit: dict[int, bool] = {}
    for spec in specs.TABLES.values():
        for section in spec.sections:
            for row in spec.rows:
                if row.paper_only:
                    continue
                for col in spec.columns:
                    if col.attr is not None or col.derived is not None:
                        continue
                    sel = spec.query(section, row, col)
                    if specs.not_applicable(sel) is not None:
                        continue  # e.g. the centre prior's classification cells
                    filled = [j for j in jobs if spec.name in j.fills
                              and any(run_matches(r, sel) for r in j.runs)]
                    claimed.update((j.entry, spec.name) for j in filled)
                    exempt = [i for i, p in enumerate(plan.pending)
                              if p.at(scale) and p.covers(spec.name, row.id, col.id)]
                    for i in exempt:
                        pending_hit[i] = pending_hit.get(i, False) or not filled
                    if not filled and not exempt:
                        uncovered.append(Cell(spec.name, section.id, row.id, col.id))
    idle = [(e.name, f) for e in plan.evals if e.at(scale) for f in e.fills
            if f in specs.TABLES and (e.name, f) not in claimed]
    stale = [p for i, p in enumerate(plan.pending) if pending_hit.get(i) is False]
    return Coverage(uncovered, idle, stale)
