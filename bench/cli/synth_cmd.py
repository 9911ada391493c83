"""`bench synth`: write the synthetic world (every dataset in its native layout) to a folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from bench.errors import UsageError


@click.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder to write into (created; finished units are kept).")
@click.option("--scale", type=click.Choice(["tiny", "small", "full"]), default="small",
              show_default=True, help="tiny: tests (seconds); small: default runs; full.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--only", "only", multiple=True,
              type=click.Choice(["mimic", "rsna", "siim", "chexlocalize", "covid-rural",
                                 "chestx-det10", "fundus"]),
              help="Generate only these units (repeatable). mimic includes MS-CXR.")
@click.option("--jobs", type=int, default=None, help="Worker processes (default: CPUs).")
@click.option("--preview", is_flag=True, help="Also write OUT/synthetic_preview.png "
              "(contact sheet with ground-truth outlines).")
def synth_cmd(out: str, scale: str, seed: int, only: tuple[str, ...], jobs: int | None,
              preview: bool) -> None:
    """Generate SYNTHETIC chest X-ray and fundus datasets with exact ground truth.

    Writes MIMIC-CXR-JPG (+ MS-CXR), RSNA, SIIM, CheXlocalize, COVID Rural, ChestX-Det10 and a
    fundus paired folder in their real on-disk formats, each marked SYNTHETIC. Same seed and
    scale give byte-identical files. Read them with the `synthetic-<name>` datasets or with the
    real adapters (`--root OUT/<folder>`); either way the runs are labelled synthetic (each
    folder's SYNTHETIC.txt marks it).
    """
    from bench.synth.anchors import load_anchors
    from bench.synth.world import FOLDERS, generate

    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be at least 1")
    t0 = time.perf_counter()
    anchors = load_anchors()
    click.echo(f"SYNTHETIC world: scale={scale} seed={seed} anchors={anchors.source}", err=True)
    done = generate(out, scale, seed, units=list(only) or None, n_jobs=jobs,
                    progress=sys.stderr.isatty())
    for unit in done:
        for folder in FOLDERS[unit]:
            click.echo(f"{unit:13s} {Path(out) / folder}")
    if preview:
        from bench.synth.preview import write_preview

        p = write_preview(Path(out) / "synthetic_preview.png", seed=seed)
        click.echo(f"preview       {p}")
    click.echo(f"done in {time.perf_counter() - t0:.1f} s (all files are SYNTHETIC)", err=True)
