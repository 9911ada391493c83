"""`bench list`: what is registered, with capabilities, tasks and splits."""

from __future__ import annotations

import json

import click

from bench.cli.format import render_table


def _methods() -> list[dict]:
    from bench.registry import METHODS, Broken

    out = []
    for name, obj in METHODS.entries().items():
        if isinstance(obj, Broken):
            out.append({"name": name, "broken": obj.error})
            continue
        out.append({"name": name, "capabilities": obj.capabilities.as_list(),
                    "frame": obj.frame.describe(), "description": obj.description})
    return out


def _datasets() -> list[dict]:
    from bench.registry import DATASETS, Broken

    out = []
    for name, obj in DATASETS.entries().items():
        if isinstance(obj, Broken):
            out.append({"name": name, "broken": obj.error})
            continue
        out.append({"name": name, "tasks": list(obj.tasks), "splits": list(obj.splits),
                    "default_split": obj.default_split, "pathologies": list(obj.pathologies),
                    "synthetic": bool(obj.synthetic), "description": obj.description})
    return out


def _protocols() -> list[dict]:
    from bench.eval.protocols import PROTOCOLS

    return [{"name": n, "description": getattr(c, "description", "")}
            for n, c in sorted(PROTOCOLS.items())]


def _report_entries(kind: str) -> list[dict]:
    try:
        from bench.report import specs
    except ImportError:
        return []
    table = getattr(specs, kind.upper(), {})
    return [{"name": n, "title": getattr(s, "title", str(s))} for n, s in table.items()]


def _text(kind: str, entries: list[dict]) -> str:
    rows = []
    for e in entries:
        if "broken" in e:
            rows.append({"name": e["name"], "status": f"BROKEN: {e['broken']}"})
        elif kind == "methods":
            rows.append({"name": e["name"], "capabilities": ", ".join(e["capabilities"]),
                         "frame": e["frame"], "description": e["description"]})
        elif kind == "datasets":
            rows.append({"name": e["name"], "tasks": ", ".join(e["tasks"]),
                         "splits": ", ".join(e["splits"]),
                         "pathologies": str(len(e["pathologies"])),
                         "synthetic": "yes" if e["synthetic"] else "",
                         "description": e["description"]})
        else:
            rows.append({k: str(v) for k, v in e.items()})
    return render_table(rows)


@click.command("list")
@click.argument("kind", type=click.Choice(["methods", "datasets", "protocols", "tables",
                                           "figures"]))
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def list_cmd(kind: str, as_json: bool) -> None:
    """List registered methods, datasets, protocols, tables or figures."""
    entries = {"methods": _methods, "datasets": _datasets, "protocols": _protocols,
               "tables": lambda: _report_entries("tables"),
               "figures": lambda: _report_entries("figures")}[kind]()
    if as_json:
        click.echo(json.dumps(entries, indent=2))
    else:
        click.echo(_text(kind, entries))
