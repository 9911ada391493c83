"""Name -> class registries for methods and datasets.

Built-ins register with a decorator when their module is imported; every module under
`bench.methods` / `bench.datasets` is imported on first use. Third-party packages add entries
through the entry-point groups `bench.methods` and `bench.datasets`; those are loaded only when
asked for by name (or listed). A module or plugin that fails to import is recorded as broken:
it fails the runs that ask for it and nothing else. Built-ins win on name clashes.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from bench.errors import UsageError


@dataclass
class Broken:
    """A registry entry whose module failed to import."""

    name: str
    origin: str
    error: str
    detail: str

    def fail(self) -> None:
        raise UsageError(f"{self.origin} '{self.name}' failed to load: {self.error}")


class Registry:
    def __init__(self, kind: str, package: str, group: str):
        self.kind = kind
        self.package = package
        self.group = group
        self._entries: dict[str, Any] = {}
        self._broken: dict[str, Broken] = {}
        self._plugins: dict[str, Any] | None = None  # name -> EntryPoint, not yet loaded
        self._builtins_loaded = False

    # -- registration -------------------------------------------------------------------
    def register(self, name: str):
        def deco(obj):
            if name in self._entries and self._entries[name] is not obj:
                existing = self._entries[name]
                if getattr(existing, "__module__", "").startswith("bench."):
                    return obj  # built-ins win
            obj.name = name
            self._entries[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: Any) -> None:
        """Register programmatically (tests, notebooks)."""
        self.register(name)(obj)

    # -- discovery ----------------------------------------------------------------------
    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=self.package + "."):
            short = info.name.rsplit(".", 1)[-1]
            if short.startswith("_"):
                continue
            try:
                importlib.import_module(info.name)
            except Exception as exc:  # a broken built-in must not take the others down
                self._broken.setdefault(
                    short,
                    Broken(short, f"built-in {self.kind} module", _one_line(exc),
                           traceback.format_exc()),
                )

    def _plugin_points(self) -> dict[str, Any]:
        if self._plugins is None:
            self._plugins = {ep.name: ep for ep in entry_points(group=self.group)}
        return self._plugins

    def _load_plugin(self, name: str) -> None:
        ep = self._plugin_points().get(name)
        if ep is None or name in self._entries:
            return
        try:
            obj = ep.load()
        except Exception as exc:
            self._broken[name] = Broken(name, f"plugin {self.kind}", _one_line(exc),
                                        traceback.format_exc())
            return
        if name not in self._entries:
            self.register(name)(obj)

    # -- lookup -------------------------------------------------------------------------
    def get(self, name: str):
        self._load_builtins()
        if name not in self._entries:
            self._load_plugin(name)
        if name in self._entries:
            return self._entries[name]
        if name in self._broken:
            self._broken[name].fail()
        choices = self.names()
        close = difflib.get_close_matches(name, choices, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UsageError(
            f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(choices)} "
            f"(see `bench list {self.kind}s`)."
        )

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(set(self._entries) | set(self._plugin_points()))

    def entries(self) -> dict[str, Any]:
        """Every entry, loading plugins; broken ones map to a `Broken`."""
        self._load_builtins()
        for name in self._plugin_points():
            self._load_plugin(name)
        out: dict[str, Any] = dict(self._broken)
        out.update(self._entries)
        return dict(sorted(out.items()))


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".strip()


METHODS = Registry("method", "bench.methods", "bench.methods")
DATASETS = Registry("dataset", "bench.datasets", "bench.datasets")

register_method = METHODS.register
register_dataset = DATASETS.register


def get_method(name: str):
    return METHODS.get(name)


def get_dataset(name: str):
    return DATASETS.get(name)
