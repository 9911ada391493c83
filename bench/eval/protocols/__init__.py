"""Evaluation protocols by name: `get_protocol("afloc", **options)`."""

from __future__ import annotations

from typing import Any

from bench.errors import UsageError
from bench.eval.protocols.afloc import AflocProtocol
from bench.eval.protocols.base import Protocol
from bench.eval.protocols.chexlocalize import ChexlocalizeProtocol
from bench.eval.protocols.medklip import MedklipRsnaProtocol

PROTOCOLS: dict[str, type[Protocol]] = {
    AflocProtocol.name: AflocProtocol,
    ChexlocalizeProtocol.name: ChexlocalizeProtocol,
    MedklipRsnaProtocol.name: MedklipRsnaProtocol,
}


def get_protocol(name: str, **options: Any) -> Protocol:
    """An instance of the named protocol; unknown names and options raise `UsageError`."""
    try:
        cls = PROTOCOLS[name]
    except KeyError:
        raise UsageError(
            f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}"
        ) from None
    return cls(**options)


__all__ = ["PROTOCOLS", "AflocProtocol", "ChexlocalizeProtocol", "MedklipRsnaProtocol", "Protocol",
           "get_protocol"]
