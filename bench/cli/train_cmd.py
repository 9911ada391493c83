"""`bench train afloc`: pretrain AFLoc on a paired image-report dataset.

Single process: ``bench train afloc --dataset synthetic-mimic --root DATA --preset tiny``.
Multi-GPU / multi-node: ``torchrun --nproc_per_node 8 -m bench.cli.main train afloc ...``
(DDP; ``--gather-negatives`` uses every rank's pairs as negatives).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.cli.options import resolve_device


@click.command("train")
@click.argument("method", type=click.Choice(["afloc"]))
@click.option("--dataset", required=True, help="mimic-cxr or synthetic-mimic (any paired set).")
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="Dataset folder (synthetic sets: the world folder, default the cache).")
@click.option("--preset", type=click.Choice(["paper", "tiny"]), default="paper",
              show_default=True)
@click.option("--levels", default="word,sentence,report", show_default=True,
              help="Alignment levels (the paper's ablation: any non-empty subset).")
@click.option("--text-mode", type=click.Choice(["faithful", "corrected"]), default="faithful",
              show_default=True, help="Reproduce the official text quirks, or fix them.")
@click.option("--text-encoder", default=None,
              help="BERT id or local folder (paper preset; default Bio_ClinicalBERT, offline).")
@click.option("--epochs", type=int, default=None,
              help="Default 5 (paper, the official schedule), 10 (tiny: about 10 CPU minutes).")
@click.option("--batch-size", type=int, default=None, help="Per process (paper 128, tiny 16).")
@click.option("--lr", type=float, default=None, help="Default 2e-5 (paper), 1e-3 (tiny).")
@click.option("--gamma", type=float, default=0.9, show_default=True,
              help="StepLR decay of the learning rate per epoch (the official value).")
@click.option("--precision", type=click.Choice(["bf16", "fp16", "fp32"]), default=None,
              help="Autocast precision (default bf16 on CUDA, fp32 on CPU).")
@click.option("--out", default=None, help="Output folder (default: the harness cache).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="Loader workers.")
@click.option("--cache", default=None, help="Folder for the one-off uint8 224 frame cache.")
@click.option("--gather-negatives", is_flag=True, help="DDP: negatives from all ranks.")
@click.option("--dataset-arg", multiple=True, metavar="KEY=VALUE",
              help="Adapter option, e.g. exclude_ms_cxr=/data/MS_CXR.json.")
@click.option("--max-steps", type=int, default=None, help="Cap steps per epoch (smoke runs).")
@click.option("--time-budget", type=float, default=None, help="Stop after this many seconds.")
@click.option("--limit", type=int, default=None, help="Use only the first N samples per split.")
@click.option("--compile", "compile_losses", is_flag=True,
              help="torch.compile the local losses (fuses the passes over the B x B x Q x N "
                   "tensors; worth it on a GPU, slow to compile on a CPU); with --local-impl "
                   "gemm, each of its element-wise steps.")
@click.option("--local-impl", type=click.Choice(["einsum", "gemm"]), default="einsum",
              show_default=True,
              help="How the local losses are computed (same values): autograd over einsums, "
                   "or one GEMM layout with a hand-written backward that writes the "
                   "B x B x Q x N tensors fewer times (meant for GPUs; slower eager on a CPU).")
@click.option("--bn-recalibration", type=int, default=None, metavar="N",
              help="After each epoch, recompute batch-norm statistics over N training batches "
                   "(default: tiny 32; paper 0, the official behaviour).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="Run the image backbone in NHWC layout (same results up to float rounding; "
                   "about 10% faster per tiny epoch on a 2-core CPU, and the layout cuDNN's "
                   "tensor-core kernels prefer).")
@click.option("--quiet", is_flag=True)
def train_cmd(method, dataset, root, preset, levels, text_mode, text_encoder, epochs, batch_size,
              lr, gamma, precision, out, resume, device, seed, workers, cache, gather_negatives,
              dataset_arg, max_steps, time_budget, limit, compile_losses, local_impl,
              bn_recalibration, channels_last, quiet) -> None:
    """Pretrain a method and write a checkpoint `bench run` can load."""
    from bench.cli.options import parse_kv
    from bench.methods.afloc.train import TrainRequest, run_training

    dev = resolve_device(device)
    ds_opts = parse_kv(tuple(dataset_arg), flag="--dataset-arg").get(None, {})
    req = TrainRequest(
        dataset=dataset, root=root, preset=preset, levels=levels, text_mode=text_mode,
        text_encoder=text_encoder, epochs=epochs, batch_size=batch_size, lr=lr, gamma=gamma,
        precision=precision or ("bf16" if dev.startswith("cuda") else "fp32"),
        out=out, resume=resume, device=dev, seed=seed, workers=workers, cache=cache,
        gather_negatives=gather_negatives, dataset_options=ds_opts, max_steps=max_steps,
        time_budget=time_budget, limit=limit, compile_losses=compile_losses,
        local_impl=local_impl, bn_recalibration=bn_recalibration, channels_last=channels_last,
        progress=not quiet)
    result = run_training(req, log=click.echo)
    if result.get("rank", 0) != 0:
        return
    click.echo(json.dumps({"out": str(Path(result["out"])), "best": result.get("best"),
                           "epochs": len(result["history"]["epochs"])}))
