"""Exceptions the CLI turns into one clear line and an exit code."""

from __future__ import annotations


class BenchError(Exception):
    """A failure the user can act on; the CLI prints the message alone (exit 1)."""

    exit_code = 1


class UsageError(BenchError):
    """Bad arguments or an unknown name (exit 2)."""

    exit_code = 2


class DataError(BenchError):
    """Malformed or missing input data; the message names the file and, where known, the row."""

    def __init__(self, message: str, path: object = None, row: object = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.row = row


class CheckpointError(BenchError):
    """A checkpoint that cannot be loaded safely or does not match the model."""


class StorageError(BenchError):
    """A result file could not be written (disk full, no permission); names the path."""

    def __init__(self, path: object, exc: OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        super().__init__(f"{path}: cannot write ({reason})")
        self.path = path
