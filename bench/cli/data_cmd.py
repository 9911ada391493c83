"""`bench data`: inspect and validate a local copy of a dataset.

`bench data check NAME [--root PATH] [--split S] [--on-error raise|skip]` reads the labels,
counts images and positives per split against the documented counts, decodes a sample of the
images, and prints what is missing, extra or malformed (file and row). It exits 0 only when
the copy is usable; otherwise it raises `BenchError` (exit 1) after printing the report.

`bench data frequent-sentences --root DIR --top N --out FILE` starts a paraphrase table for
AFLoc's fundus recipe: the N most frequent sentences of a paired folder's training reports,
each with its count and five empty paraphrase slots to fill.
"""

from __future__ import annotations

from typing import Any

import click

from bench.errors import BenchError

LIST_PER_REASON = 20  # problem lines printed per skip reason


def _format_counts(counts: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in counts.items():
        if isinstance(value, dict):
            if not value:
                continue
            inner = ", ".join(f"{k} {v}" for k, v in value.items())
            lines.append(f"  {key}: {inner}")
        else:
            lines.append(f"  {key}: {value}")
    return lines


def render(report) -> str:
    """The text `bench data check` prints for a CheckReport."""
    head = f"{report.dataset} at {report.root} (split {report.split})"
    out = [head, "counts:"] + _format_counts(report.counts)
    if report.notes:
        out.append("notes:")
        out += [f"  {n}" for n in report.notes]
    if report.missing:
        out.append("missing:")
        out += [f"  {m}" for m in report.missing]
    if report.problems:
        out.append("malformed:")
        out += [f"  {p}" for p in report.problems]
    out.append("usable: yes" if report.usable else "usable: NO")
    return "\n".join(out)


@click.group("data")
def data_cmd() -> None:
    """Inspect and validate local copies of the datasets."""


def adapter_options(options: tuple[str, ...]) -> dict[str, Any]:
    """`--option KEY=VALUE` items as adapter keyword arguments (values stay strings)."""
    from bench.errors import UsageError

    kwargs: dict[str, Any] = {}
    for item in options:
        if "=" not in item:
            raise UsageError(f"--option expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        kwargs[k.strip()] = v
    return kwargs


def dataset_folder(name: str, cls: Any, root: str | None) -> Any:
    """The folder to read: `--root`, else the configured one; none for a synthetic dataset
    given no root (it generates its own)."""
    from bench.data_paths import resolve_root

    if root is None and getattr(cls, "synthetic", False):
        return None
    return resolve_root(name, root)


@data_cmd.command("check")
@click.argument("name")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset folder (else $BENCH_DATA/NAME or the data.toml mapping).")
@click.option("--split", default=None, help="Split to check (default: the dataset's default).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="skip",
              show_default=True,
              help="skip: collect every bad row and report them all; raise: stop at the first.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Adapter option, e.g. -o split_list=my.csv (repeatable).")
def check_cmd(name: str, root: str | None, split: str | None, on_error: str,
              options: tuple[str, ...]) -> None:
    """Validate the local copy of dataset NAME; exit 0 only when it is usable."""
    from bench.registry import get_dataset

    cls = get_dataset(name)
    kwargs = adapter_options(options)
    folder = dataset_folder(name, cls, root)
    dataset = cls(root=folder, split=split, on_error=on_error, **kwargs)
    report = dataset.check()
    policy = set(getattr(dataset, "policy_skips", ()))  # drops the protocol asks for
    listed: dict[str, list[str]] = {}
    for reason, line in dataset.skip_log:
        listed.setdefault(reason, []).append(line)
    for reason, n in sorted(dataset.skipped.items()):
        if reason in policy:
            report.notes.append(f"{n} skipped: {reason}")
            continue
        # each problem with its file and row, as `bench run` (--on-error raise) says it
        lines = listed.get(reason, [])
        report.problems += lines[:LIST_PER_REASON]
        if n > min(len(lines), LIST_PER_REASON):
            report.problems.append(f"... and {n - min(len(lines), LIST_PER_REASON)} more: "
                                   f"{reason}")
    click.echo(render(report))
    if not report.usable:
        raise BenchError(f"dataset '{name}' at {report.root} is not usable as is (see "
                         f"'missing' and 'malformed' above)")


@data_cmd.command("frequent-sentences")
@click.option("--dataset", "name", default="paired-folder", show_default=True,
              help="A paired-folder dataset (paired-folder, synthetic-fundus).")
@click.option("--root", "--data-root", "root", type=click.Path(file_okay=False), default=None,
              help="Dataset folder (else $BENCH_DATA/NAME or the data.toml mapping).")
@click.option("--split", default="train", show_default=True, help="Reports of this split.")
@click.option("--top", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many sentences.")
@click.option("--text-mode", type=click.Choice(["faithful", "corrected"]), default="faithful",
              show_default=True, help="AFLoc's sentence cleaning the counts follow (the "
              "training run's --text-mode).")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="The template to write (JSON; the format of bench train afloc --paraphrases).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Adapter option, e.g. -o scale=tiny (repeatable).")
def frequent_sentences_cmd(name: str, root: str | None, split: str, top: int, text_mode: str,
                           out: str, force: bool, options: tuple[str, ...]) -> None:
    """Write a paraphrase-table template from a paired folder's most frequent report sentences
    (the paper's fundus recipe paraphrases "frequently occurring sentences")."""
    import json
    from pathlib import Path

    from bench.datasets.paired_folder import PairedFolder
    from bench.errors import UsageError
    from bench.methods.afloc.paraphrase import frequent_sentences, template
    from bench.registry import get_dataset
    from bench.store import atomic_write_bytes

    cls = get_dataset(name)
    if not issubclass(cls, PairedFolder):
        raise UsageError(f"bench data frequent-sentences reads paired-folder datasets, not "
                         f"'{name}'")
    kwargs = adapter_options(options)
    target = Path(out)
    if target.exists() and not force:
        raise UsageError(f"{target} exists (a filled-in table?); pass --force to overwrite it")
    folder = dataset_folder(name, cls, root)
    dataset = cls(root=folder, split=split, **kwargs)
    reports = [r["report"] for r in dataset.records]
    top_sentences = frequent_sentences(reports, text_mode, top)
    table = template(top_sentences, f"{name} at {dataset.root} (split {split})", len(reports))
    # most frequent first, as counted (not sorted by key)
    atomic_write_bytes(target, (json.dumps(table, indent=1, ensure_ascii=False) + "\n").encode())
    click.echo(f"{len(top_sentences)} sentences of {len(reports)} {split} reports written to "
               f"{target}; fill in five paraphrases each, then: bench train afloc --dataset "
               f"{name} --paraphrases {target}")
