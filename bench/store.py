"""The results store: one folder per run, written atomically and in chunks so runs resume.

Layout of a run folder `results/<run_id>/`::

    run.json          provenance: method, dataset, split, protocol, prompt, configs,
                      checkpoint sha256, seed, versions, git revision, timings, skipped counts,
                      "synthetic", "status" ("running" | "complete" | "failed" |
                      "interrupted", the last two with "error"), the run's "identity" (what
                      its "fingerprint" hashes, with the digests of the input files' sizes
                      and mtimes) and "input_files" (those stamps)
    rows/part-NNNNN.parquet
                      per-sample rows of chunk NNNNN (localization: one row per (sample, query);
                      classification: one row per (sample, pathology)); a chunk file exists
                      only once complete, so a restarted run skips it; nothing else lives
                      there, so `pd.read_parquet(run/rows)` reads them as one table
    skips/part-NNNNN.json
                      inputs chunk NNNNN skipped (reason -> count), when it skipped any
    summary.json      aggregate metrics with bootstrap CIs (schema in `bench.eval.summary`)
    maps/             optional, the first N heatmaps (`--keep-maps N`) for figures
    .lock             held by the process writing the folder (one at a time)

`run_id` is `<method>[@tag]__<dataset>__<split>__<protocol>[__<prompt>]`; tables find runs by
the fields in run.json, never by parsing the folder name.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where rows are read (atomic writers stay light)
    import pandas as pd

from bench.errors import StorageError

RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"
ROWS_DIR = "rows"
SKIPS_DIR = "skips"
MAPS_DIR = "maps"
FILE_MODE = 0o644
# the names `temp_beside` makes: ".<name>." + 8 mkstemp characters + ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def temp_beside(path: Path) -> tuple[int, str]:
    """A temp file in `path`'s folder for an atomic write of `path` (fd, name)."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def publish(tmp: str, path: Path) -> None:
    """Give the finished temp file its final name, as 0644: mkstemp makes 0600 (and some
    writers recreate the file), but results and checkpoints are meant to be shared."""
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[str]:
    """A temp file beside `path` for a writer to fill; it becomes `path` (0644) when the block
    ends normally and is removed when it raises, so `path` is never half written. An OSError
    (disk full, no permission) becomes a StorageError that names the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_beside(path)
        os.close(fd)
    except OSError as exc:
        raise StorageError(path, exc) from exc
    try:
        yield tmp
        publish(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StorageError(path, exc) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=True)
    atomic_write_bytes(path, (text + "\n").encode())


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic_write(path) as tmp:  # pyarrow's IO errors are OSErrors too
        df.to_parquet(tmp, index=False)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_id(method: str, dataset: str, split: str, protocol: str, prompt: str | None = None,
           tag: str | None = None) -> str:
    m = f"{method}@{tag}" if tag else method
    parts = [m, dataset, split, protocol] + ([prompt] if prompt else [])
    return "__".join(p.replace("/", "-").replace(" ", "_") for p in parts)


class RunDir:
    """One run folder; all writes are atomic."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def rows_dir(self) -> Path:
        return self.path / ROWS_DIR

    def chunk_path(self, index: int) -> Path:
        return self.rows_dir / f"part-{index:05d}.parquet"

    def has_chunk(self, index: int) -> bool:
        return self.chunk_path(index).is_file()

    def write_chunk(self, index: int, rows: pd.DataFrame) -> None:
        atomic_write_parquet(self.chunk_path(index), rows)

    def chunk_indices(self) -> list[int]:
        if not self.rows_dir.is_dir():
            return []
        return sorted(int(p.stem.split("-")[1]) for p in self.rows_dir.glob("part-*.parquet"))

    def read_rows(self) -> pd.DataFrame:
        import pandas as pd

        parts = [pd.read_parquet(self.chunk_path(i)) for i in self.chunk_indices()]
        if not parts:
            return pd.DataFrame()
        parts = [p for p in parts if len(p)] or parts[:1]
        return pd.concat(parts, ignore_index=True)

    def sweep_temp_files(self) -> int:
        """Delete the temporary files a killed writer left behind; a resumed run owns the folder.

        Only names that `atomic_write_*` makes (`temp_beside`) are touched.
        """
        if not self.path.is_dir():
            return 0
        n = 0
        for p in self.path.rglob(".*.tmp"):
            if p.is_file() and _TEMP_NAME.fullmatch(p.name):
                p.unlink(missing_ok=True)
                n += 1
        return n

    def read_run(self) -> dict[str, Any]:
        p = self.path / RUN_JSON
        return json.loads(p.read_text()) if p.is_file() else {}

    def write_run(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.path / RUN_JSON, info)

    def read_summary(self) -> dict[str, Any] | None:
        p = self.path / SUMMARY_JSON
        return json.loads(p.read_text()) if p.is_file() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / SUMMARY_JSON, summary)


def iter_runs(results_dir: str | Path) -> Iterator[tuple[RunDir, dict[str, Any], dict[str, Any]]]:
    """Every complete run under `results_dir`: (folder, run.json, summary.json)."""
    root = Path(results_dir)
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        rd = RunDir(p)
        info = rd.read_run()
        summary = rd.read_summary()
        if info and summary is not None and info.get("status") == "complete":
            yield rd, info, summary
