"""What the `bench reproduce` tests share: a minimal plan and the CLI run in-process."""

from __future__ import annotations

from bench.cli.main import main as bench_main

# one AFLoc training and its MS-CXR evaluation at the micro scale
MINI = """\
version = 1

[scales.micro]
preset = "tiny"
seeds = [1]
data = "synthetic"

[[train]]
method = "afloc"
dataset = "mimic-cxr"

[[eval]]
name = "ms-cxr"
fills = ["table-1"]
methods = ["afloc"]
datasets = ["ms-cxr"]
task = "localization"
[eval.checkpoints]
afloc = "afloc-default"
"""


def bench_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`bench ARGS` in this process: (exit code, stdout, stderr)."""
    code = 0
    try:
        bench_main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
