"""Declared options: an unknown name is an error that names the known ones and the closest."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from bench.errors import UsageError


def check_option_names(given: dict[str, Any], declared: Collection[str], owner: str,
                       flag: str = "--method-arg") -> None:
    """An unknown option is an error that names the known ones and the closest match."""
    for name in given:
        if name in declared:
            continue
        close = difflib.get_close_matches(name, list(declared), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(declared)) or "none"
        raise UsageError(f"{owner} has no option '{name}' ({flag}).{hint} Its options: {known}")
