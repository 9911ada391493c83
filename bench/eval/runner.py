"""The streaming evaluator: dataset -> method -> protocol -> rows -> store, one chunk at a time.

Samples are processed in fixed chunks of consecutive positions. A chunk's rows are written as one
Parquet file, atomically, only when the chunk is complete; a restarted run skips the chunks it
finds, so a run killed at any point ends with exactly the rows of an uninterrupted run. Maps are
never accumulated: each leaves memory once its rows exist (except the first `keep_maps`, saved
for figures).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bench.errors import BenchError, StorageError, UsageError
from bench.imaging.geometry import (
    Frame,
    boxes_to_letterbox_mask,
    letterbox,
    letterbox_placement,
    map_to_letterbox,
    mask_to_letterbox,
)
from bench.provenance import (
    DETAIL_LIMIT,
    changed_files,
    file_stamps,
    git_revision,
    stamps_digest,
    versions,
)
from bench.registry import METHODS, get_dataset, get_method
from bench.store import (
    MAPS_DIR,
    SKIPS_DIR,
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    run_id,
)
from bench.types import CLASSIFICATION, LOCALIZATION, Query, Sample

CLASSIFICATION_PROTOCOL = "zero-shot"


@dataclass
class RunSpec:
    """Everything that defines one (method, dataset, task) run; its hash names the results."""

    method: str
    dataset: str
    task: str = LOCALIZATION
    split: str | None = None
    protocol: str = "afloc"
    prompt: str | None = "simple"
    tag: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    protocol_options: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    seed: int = 0
    n_boot: int = 1000
    # which data the dataset resolved to where the name alone does not say (a synthetic
    # world's anchors); filled in by the Evaluator from the dataset's `data_stamp`
    data_stamp: str | None = None
    # what the files held: {"data": digest of the sizes and mtimes of the dataset's label and
    # annotation files (filled in by the Evaluator), "maps": the same for `bench score`'s maps}
    inputs: dict[str, str] | None = None
    # Not part of the identity: how the work is done, not what is computed.
    device: str = "cpu"
    batch_size: int = 16
    chunk_size: int = 64
    keep_maps: int = 0
    on_error: str = "raise"

    def identity(self) -> dict[str, Any]:
        """What defines the results; a checkpoint counts by content, not only by path."""
        d = asdict(self)
        for k in ("device", "batch_size", "keep_maps"):
            d.pop(k)
        if d["data_stamp"] is None:  # real data: fingerprints stay as they were
            d.pop("data_stamp")
        if not d["inputs"]:  # in-memory and synthetic sets: fingerprints stay as they were
            d.pop("inputs")
        ckpt = self.method_options.get("checkpoint")
        if ckpt:
            from bench.methods.base import sha256_file

            d["checkpoint_sha256"] = sha256_file(str(ckpt))
        if self.method in METHODS.names():  # not maps scored from a folder (`bench score`)
            weights = get_method(self.method).weights_identity(dict(self.method_options))
            if weights:  # weights named by a folder or a Hugging Face id count by content
                d["weights"] = weights
        return d

    def method_key(self) -> str:
        """Specs with the same key share one built method."""
        return json.dumps([self.method, self.method_options, self.device, self.seed],
                          sort_keys=True, default=str)

    def purposes(self, protocol: Any = None) -> tuple[str, ...]:
        """The method's input recipes this run uses (recorded in run.json)."""
        if self.task != LOCALIZATION:
            return ("classify",)
        return ("localize", "classify") if getattr(protocol, "wants_probs", False) else (
            "localize",)

    def fingerprint(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def run_id(self) -> str:
        protocol = self.protocol if self.task == LOCALIZATION else CLASSIFICATION_PROTOCOL
        prompt = self.prompt if self.task == LOCALIZATION else None
        return run_id(self.method, self.dataset, self.split or "default", protocol, prompt,
                      self.tag)


@dataclass
class RunResult:
    spec: RunSpec
    path: Path
    info: dict[str, Any]
    summary: dict[str, Any]
    reused: bool = False


def build_dataset(spec: RunSpec):
    cls = get_dataset(spec.dataset)
    root = spec.root
    if root is None and getattr(cls, "needs_root", True) and not getattr(cls, "synthetic", False):
        try:
            from bench.data_paths import resolve_root
        except ImportError:  # pragma: no cover - data_paths ships with the adapters
            resolve_root = None
        if resolve_root is not None:
            root = resolve_root(spec.dataset, None)
    return cls(root=root, split=spec.split, on_error=spec.on_error, **spec.dataset_options)


def data_stamps(dataset) -> list[list] | None:
    """Sizes and mtimes of the label and annotation files a dataset reads; None for sets that
    name their data otherwise (a synthetic world's stamp) or read no file."""
    if getattr(dataset, "data_stamp", None):
        return None
    files = dataset.input_files() if hasattr(dataset, "input_files") else []
    return file_stamps(files) if files else None


def build_method(spec: RunSpec):
    cls = get_method(spec.method)
    return cls(device=spec.device, seed=spec.seed, **spec.method_options)


def _queries(dataset, sample: Sample, prompt: str | None) -> list[Query]:
    return [Query(f.query_id, f.pathology, dataset.prompt(f, prompt or "simple"))
            for f in sample.findings]


class Evaluator:
    """Runs RunSpecs into their run folders (resuming what is there).

    At most one method is alive: a method is built when a run needs it and closed before the
    next one is built, so memory holds one model, whatever the number of methods. `run_all`
    orders the work by method so each is built once.
    """

    def __init__(self, results_dir: str | Path = "results", progress: bool = True,
                 force: bool = False):
        self.results_dir = Path(results_dir)
        self.progress = progress
        self.force = force
        self._held: tuple[str, Any] | None = None  # (method key, the built method)
        # per-file stamps behind `RunSpec.inputs` other than the dataset's ("maps"), kept in
        # run.json so a refusal can name the files that changed
        self.input_files: dict[str, list[list] | None] = {}

    # -- public -------------------------------------------------------------------------
    def run_all(self, specs: list[RunSpec]) -> list[RunResult]:
        """Every spec, grouped by method (first appearance order); results in the specs' order."""
        order: dict[str, list[int]] = {}
        for i, spec in enumerate(specs):
            order.setdefault(spec.method_key(), []).append(i)
        results: list[RunResult | None] = [None] * len(specs)
        try:
            for indices in order.values():
                for i in indices:
                    results[i] = self.run(specs[i])
                self.release()
        finally:
            self.release()
        return [r for r in results if r is not None]

    def release(self) -> None:
        """Close the method held, if any."""
        if self._held is not None:
            _, method = self._held
            self._held = None
            method.close()

    def run(self, spec: RunSpec, method=None, dataset=None) -> RunResult:
        if spec.task == LOCALIZATION:  # bad options fail before the run folder is touched
            self._protocol(spec)
        dataset = dataset or build_dataset(spec)
        if spec.split is None:
            spec = replace(spec, split=dataset.split)
        if spec.data_stamp is None and getattr(dataset, "data_stamp", None):
            spec = replace(spec, data_stamp=dataset.data_stamp)
        stamps = data_stamps(dataset)
        inputs = {k: v for k, v in (spec.inputs or {}).items() if k != "data"}
        if stamps is not None:  # (a tuning run inherits its parent's: recomputed here)
            inputs["data"] = stamps_digest(stamps)
        spec = replace(spec, inputs=inputs or None)
        input_files = {"data": stamps if stamps and len(stamps) <= DETAIL_LIMIT else None,
                       **(self.input_files or {})}
        rd = RunDir(self.results_dir / spec.run_id())
        with _run_lock(rd.path):
            return self._run_locked(spec, rd, method, dataset, input_files)

    def _run_locked(self, spec: RunSpec, rd: RunDir, method, dataset,
                    input_files: dict[str, list[list] | None]) -> RunResult:
        """`run` once this process holds the run folder's lock."""
        existing = rd.read_run()
        if existing and existing.get("fingerprint") != spec.fingerprint():
            if not self.force:
                why = _difference(existing, spec, input_files)
                raise UsageError(f"{rd.path} holds a different run ({why}); pass --force to "
                                 f"recompute it or use another --results-dir")
            _clear(rd)
            existing = {}
        if existing.get("status") == "complete" and not self.force:
            summary = rd.read_summary()
            if summary is not None:
                return RunResult(spec, rd.path, existing, summary, reused=True)
        if self.force and existing.get("status") == "complete":
            _clear(rd)
        rd.sweep_temp_files()  # a killed run's half-written chunk never becomes a part file

        method = method or self._method(spec)
        self._check_capable(spec, method, dataset)
        protocol = self._protocol(spec) if spec.task == LOCALIZATION else None
        tuning_rows = None
        if (protocol is not None and getattr(protocol, "tuning_split", None)
                and method.tunes_on_val):
            tuning_rows = self._tuning_rows(spec, protocol, method)
        method.bind(dataset, spec.protocol)  # after tuning, which binds it to the tuning split

        started = time.time()
        info = self._run_info(spec, method, dataset, protocol, status="running")
        info["identity"] = json.loads(json.dumps(spec.identity(), default=str))
        info["input_files"] = {k: v for k, v in input_files.items() if v}
        info["started"] = existing.get("started", started)
        rd.write_run(info)

        index_skips = Counter(dataset.skipped)  # found while indexing, before any load
        try:
            skipped = self._process(spec, rd, method, dataset, protocol) + index_skips
            rows = rd.read_rows()
            t_sum = time.time()
            if spec.task == LOCALIZATION:
                summary = protocol.summarize(rows, n_boot=spec.n_boot, seed=spec.seed,
                                             tuning_rows=tuning_rows)
            else:
                from bench.eval.summary import summarize_classification

                summary = summarize_classification(rows, n_boot=spec.n_boot, seed=spec.seed)
        except BaseException as exc:  # the folder must not claim to be running still
            interrupted = isinstance(exc, KeyboardInterrupt)
            info.update(status="interrupted" if interrupted else "failed",
                        error=str(exc) or type(exc).__name__, stopped=time.time())
            try:
                rd.write_run(info)
            except Exception:  # keep the original error (a full disk may be why it failed)
                pass
            raise
        summary["synthetic"] = bool(info["synthetic"])
        rd.write_summary(summary)
        info.update(status="complete", finished=time.time(), n_rows=int(len(rows)),
                    skipped=dict(sorted(skipped.items())),
                    timings={"total_s": round(time.time() - info["started"], 3),
                             "summary_s": round(time.time() - t_sum, 3)})
        rd.write_run(info)
        return RunResult(spec, rd.path, info, summary)

    # -- internals ----------------------------------------------------------------------
    def _method(self, spec: RunSpec):
        key = spec.method_key()
        if self._held is not None and self._held[0] == key:
            return self._held[1]
        self.release()  # before building: never two models at once
        method = build_method(spec)
        self._held = (key, method)
        return method

    @staticmethod
    def protocol_for(spec: RunSpec):
        """The spec's protocol; unknown names and bad options raise UsageError."""
        from bench.eval.protocols import get_protocol

        return get_protocol(spec.protocol, **{"dataset": spec.dataset, "prompt": spec.prompt,
                                              **spec.protocol_options})

    _protocol = protocol_for

    @staticmethod
    def _check_capable(spec: RunSpec, method, dataset) -> None:
        caps = method.capabilities
        if spec.task == LOCALIZATION and not caps.localize:
            raise UsageError(f"method '{spec.method}' cannot localize")
        if spec.task == CLASSIFICATION and not caps.classify:
            raise UsageError(f"method '{spec.method}' cannot classify")
        if spec.task not in dataset.tasks:
            raise UsageError(f"dataset '{spec.dataset}' has no {spec.task} task")
        if spec.task == LOCALIZATION and spec.prompt == "precise" and not caps.free_text:
            raise UsageError(f"method '{spec.method}' takes no free-text queries")

    def _tuning_rows(self, spec: RunSpec, protocol, method) -> pd.DataFrame:
        if spec.split == protocol.tuning_split:
            return None  # tuning on itself: the protocol picks from these rows
        tuning = replace(spec, split=protocol.tuning_split, keep_maps=0)
        try:
            ds = build_dataset(tuning)
        except UsageError as exc:
            raise UsageError(f"protocol '{spec.protocol}' tunes on the "
                             f"'{protocol.tuning_split}' split: {exc}") from exc
        result = self.run(tuning, method=method, dataset=ds)
        return RunDir(result.path).read_rows()

    def _run_info(self, spec: RunSpec, method, dataset, protocol,
                  status: str) -> dict[str, Any]:
        return {
            "run_id": spec.run_id(),
            "fingerprint": spec.fingerprint(),
            "status": status,
            "method": spec.method,
            "method_tag": spec.tag,
            "dataset": spec.dataset,
            "split": spec.split,
            "task": spec.task,
            "protocol": spec.protocol if spec.task == LOCALIZATION else CLASSIFICATION_PROTOCOL,
            "protocol_options": spec.protocol_options,
            "prompt": spec.prompt if spec.task == LOCALIZATION else None,
            "synthetic": bool(getattr(dataset, "synthetic", False)),
            "data_stamp": spec.data_stamp,
            "seed": spec.seed,
            "n_bootstrap": spec.n_boot,
            "chunk_size": spec.chunk_size,
            "device": spec.device,
            "batch_size": spec.batch_size,
            "method_info": method.describe(spec.purposes(protocol)),
            "dataset_info": dataset.describe(),
            "versions": versions(),
            "git_rev": git_revision(),
        }

    def _process(self, spec: RunSpec, rd: RunDir, method, dataset, protocol) -> Counter:
        n = len(dataset)
        n_chunks = (n + spec.chunk_size - 1) // spec.chunk_size
        done = set(rd.chunk_indices())
        skipped: Counter = Counter()
        for i in done:
            skipped.update(_read_skips(rd, i))
        todo = [c for c in range(n_chunks) if c not in done]
        bar = tqdm(total=n, initial=n - sum(_chunk_len(c, spec.chunk_size, n) for c in todo),
                   desc=f"{spec.method} on {spec.dataset}/{spec.split}", unit="img",
                   disable=not self.progress, leave=False)
        with ThreadPoolExecutor(max_workers=2) as pool:
            for c in todo:
                lo, hi = c * spec.chunk_size, min(n, (c + 1) * spec.chunk_size)
                samples, positions = [], []
                before = Counter(dataset.skipped)
                for pos, s in zip(range(lo, hi), pool.map(dataset.load, range(lo, hi))):
                    if s is not None:  # None: skipped and counted by the dataset (on_error=skip)
                        samples.append(s)
                        positions.append(pos)
                chunk_skips = Counter(dataset.skipped)
                chunk_skips.subtract(before)
                chunk_skips = +chunk_skips
                rows: list[dict[str, Any]] = []
                for b in range(0, len(samples), spec.batch_size):
                    batch = samples[b:b + spec.batch_size]
                    if spec.task == LOCALIZATION:
                        rows += self._localize_batch(spec, rd, method, dataset, protocol, batch,
                                                     positions[b:b + spec.batch_size])
                    else:
                        rows += _classify_batch(method, dataset, batch)
                    bar.update(len(batch))
                bar.update((hi - lo) - len(samples))
                if chunk_skips:  # beside rows/, which must hold only Parquet parts
                    atomic_write_json(_skips_path(rd, c), dict(chunk_skips))
                rd.write_chunk(c, pd.DataFrame(rows))
                skipped.update(chunk_skips)
        bar.close()
        return skipped

    def _localize_batch(self, spec, rd, method, dataset, protocol, batch, positions):
        keep = [(p, s) for p, s in zip(positions, batch) if s.findings]
        if not keep:
            return []
        positions, batch = [p for p, _ in keep], [s for _, s in keep]
        queries = [_queries(dataset, s, spec.prompt) for s in batch]
        maps = method.localize(batch, queries)
        probs: list[list[float | None]] = [[None] * len(q) for q in queries]
        prob_f32 = None
        if getattr(protocol, "wants_probs", False) and method.capabilities.classify:
            paths = sorted({f.pathology for s in batch for f in s.findings})
            scores = method.classify(batch, paths)
            col = {p: j for j, p in enumerate(paths)}
            probs = [[_prob(scores[i, col[f.pathology]]) for f in s.findings]
                     for i, s in enumerate(batch)]
            # maps that bring probabilities of their own type (CheXlocalize pkls)
            precisions = [[method.prob_precision(s, f.pathology) for f in s.findings]
                          for s in batch]
            if any(x is not None for row in precisions for x in row):
                prob_f32 = precisions
        points = method.points(batch, queries) or [None] * len(batch)
        rows = []
        for k, (pos, s, qs, ms, ps, pts) in enumerate(zip(positions, batch, queries, maps, probs,
                                                          points)):
            extra = {"points": pts} if pts is not None else {}
            if prob_f32 is not None:
                extra["prob_f32"] = prob_f32[k]
            rows += protocol.localization_rows(s, s.findings, ms, method.frame, ps, **extra)
            if pos < spec.keep_maps:
                for j, (f, q, m) in enumerate(zip(s.findings, qs, ms)):
                    _save_map(rd, f"{pos:05d}_{j:02d}", s, f, q, m, method.frame)
        return rows


def _prob(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _classify_batch(method, dataset, batch: list[Sample]) -> list[dict[str, Any]]:
    paths = list(dataset.pathologies)
    batch = [s for s in batch if s.labels]
    if not batch:
        return []
    scores = method.classify(batch, paths)
    rows = []
    for i, s in enumerate(batch):
        for j, p in enumerate(paths):
            if p in s.labels:
                rows.append({"sample_id": s.id, "pathology": p, "label": int(s.labels[p]),
                             "score": float(scores[i, j])})
    return rows


def _difference(existing: dict[str, Any], spec: RunSpec,
                input_files: dict[str, list[list] | None]) -> str:
    """What differs between a stored run and this spec, in a few words for the refusal."""
    old = existing.get("identity")
    if old is None:
        return "other options or data; it predates identities that cover the data files"
    new = json.loads(json.dumps(spec.identity(), default=str))
    keys = sorted(k for k in set(old) | set(new) if k != "inputs" and old.get(k) != new.get(k))
    parts = [f"other {', '.join(keys)}"] if keys else []
    old_in, new_in = old.get("inputs") or {}, new.get("inputs") or {}
    for kind in sorted(set(old_in) | set(new_in)):
        if old_in.get(kind) == new_in.get(kind):
            continue
        where = {"data": "the dataset's label files",
                 "maps": f"the maps in {spec.method_options.get('maps')}"}.get(kind, kind)
        names = changed_files((existing.get("input_files") or {}).get(kind),
                              input_files.get(kind) or [])
        shown = f": {', '.join(names[:5])}" + (" ..." if len(names) > 5 else "") if names else ""
        parts.append(f"{where} changed since it was computed{shown}")
    return "; ".join(parts) or "other options or data"


def _chunk_len(c: int, size: int, n: int) -> int:
    return min(n, (c + 1) * size) - c * size


def _skips_path(rd: RunDir, c: int) -> Path:
    return rd.path / SKIPS_DIR / f"part-{c:05d}.json"


def _read_skips(rd: RunDir, c: int) -> dict[str, int]:
    for p in (_skips_path(rd, c), rd.rows_dir / f"part-{c:05d}.skipped.json"):  # (old layout)
        if p.is_file():
            return json.loads(p.read_text())
    return {}


LOCK_FILE = ".lock"  # inside the run folder; `_clear` keeps it


@contextmanager
def _run_lock(run_path: Path):
    """One process at a time per run folder: a second `bench run` on the same results folder
    would duplicate the work, and its temp-file sweep could delete the first one's chunk."""
    from filelock import FileLock, Timeout

    path = run_path / LOCK_FILE
    try:
        run_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(run_path, exc) from exc
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BenchError(f"another bench process is writing {run_path} (lock {path}); wait "
                         f"for it to finish or use another --results-dir") from None
    try:
        yield
    finally:
        lock.release()
        try:  # a run that stopped before writing anything leaves no empty folder behind
            if [p.name for p in run_path.iterdir()] == [LOCK_FILE]:
                path.unlink()
                run_path.rmdir()
        except OSError:
            pass


def _clear(rd: RunDir) -> None:
    """Empty a run folder for a fresh run, keeping the lock file this process holds."""
    import shutil

    if not rd.path.is_dir():
        return
    for p in rd.path.iterdir():
        if p.name == LOCK_FILE:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _save_map(rd: RunDir, key: str, s: Sample, f, q: Query, m: np.ndarray, frame: Frame) -> None:
    """Store one heatmap in the AFLoc 224 letterbox frame for figures (bench figure fig4/fig5)."""
    import io

    hw = s.hw
    image = s.image
    if image is not None and image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    img224 = letterbox(image, 224) if image is not None else np.zeros((224, 224), np.uint8)
    if f.boxes is not None and len(f.boxes):
        gt = boxes_to_letterbox_mask(f.boxes, hw)
        p = letterbox_placement(hw[0], hw[1], 224)
        scale = 224.0 / max(hw)
        boxes = np.asarray(f.boxes, np.float32).reshape(-1, 4) * scale
        boxes[:, 0] += p.left
        boxes[:, 1] += p.top
    else:
        gt = mask_to_letterbox(f.mask) if f.mask is not None else np.zeros((224, 224), np.uint8)
        boxes = np.zeros((0, 4), np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, image=img224, heatmap=map_to_letterbox(m, frame, hw, 224),
                        gt=(gt > 0).astype(np.uint8), boxes=boxes)
    name = f"{key}.npz"
    atomic_write_bytes(rd.path / MAPS_DIR / name, buf.getvalue())
    index_path = rd.path / MAPS_DIR / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else []
    index = [e for e in index if e["file"] != name]
    index.append({"file": name, "sample_id": s.id, "query_id": f.query_id,
                  "pathology": f.pathology, "query": q.text})
    atomic_write_json(index_path, sorted(index, key=lambda e: e["file"]))
