"""`bench train METHOD`: train any trainable method on a registered dataset.

Single process: ``bench train afloc --dataset synthetic-mimic --preset tiny``.
Multi-GPU / multi-node: ``torchrun --nproc_per_node 8 -m bench.cli.main train afloc ...``
(DDP; ``--gather-negatives`` uses every rank's pairs as negatives).

The options below are every method's; a method's own (``bench train METHOD --help`` lists them)
are options too, or ``--method-arg NAME=VALUE``. ``--config FILE`` (TOML or YAML) holds a whole
request: the same names (``dataset = "synthetic-mimic"``, ``epochs = 3``) with the method's own
options under ``[method_options]`` and the adapter's under ``[dataset_options]``; what the
command line gives wins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bench.cli.options import parse_kv, resolve_device

COMMAND_LINE = click.core.ParameterSource.COMMANDLINE
META_KEY = "bench.train.method"


def _method_params(name: str | None) -> list[click.Parameter]:
    """The method's declared training options as click options (none if it is unknown)."""
    if not name:
        return []
    from bench.errors import UsageError
    from bench.methods.base import parse_bool
    from bench.registry import get_method

    try:
        cls = get_method(name)
    except UsageError:
        return []  # reported by the METHOD argument
    params: list[click.Parameter] = []
    for key, spec in cls.train_option_specs.items():
        flag = "--" + key.replace("_", "-")
        help_text = f"[{name}] {spec.help}"
        if isinstance(spec.default, bool) or spec.parse is parse_bool:
            params.append(click.Option([f"{flag}/--no-{flag[2:]}", key], default=spec.default,
                                       show_default=True, help=help_text))
            continue
        kind: Any = click.Choice([str(c) for c in spec.choices]) if spec.choices else None
        params.append(click.Option([flag, key], type=kind, default=None, help=help_text
                                   + (f" [default: {spec.default}]" if spec.default is not None
                                      else "")))
    return params


class TrainCommand(click.Command):
    """`bench train METHOD ...`: the shared options plus the ones METHOD declares."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[META_KEY] = _method_name(args, self.params)
        return super().parse_args(ctx, args)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        return params[:-1] + _method_params(ctx.meta.get(META_KEY)) + params[-1:]


def _method_name(args: list[str], params: list[click.Parameter]) -> str | None:
    """The first argument that is not an option or an option's value."""
    takes_value = {o for p in params if isinstance(p, click.Option) and not p.is_flag
                   for o in p.opts}
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a.startswith("-"):
            skip = a in takes_value
            continue
        return a
    return None


@click.command("train", cls=TrainCommand)
@click.argument("method")
@click.option("--dataset", default=None, help="Training set: mimic-cxr, synthetic-mimic, or any "
              "registered adapter with what the method needs (pairs, labels, normal images).")
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="Dataset folder (synthetic sets: the world folder, default the cache).")
@click.option("--preset", default=None, help="paper (the official recipe) or tiny (CPU minutes).")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="TOML or YAML file holding a whole training request.")
@click.option("--method-arg", multiple=True, metavar="NAME=VALUE",
              help="A method option (the same as its --name VALUE).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Default: the preset's (afloc: paper 5, tiny 10).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Per process (default: the preset's).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the preset's).")
@click.option("--precision", type=click.Choice(["bf16", "fp16", "fp32"]), default=None,
              help="Autocast precision (default bf16 on CUDA, fp32 on CPU).")
@click.option("--out", default=None, help="Output folder (default: the harness cache).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=None, help="Training seed (default 1).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op CPU threads (default 2 on CPU, whatever the machine has, so the "
                   "same command trains the same model on any machine of the same CPU kind).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Loader workers (default 0).")
@click.option("--cache", default=None, help="Folder for the one-off uint8 pre-frame cache.")
@click.option("--gather-negatives", is_flag=True, default=None,
              help="DDP: negatives from all ranks.")
@click.option("--dataset-arg", multiple=True, metavar="KEY=VALUE",
              help="Adapter option, e.g. exclude_ms_cxr=/data/MS_CXR.json.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Cap steps per epoch (smoke runs).")
@click.option("--max-total-steps", type=click.IntRange(min=1), default=None,
              help="Stop after this many optimizer steps in all.")
@click.option("--time-budget", type=float, default=None, help="Stop after this many seconds.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use only the first N samples per split.")
@click.option("--compile", "compile_", is_flag=True, default=None,
              help="torch.compile what the method says benefits (afloc: the local losses, "
                   "worth it on a GPU, slow to compile on a CPU).")
@click.option("--bn-recalibration", type=click.IntRange(min=0), default=None, metavar="N",
              help="After each epoch, recompute batch-norm statistics over N training batches "
                   "(default: the preset's; afloc tiny 32, paper 0, the official behaviour).")
@click.option("--channels-last/--no-channels-last", default=None,
              help="Run image backbones in NHWC layout (same results up to float rounding; "
                   "faster on CPU and the layout cuDNN's tensor-core kernels prefer) "
                   "[default: on].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def train_cmd(ctx: click.Context, method: str, config_file: str | None,
              method_arg: tuple[str, ...], dataset_arg: tuple[str, ...], quiet: bool,
              **given: Any) -> None:
    """Train METHOD and write a checkpoint `bench run` can load."""
    from bench.train.run import run_training

    req = _request(ctx, method, config_file, method_arg, dataset_arg, quiet, given)
    result = run_training(req, log=click.echo)
    if result.get("rank", 0) != 0:
        return
    click.echo(json.dumps({"out": str(Path(result["out"])), "best": result.get("best"),
                           "epochs": len(result["history"]["epochs"])}))


SHARED = {"dataset", "root", "preset", "epochs", "batch_size", "lr", "precision", "out",
          "resume", "device", "seed", "threads", "workers", "cache", "gather_negatives",
          "max_steps", "max_total_steps", "time_budget", "limit", "bn_recalibration",
          "channels_last"}


def _request(ctx: click.Context, method: str, config_file: str | None,
             method_arg: tuple[str, ...], dataset_arg: tuple[str, ...], quiet: bool,
             given: dict[str, Any]) -> Any:
    """Defaults < --config file < command line."""
    from bench.errors import UsageError
    from bench.registry import get_method
    from bench.train.run import TrainRequest

    cls = get_method(method)
    own = set(cls.train_option_specs)
    config = read_config(config_file) if config_file else {}
    if config.get("method", method) != method:
        raise UsageError(f"{config_file} is a request for '{config['method']}', not '{method}'")
    fields: dict[str, Any] = {k: v for k, v in config.items()
                              if k not in ("method", "method_options", "dataset_options")}
    unknown = set(fields) - SHARED - {"compile", "progress"}
    if unknown:
        raise UsageError(f"{config_file}: unknown request field(s) {', '.join(sorted(unknown))} "
                         f"(method options go under [method_options])")
    method_options = dict(config.get("method_options") or {})
    dataset_options = dict(config.get("dataset_options") or {})
    for key, value in given.items():
        if value is None:
            continue
        name = "compile" if key == "compile_" else key
        if key in own:
            method_options[key] = value
        elif ctx.get_parameter_source(key) == COMMAND_LINE or name not in fields:
            fields[name] = value
    method_options.update(parse_kv(method_arg, flag="--method-arg").get(None, {}))
    dataset_options.update(parse_kv(dataset_arg, flag="--dataset-arg").get(None, {}))
    if not fields.get("dataset"):
        raise UsageError("bench train needs --dataset (or `dataset` in --config)")
    device = resolve_device(fields.pop("device", "auto"))
    precision = fields.pop("precision", None) or ("bf16" if device.startswith("cuda")
                                                  else "fp32")
    fields.setdefault("preset", "paper")
    fields.setdefault("seed", 1)
    fields.setdefault("workers", 0)
    return TrainRequest(method=method, device=device, precision=precision,
                        method_options=method_options, dataset_options=dataset_options,
                        progress=not quiet and fields.pop("progress", True), **fields)


def read_config(path: str) -> dict[str, Any]:
    """A training request from a TOML or YAML file (a mapping at the top level)."""
    from bench.errors import DataError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror})", p) from exc
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except Exception as exc:
        raise DataError(f"not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'TOML'}"
                        f" ({str(exc).splitlines()[0]})", p) from exc
    if not isinstance(data, dict):
        raise DataError("expected a mapping of request fields at the top level", p)
    return data
