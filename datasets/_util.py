"""Helpers the real-data adapters share: finding files, reading CSV rows with line numbers,
GLoRIA's 70/15/15 split, and the pieces of `check()` (missing files, sample decoding).

Row numbers in error messages are file line numbers (the header is line 1), which is what a
user sees in an editor.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import DataError
from bench.imaging.io import read_image

COMPRESSED = ("", ".gz", ".zip")


def find_file(root: Path, *names: str) -> Path | None:
    """The first of root/name, root/name.gz, root/name.zip that exists."""
    for name in names:
        for ext in COMPRESSED:
            p = root / (name + ext)
            if p.is_file():
                return p
    return None


def read_json(path: Path, kind: type, what: str) -> Any:
    """A JSON file whose top level must be `kind` (list or dict); `what` names it in errors."""
    if not path.is_file():
        raise DataError("missing file", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path) from exc
    if not isinstance(data, kind):
        raise DataError(f"expected {what}", path)
    return data


def open_text(path: Path) -> io.TextIOBase:
    """Plain, gzip or single-member zip text (utf-8, BOM tolerated)."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    if path.suffix == ".zip":
        zf = zipfile.ZipFile(path)
        members = [m for m in zf.namelist() if not m.endswith("/")]
        if len(members) != 1:
            raise DataError(f"expected one file inside the zip, found {len(members)}", path)
        return io.TextIOWrapper(zf.open(members[0]), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


Rows = Iterator[tuple[int, dict[str, str]]]


def read_csv_rows(path: Path, required: Sequence[str]) -> tuple[list[str], Rows]:
    """Header (names stripped) and an iterator of (line number, {column: stripped value}).

    A row with the wrong number of fields yields a dict with the key `None` holding the count
    found, so the caller can report it as malformed with its line number; its fields are filled
    in by position as far as they go, so the caller can still tell which id the row named.
    """
    try:
        fh = open_text(path)
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
    except StopIteration as exc:
        raise DataError("empty CSV file (no header)", path) from exc
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile, EOFError, csv.Error) as exc:
        raise DataError(f"unreadable CSV ({exc})", path) from exc
    missing = [c for c in required if c not in header]
    if missing:
        fh.close()
        raise DataError(f"missing column(s) {', '.join(missing)} (header: {', '.join(header)})",
                        path, 1)

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        with fh:
            try:
                for values in reader:
                    if not values or all(not v.strip() for v in values):
                        continue
                    if len(values) != len(header):
                        row = {h: v.strip() for h, v in zip(header, values)}
                        row[None] = str(len(values))  # type: ignore[index]
                        yield reader.line_num, row
                        continue
                    yield reader.line_num, {h: v.strip() for h, v in zip(header, values)}
            except (csv.Error, UnicodeDecodeError, EOFError, OSError) as exc:
                raise DataError(f"unreadable CSV ({exc})", path, reader.line_num) from exc

    return header, rows()


def wrong_width(row: dict, header: Sequence[str]) -> str | None:
    if None in row:
        return f"malformed row ({row[None]} fields, header has {len(header)})"
    return None


def gloria_split(items: Sequence[Any], part: str, seed: int = 0) -> list[Any]:
    """GLoRIA's split: train_test_split(test_size=0.3, random_state=0), then the held-out 30%
    split again with test_size=0.5; the FIRST half is test, the second val (as GLoRIA writes
    `test_df, valid_df = train_test_split(...)`)."""
    from sklearn.model_selection import train_test_split

    items = list(items)
    if len(items) < 4:
        raise DataError(f"too few items ({len(items)}) for a 70/15/15 split")
    train, rest = train_test_split(items, test_size=0.15 * 2, random_state=seed)
    test, val = train_test_split(rest, test_size=0.5, random_state=seed)
    return {"train": train, "val": val, "test": test}[part]


@dataclass
class SplitUniverse:
    """What a drawn split is drawn over: every id the file names in order (bad rows' ids
    included), and the (file, row) of bad rows whose id could not be read."""

    ids: list[Any] = field(default_factory=list)
    unplaced: list[tuple[Path, int]] = field(default_factory=list)
    id_name: str = "id"  # the column, for messages


def stable_gloria_split(universe: SplitUniverse, part: str, keep: Container[Any]) -> list[Any]:
    """GLoRIA's split drawn over every id the file names, bad rows' ids included, then only the
    ids in `keep`: a skipped row removes its own image and moves no other between splits.

    On a clean file `universe.ids` is exactly what GLoRIA splits, so nothing changes there. A bad
    row whose id could not be read (`universe.unplaced`) would leave the universe short by an
    unknown id, which reshuffles the split: that is an error even when skipping.
    """
    if universe.unplaced:
        path, line = universe.unplaced[0]
        n = len(universe.unplaced)
        more = f" (and {n - 1} more)" if n > 1 else ""
        name = universe.id_name
        raise DataError(f"bad row without a {name}{more}: this split is drawn over every "
                        f"{name} in the file, so an unknown one would move others between "
                        f"splits; fix the row (or use a split that is not drawn)", path, line)
    return [x for x in gloria_split(universe.ids, part) if x in keep]


def missing_files(paths: Iterable[Path], limit: int = 10) -> tuple[int, list[str]]:
    """How many of `paths` do not exist, and the first `limit` of them."""
    n, first = 0, []
    for p in paths:
        if not p.is_file():
            n += 1
            if len(first) < limit:
                first.append(str(p))
    return n, first


def decode_sample(paths: Sequence[Path], n: int = 8) -> list[str]:
    """Decode up to `n` existing files spread over `paths`; one problem line per failure."""
    existing = [p for p in paths if p.is_file()]
    if not existing:
        return []
    step = max(1, len(existing) // n)
    problems = []
    for p in existing[::step][:n]:
        try:
            read_image(p)
        except DataError as exc:
            problems.append(str(exc))
    return problems


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class FileDataset:
    """Mixin for adapters over files on disk: root checks, decode-or-skip, check() scaffolding.

    Used as `class X(FileDataset, Dataset)`; `self.bad`, `self.on_error`, `self.skipped` come
    from `bench.datasets.base.Dataset`.
    """

    def require_root(self) -> Path:
        from bench.errors import UsageError

        if self.root is None:
            raise UsageError(f"dataset '{self.name}' needs a root folder (--root PATH, "
                             f"BENCH_DATA or the data.toml file; see bench.data_paths)")
        if not self.root.is_dir():
            raise DataError("root folder does not exist", self.root)
        return self.root

    def require_file(self, *names: str) -> Path:
        p = find_file(self.root, *names)
        if p is None:
            raise DataError(f"missing file (also looked for {', '.join(names[1:]) or 'gz/zip'})"
                            if len(names) > 1 else "missing file", self.root / names[0])
        return p

    def decode(self, path: Path):
        """The image, or None when it is unreadable and the user asked to skip."""
        try:
            return read_image(path)
        except DataError as exc:
            if self.on_error == "skip":
                self.skipped[_reason(str(exc))] += 1
                return None
            raise

    def new_report(self):
        from bench.datasets.base import CheckReport

        return CheckReport(dataset=self.name, root=str(self.root), split=self.split,
                           expected=dict(self.expected_counts))

    def finish_report(self, report, image_paths: Sequence[Path], n_decode: int = 8):
        """Missing files of the current split, and a sample decoded."""
        n_missing, first = missing_files(image_paths)
        if n_missing:
            more = f" (first {len(first)} listed)" if n_missing > len(first) else ""
            report.missing.append(f"{n_missing} of {len(image_paths)} image files of split "
                                  f"'{self.split}' are missing{more}")
            report.missing += first
        report.problems += decode_sample(image_paths, n_decode)
        report.counts.setdefault("skipped", dict(self.skipped))
        return report


def _reason(message: str) -> str:
    """A skip reason without the file name: 'corrupt image', 'missing file', ..."""
    text = message.split(": ", 1)[1] if ": " in message else message
    return text.split(" (")[0]


def compare_counts(report, name: str, found: dict[str, Any], expected: dict[str, Any]) -> None:
    """Notes comparing counts with the documented ones (a different release is not an error)."""
    for key, want in expected.items():
        got = found.get(key)
        if got is None:
            continue
        mark = "as documented" if got == want else f"documented {want}"
        report.notes.append(f"{name} {key}: {got} ({mark})")


_PARSE_CACHE: dict[tuple, Any] = {}


def cached_parse(path: Path, parse, on_bad):
    """Parse a labels file once per process while it is unchanged (the gloria-* splits of a
    30k-row file would otherwise re-read it per split). Only clean parses are cached, so bad
    rows are reported (or counted) every time."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, parse.__qualname__)
    if key in _PARSE_CACHE:
        return _PARSE_CACHE[key]
    problems: list[int] = []

    def watch(*args, **kwargs):
        problems.append(1)
        return on_bad(*args, **kwargs)

    result = parse(path, watch)
    if not problems:
        _PARSE_CACHE.clear()  # keep one file's worth of memory
        _PARSE_CACHE[key] = result
    return result
