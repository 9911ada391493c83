"""`bench run`: evaluate methods on datasets, one run folder per (method, dataset, task)."""

from __future__ import annotations

import json
import sys

import click

from bench.cli.format import render_comparison, render_table, summary_row
from bench.cli.options import (
    distribute_options,
    parse_kv,
    resolve_device,
    split_names,
)
from bench.store import RunDir
from bench.types import CLASSIFICATION, LOCALIZATION


@click.command("run")
@click.option("--methods", help="Comma-separated method names (default: the embedded default).")
@click.option("--datasets", help="Comma-separated dataset names (default: the synthetic world).")
@click.option("--split", default=None, help="Dataset split (default: each dataset's own).")
@click.option("--protocol", default="afloc", show_default=True,
              help="Localization protocol: afloc, chexlocalize or medklip-rsna.")
@click.option("--prompt", type=click.Choice(["simple", "precise"]), default="simple",
              show_default=True, help="Category prompt, or the dataset's own phrase.")
@click.option("--task", type=click.Choice(["all", LOCALIZATION, CLASSIFICATION]), default="all",
              show_default=True)
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000,
              show_default=True, help="Bootstrap replicates for the 95% CIs (0: none).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples per results chunk (the unit of resumption).")
@click.option("--results-dir", default="results", show_default=True)
@click.option("--root", default=None, help="Data folder (only with a single dataset).")
@click.option("--method-arg", multiple=True, metavar="[METHOD.]KEY=VALUE",
              help="Option for the methods, e.g. afloc.checkpoint=ckpt/best.safetensors.")
@click.option("--dataset-arg", multiple=True, metavar="[DATASET.]KEY=VALUE")
@click.option("--protocol-arg", multiple=True, metavar="KEY=VALUE",
              help="Protocol option, e.g. sum_boxes=true (afloc) or method=otsu (chexlocalize).")
@click.option("--tag", default=None, help="Label for a method configuration (e.g. levels=word).")
@click.option("--keep-maps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Store the heatmaps of the first N samples per dataset (for figures).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise",
              show_default=True, help="Stop at bad input, or skip it and count it in run.json.")
@click.option("--force", is_flag=True, help="Recompute runs that already exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run_cmd(methods, datasets, split, protocol, prompt, task, n_boot, seed, device, batch_size,
            chunk_size, results_dir, root, method_arg, dataset_arg, protocol_arg, tag,
            keep_maps, on_error, force, as_json, quiet) -> None:
    """Evaluate every method on every dataset it can serve and print 95% CIs."""
    from bench.errors import UsageError
    from bench.eval.plan import build_plan, default_names
    from bench.eval.runner import Evaluator
    from bench.registry import get_dataset, get_method

    method_names, dataset_names = split_names(methods), split_names(datasets)
    notes: list[str] = []
    if not method_names or not dataset_names:
        dm, dd, notes = default_names()
        method_names = method_names or dm
        dataset_names = dataset_names or dd
    classes = {m: get_method(m) for m in method_names}
    m_opts = distribute_options(parse_kv(method_arg, method_names, "--method-arg"),
                                method_names, {m: c.option_specs for m, c in classes.items()})
    all_synthetic = all(getattr(get_dataset(d), "synthetic", False) for d in dataset_names)
    for m, cls in classes.items():
        if "checkpoint" in m_opts[m] or not (cls.capabilities.trainable
                                             or cls.default_checkpoint() is not None):
            continue  # (CAMs are not trainable but default to the trained classifier)
        # The default checkpoint is a tiny model pretrained on the synthetic MIMIC set: it is
        # meant for the synthetic world only, never silently for real data.
        default_ckpt = cls.default_checkpoint()
        if default_ckpt and all_synthetic:
            m_opts[m]["checkpoint"] = default_ckpt
            notes.append(f"{m} uses the default synthetic-world checkpoint {default_ckpt}")
        else:
            trainer = m if cls.capabilities.trainable else "classifier"  # a CAM's classifier
            notes.append(f"{m} has no checkpoint: its weights are random (pass --method-arg "
                         f"{m}.checkpoint=PATH or train one with bench train {trainer})")
    if root and len(dataset_names) != 1:
        raise UsageError("--root names one dataset's folder; pass a single --datasets name")
    d_opts = distribute_options(parse_kv(dataset_arg, dataset_names, "--dataset-arg"),
                                dataset_names,
                                {d: get_dataset(d).option_names() for d in dataset_names},
                                kind="dataset", flag="--dataset-arg")
    p_opts = parse_kv(protocol_arg, None, "--protocol-arg")[None]
    tasks = (LOCALIZATION, CLASSIFICATION) if task == "all" else (task,)
    base = dict(split=split, protocol=protocol, prompt=prompt, tag=tag, seed=seed, n_boot=n_boot,
                device=resolve_device(device), batch_size=batch_size, chunk_size=chunk_size,
                keep_maps=keep_maps, on_error=on_error, root=root, protocol_options=p_opts)
    plan = build_plan(method_names, dataset_names, tasks=tasks, base=base,
                      method_options=m_opts,
                      dataset_options=d_opts)
    for spec in plan.specs:  # bad protocol options stop here, before any run starts
        if spec.task == LOCALIZATION:
            Evaluator.protocol_for(spec)
    for note in notes + plan.notes:
        click.echo(f"note: {note}", err=True)

    ev = Evaluator(results_dir, progress=not quiet and sys.stderr.isatty(), force=force)
    results = ev.run_all(plan.specs)
    comparisons = _comparisons(results, n_boot, seed)

    if as_json:
        payload = {"runs": [{"run_id": r.info["run_id"], "path": str(r.path),
                             "reused": r.reused, **_public(r.info), "summary": r.summary}
                            for r in results],
                   "comparisons": comparisons}
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
        return
    rows = [summary_row(r.info, r.summary) for r in results]
    click.echo(render_table(rows))
    if any(r.info.get("synthetic") for r in results):
        click.echo("\nSynthetic data: these numbers test the harness; they are not a "
                   "reproduction of the paper's results.")
    if comparisons:
        click.echo("\nPaired comparisons (same bootstrap resamples):")
        for c in comparisons:
            click.echo("  " + render_comparison(c))
    reused = [r.path.name for r in results if r.reused]
    if reused:
        click.echo(f"\nReused {len(reused)} finished run{'s' if len(reused) > 1 else ''} "
                   f"(same options and data files; --force recomputes): {', '.join(reused)}")
    click.echo(f"\nResults in {results_dir}/ ({len(results)} runs).")


def _public(info: dict) -> dict:
    keys = ("method", "method_tag", "dataset", "split", "task", "protocol", "prompt",
            "synthetic", "seed", "n_rows", "skipped")
    return {k: info.get(k) for k in keys}


def _comparisons(results, n_boot: int, seed: int) -> list[dict]:
    """Every pair of runs on the same data, task, protocol and prompt, paired resamples."""
    from bench.eval.compare import paired_comparison
    from bench.eval.compare_auroc import paired_auroc

    groups: dict[tuple, list] = {}
    for r in results:
        i = r.info
        groups.setdefault((i["dataset"], i["split"], i["task"], i["protocol"], i["prompt"]),
                          []).append(r)
    out = []
    for (dataset, split, task, protocol, prompt), runs in groups.items():
        if len(runs) < 2:
            continue
        rows = {id(r): RunDir(r.path).read_rows() for r in runs}
        for a_i, a in enumerate(runs):
            for b in runs[a_i + 1:]:
                if task == LOCALIZATION:
                    from bench.eval.protocols import get_protocol

                    proto = get_protocol(protocol, **{"dataset": dataset, "prompt": prompt,
                                                      **(a.info.get("protocol_options") or {})})
                    # each run at the thresholds its own summary chose (tuned on val)
                    c = paired_comparison(rows[id(a)], rows[id(b)], proto, "iou", n_boot, seed,
                                          decided_a=a.summary, decided_b=b.summary)
                    c["value_a"], c["value_b"] = c.pop("a"), c.pop("b")
                else:
                    c = paired_auroc(rows[id(a)], rows[id(b)], n_boot, seed)
                c.update(a=_label(a.info), b=_label(b.info), dataset=dataset, split=split,
                         task=task, protocol=protocol, prompt=prompt)
                out.append(c)
    return out


def _label(info: dict) -> str:
    return info["method"] + (f"@{info['method_tag']}" if info.get("method_tag") else "")
