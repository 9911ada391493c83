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
