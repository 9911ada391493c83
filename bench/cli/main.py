"""`bench`: the command line. Each verb lives in its own module and is imported only when used.

Errors the user can act on (`BenchError`) print one line and exit 1 (2 for usage); `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from bench.errors import BenchError

# verb -> "module:attribute"; modules are imported lazily so `bench list` stays fast and a
# broken verb only breaks itself.
COMMANDS = {
    "list": "bench.cli.list_cmd:list_cmd",
    "run": "bench.cli.run_cmd:run_cmd",
    "score": "bench.cli.score_cmd:score_cmd",
    "export-maps": "bench.cli.export_cmd:export_cmd",
    "synth": "bench.cli.synth_cmd:synth_cmd",
    "data": "bench.cli.data_cmd:data_cmd",
    "train": "bench.cli.train_cmd:train_cmd",
    "table": "bench.cli.report_cmd:table_cmd",
    "figure": "bench.cli.report_cmd:figure_cmd",
    "report": "bench.cli.report_cmd:report_cmd",
    "reproduce": "bench.cli.reproduce_cmd:reproduce_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._importable(name)]

    @staticmethod
    def _importable(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._importable(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="afloc-bench", prog_name="bench")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Annotation-free pathology localization benchmark (AFLoc and peers)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or os.environ.get("BENCH_DEBUG") == "1"


_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except _NO_ARGS as exc:  # `bench` alone, `bench data`: the help text, as click gives it
        exc.show()
        sys.exit(2)
    except click.UsageError as exc:  # one line, as every other error (bad option values too)
        ctx = exc.ctx
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BenchError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if debug:
            traceback.print_exc()
        else:
            click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for a traceback)",
                       err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
