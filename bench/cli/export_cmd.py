"""`bench export-maps`: write any method's maps in CheXlocalize's saliency-pickle format.

``bench export-maps --method gradcam --dataset chexlocalize --method-arg checkpoint=CKPT
--out maps/`` writes ``{cxr_id}_{task}_map.pkl`` for every CXR and task of the dataset's
default split and its validation split (``--split`` chooses), so CheXlocalize's official
scripts (``heatmap_to_segmentation.py``, ``eval.py``, the tuning scripts) can score AFLoc,
GLoRIA or a CAM, and ``bench score --maps maps/`` reads them back with the same numbers as
``bench run`` in place. The format: `bench.eval.chexlocalize_export`.
"""

from __future__ import annotations

import click

from bench.cli.options import parse_kv, resolve_device


@click.command("export-maps")
@click.option("--method", "method_name", required=True, help="Registered method name.")
@click.option("--dataset", required=True, help="Dataset whose images and findings are mapped.")
@click.option("--root", default=None, help="The dataset's folder.")
@click.option("--split", "splits", multiple=True,
              help="Split(s) to export (repeatable; default: the dataset's default split and "
                   "its validation split, which CheXlocalize's tuning reads).")
@click.option("--format", "fmt", type=click.Choice(["chexlocalize"]), default="chexlocalize",
              show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the *_map.pkl files.")
@click.option("--prompt", type=click.Choice(["simple", "precise"]), default="simple",
              show_default=True)
@click.option("--method-arg", multiple=True, metavar="KEY=VALUE",
              help="Method option, e.g. checkpoint=best.safetensors.")
@click.option("--dataset-arg", multiple=True, metavar="KEY=VALUE")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per localize call.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N images per split.")
@click.option("--cxr-img/--no-cxr-img", default=True, show_default=True,
              help="Store cxr_img (the grey image on the map's grid) as CheXlocalize's pickles "
                   "do; the official scripts do not read it, and it is most of each file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_cmd(method_name, dataset, root, splits, fmt, out, prompt, method_arg, dataset_arg,
               device, seed, batch_size, limit, cxr_img, quiet) -> None:
    """Write METHOD's maps as CheXlocalize saliency pickles."""
    from pathlib import Path

    from bench.eval.chexlocalize_export import export_chexlocalize

    method_options = parse_kv(method_arg, None, "--method-arg")[None]
    dataset_options = parse_kv(dataset_arg, None, "--dataset-arg")[None]
    counts = export_chexlocalize(method_name, dataset, Path(out), splits=list(splits),
                                 root=root, prompt=prompt, method_options=method_options,
                                 dataset_options=dataset_options,
                                 device=resolve_device(device), seed=seed,
                                 batch_size=batch_size, limit=limit, progress=not quiet,
                                 cxr_img=cxr_img)
    for split, n in counts.items():
        click.echo(f"{split}: {n['maps']} maps of {n['images']} images -> {out}"
                   + (f" (skipped: {n['skipped']})" if n.get("skipped") else ""))
