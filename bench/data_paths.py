"""Where each dataset lives on this machine.

Precedence (first match wins):

1. an explicit root (`--root PATH` on the command line, `root=` in Python);
2. `$BENCH_DATA/<name>`: a folder with one subfolder per dataset, named as registered
   (`rsna`, `siim`, `mimic-cxr`, ...), used when that subfolder exists;
3. a TOML file mapping names to folders: `$BENCH_DATA_TOML` if set, else
   `~/.config/afloc-bench/data.toml` (or `$XDG_CONFIG_HOME/afloc-bench/data.toml`), e.g.

       rsna = "/data/rsna-pneumonia"
       mimic-cxr = "/data/physionet.org/files/mimic-cxr-jpg/2.0.0"

   or the same keys under a `[datasets]` table. Relative paths are relative to the TOML file;
   `~` is expanded.

A name found nowhere is an error that says the three ways to provide it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from bench.errors import DataError, UsageError


def config_file() -> Path:
    """The TOML file consulted in step 3 (it need not exist)."""
    explicit = os.environ.get("BENCH_DATA_TOML")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "afloc-bench" / "data.toml"


def read_config(path: Path | None = None) -> dict[str, Path]:
    """Name -> folder from the TOML file; {} when the file does not exist."""
    path = path or config_file()
    if not path.is_file():
        if os.environ.get("BENCH_DATA_TOML"):
            raise UsageError(f"BENCH_DATA_TOML points to {path}, which does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid TOML ({exc})", path) from exc
    table = data.get("datasets", data)
    out: dict[str, Path] = {}
    for name, value in table.items():
        if isinstance(value, dict) and "root" in value:
            value = value["root"]
        if not isinstance(value, str):
            continue
        p = Path(value).expanduser()
        out[name] = p if p.is_absolute() else (path.parent / p)
    return out


def resolve_root(name: str, root: str | Path | None = None) -> Path:
    """The folder for dataset `name`, by the precedence in this module's docstring."""
    if root is not None:
        p = Path(root).expanduser()
        if not p.is_dir():
            raise DataError("root folder does not exist", p)
        return p
    env = os.environ.get("BENCH_DATA")
    if env:
        p = Path(env).expanduser() / name
        if p.is_dir():
            return p
    mapped = read_config().get(name)
    if mapped is not None:
        if not mapped.is_dir():
            raise DataError(f"folder for '{name}' in {config_file()} does not exist", mapped)
        return mapped
    raise UsageError(
        f"no data folder for '{name}': pass --root PATH, or set BENCH_DATA to a folder "
        f"containing '{name}/', or map '{name}' to a folder in {config_file()}"
    )
