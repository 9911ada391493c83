"""`bench list`: what is registered, with capabilities, tasks and splits."""

from __future__ import annotations

import json

import click

from bench.cli.format import render_table


def _methods() -> list[dict]:
    """Built-ins from the catalog (no model is imported), plugins from their classes."""
    from bench.methods.catalog import CATALOG
    from bench.registry import METHODS, Broken

    out = []
    for info in CATALOG.values():
        if info.module is None:
            continue
        out.append({"name": info.name, "display": info.display, "family": info.family,
                    "learning": info.learning, "capabilities": list(info.capabilities),
                    "query_agnostic": info.query_agnostic, "description": info.description,
                    "paper": _paper_tables(info.name)})
    for name, obj in METHODS.load_plugins().items():
        if isinstance(obj, Broken):
            out.append({"name": name, "broken": obj.error})
            continue
        out.append({"name": name, "display": name, "family": "plugin",
                    "learning": obj.learning, "capabilities": obj.capabilities.as_list(),
                    "query_agnostic": obj.query_agnostic, "description": obj.description,
                    "paper": []})
    return sorted(out, key=lambda e: e["name"])


def _paper_only() -> list[str]:
    from bench.methods.catalog import CATALOG

    return [i.name for i in CATALOG.values() if i.module is None]


def _paper_tables(name: str) -> list[str]:
    try:
        from bench.report.specs import paper_tables
    except ImportError:
        return []
    return paper_tables(name)


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
            caps = e["capabilities"] + (["query-agnostic"] if e["query_agnostic"] else [])
            rows.append({"name": e["name"], "learning": e["learning"],
                         "capabilities": ", ".join(caps), "description": e["description"]})
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
        return
    click.echo(_text(kind, entries))
    if kind == "methods" and _paper_only():
        click.echo(f"\nIn the paper, no adapter yet: {', '.join(_paper_only())} (their "
                   f"published numbers appear in `bench table`).")
