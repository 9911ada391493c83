"""`bench score`: evaluate heatmaps produced elsewhere, with the same rows, store and tables."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.cli.format import render_table, summary_row
from bench.cli.options import parse_kv


@click.command("score")
@click.option("--maps", "maps_dir", required=True, type=click.Path(file_okay=False),
              help="Folder of <sample_id>__<query_id>.npy maps or CheXlocalize *_map.pkl files.")
@click.option("--dataset", required=True, help="Dataset the maps were made for.")
@click.option("--root", default=None, help="The dataset's folder.")
@click.option("--protocol", default="afloc", show_default=True)
@click.option("--split", default=None)
@click.option("--prompt", type=click.Choice(["simple", "precise"]), default="simple",
              show_default=True)
@click.option("--frame", default="original", show_default=True,
              help="Frame the .npy maps are on: original, letterbox:224, letterbox:256/224, "
                   "square:320. CheXlocalize pkls are always resized to native size.")
@click.option("--nan-padding", is_flag=True,
              help="NaN or inf pixels in a map mark padding the method never saw (left out of "
                   "every metric); without this flag they are an error.")
@click.option("--name", default=None, help="Method name for the run (default: maps-<folder>).")
@click.option("--dataset-arg", multiple=True, metavar="KEY=VALUE")
@click.option("--protocol-arg", multiple=True, metavar="KEY=VALUE")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000,
              show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--results-dir", default="results", show_default=True)
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Also write the summary JSON here.")
@click.option("--print-names", is_flag=True,
              help="List the .npy file names this dataset expects, then exit.")
@click.option("--force", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def score_cmd(maps_dir, dataset, root, protocol, split, prompt, frame, nan_padding, name,
              dataset_arg, protocol_arg, n_boot, seed, results_dir, out, print_names, force,
              as_json) -> None:
    """Score a folder of heatmaps the way CheXlocalize's eval script does."""
    from bench.eval.external_maps import ExternalMaps, map_files, parse_frame
    from bench.eval.runner import Evaluator, RunSpec, build_dataset
    from bench.provenance import DETAIL_LIMIT, file_stamps, stamps_digest
    from bench.store import atomic_write_json

    # the maps' sizes and mtimes are part of the run's identity: replaced maps are rescored
    stamps = file_stamps(map_files(Path(maps_dir)))
    spec = RunSpec(method=name or f"maps-{Path(maps_dir).name}", dataset=dataset, split=split,
                   protocol=protocol, prompt=prompt, root=root, seed=seed, n_boot=n_boot,
                   dataset_options=parse_kv(dataset_arg, None, "--dataset-arg")[None],
                   protocol_options=parse_kv(protocol_arg, None, "--protocol-arg")[None],
                   method_options={"maps": str(Path(maps_dir).resolve()), "frame": frame,
                                   **({"nan_padding": True} if nan_padding else {})},
                   inputs={"maps": stamps_digest(stamps)})
    Evaluator.protocol_for(spec)  # bad protocol options stop here
    ds = build_dataset(spec)
    if print_names:
        for i in range(len(ds)):
            s = ds.load(i)
            if s is None:
                continue
            for f in s.findings:
                click.echo(ExternalMaps.npy_name(s.id, f.query_id))
        return
    method = ExternalMaps(maps_dir, frame=parse_frame(frame), nan_padding=nan_padding, seed=seed)
    method.name = spec.method
    # A protocol that tunes on another split (chexlocalize: val) scores that split from the
    # same folder first.
    ev = Evaluator(results_dir, progress=False, force=force)
    ev.input_files["maps"] = stamps if len(stamps) <= DETAIL_LIMIT else None
    result = ev.run(spec, method=method, dataset=ds)
    if method.missing:
        info = result.info
        info["skipped"] = {**info.get("skipped", {}), **dict(method.missing)}
        from bench.store import RunDir

        RunDir(result.path).write_run(info)
    if out:
        atomic_write_json(Path(out), result.summary)
    if as_json:
        click.echo(json.dumps({"run_id": result.info["run_id"], "path": str(result.path),
                               "summary": result.summary}, indent=2, default=str))
    else:
        click.echo(render_table([summary_row(result.info, result.summary)]))
        if result.reused:
            click.echo(f"\nnote: reused the finished run in {result.path} (same maps, data "
                       f"files and options; --force rescores)")
    if method.missing:
        n = sum(method.missing.values())
        click.echo(f"note: {n} map{'s' if n > 1 else ''} missing: no prediction, so empty "
                   f"masks (left out of IoU and Dice under the protocol's empty-mask rule, as "
                   f"any empty prediction) and no hit or CNR; counted in run.json", err=True)
