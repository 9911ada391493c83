"""What produced a result file: package versions and the source revision, recorded beside every
run (run.json) and every trained checkpoint (train.json) so a number can be traced to its code."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import bench


def versions() -> dict[str, str]:
    import numpy as np
    import pandas as pd
    import sklearn
    import torch

    out = {"bench": bench.__version__, "python": platform.python_version(),
           "numpy": np.__version__, "pandas": pd.__version__, "torch": torch.__version__,
           "scikit-learn": sklearn.__version__}
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except Exception:  # optional at evaluation time
        pass
    return out


def git_revision() -> str | None:
    """HEAD of the checkout this package runs from; None outside a git checkout."""
    try:
        here = Path(bench.__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                           text=True, timeout=5)
        return r.stdout.strip() or None
    except Exception:
        return None


# A file's (size, mtime) is the cheap stand-in for its content: a copy, an edit or a
# replacement changes it, and reading it costs one stat.
DETAIL_LIMIT = 200  # files listed one by one in run.json (to name the ones that changed)


def file_stamps(paths) -> list[list]:
    """[path, size, mtime_ns] per path, sorted; [path, None, None] for one that is absent."""
    out = []
    for p in sorted({str(p) for p in paths}):
        try:
            st = Path(p).stat()
        except OSError:
            out.append([p, None, None])
            continue
        out.append([p, int(st.st_size), int(st.st_mtime_ns)])
    return out


def stamps_digest(stamps: list[list]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:16]


def changed_files(old: list[list] | None, new: list[list]) -> list[str]:
    """Names of the files whose stamps differ (added, removed, edited); [] when unknown."""
    if not old:
        return []
    a = {s[0]: s[1:] for s in old}
    b = {s[0]: s[1:] for s in new}
    return [Path(p).name for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]
