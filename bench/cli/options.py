"""Parsing helpers shared by CLI verbs (key=value options, name lists, devices)."""

from __future__ import annotations

import json
from typing import Any

from bench.errors import UsageError


def split_names(value: str | None) -> list[str]:
    if not value:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, '[1,2]' -> [1, 2], anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        return text


def parse_kv(items: tuple[str, ...], scope_names: list[str] | None = None,
             flag: str = "--method-arg") -> dict[str | None, dict[str, Any]]:
    """`KEY=VALUE` applies to every entry; `NAME.KEY=VALUE` only to entry NAME.

    Returns {None: shared, name: specific}.
    """
    out: dict[str | None, dict[str, Any]] = {None: {}}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{flag} expects KEY=VALUE or NAME.KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        scope = None
        if "." in key and scope_names is not None:
            head, rest = key.split(".", 1)
            if head in scope_names:
                scope, key = head, rest
        out.setdefault(scope, {})[key.replace("-", "_")] = parse_value(value)
    return out


def options_for(parsed: dict[str | None, dict[str, Any]], name: str) -> dict[str, Any]:
    return {**parsed.get(None, {}), **parsed.get(name, {})}


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def distribute_options(parsed: dict[str | None, dict[str, Any]], names: list[str],
                       declared: dict[str, dict[str, Any]], kind: str = "method",
                       flag: str = "--method-arg") -> dict[str, dict[str, Any]]:
    """Each entry's options from `parse_kv`'s result, checked against what each declares.

    `NAME.KEY=VALUE` must be declared by NAME; a shared `KEY=VALUE` goes to every entry that
    declares KEY and must be declared by at least one. An unknown name is an error that says
    which entries take which options, with the closest match.
    """
    import difflib

    from bench.options import check_option_names

    out: dict[str, dict[str, Any]] = {}
    for name in names:
        specs = declared[name]
        scoped = parsed.get(name, {})
        check_option_names(scoped, specs, f"{kind} '{name}'", flag)
        shared = {k: v for k, v in parsed.get(None, {}).items() if k in specs}
        out[name] = {**shared, **scoped}
    for key in parsed.get(None, {}):
        if any(key in declared[n] for n in names):
            continue
        head = key.split(".", 1)[0] if "." in key else None
        if head is not None:
            raise UsageError(f"{flag} {key}=...: '{head}' is not a {kind} of this run "
                             f"({', '.join(names)})")
        known = sorted({k for n in names for k in declared[n]})
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        takes = "; ".join(f"{n}: {', '.join(sorted(declared[n])) or 'none'}" for n in names)
        raise UsageError(f"{flag} {key}=...: no {kind} of this run has an option '{key}'."
                         f"{hint} ({takes})")
    return out
