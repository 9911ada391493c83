"""Name -> class registries for methods and datasets.

Built-ins register with a decorator when their module is imported. Methods are listed in
`bench.methods.catalog`, which names each built-in's module, so a method's module (and its
model's dependencies) is imported only when a run asks for that method; every dataset module
under `bench.datasets` is imported on first use. Third-party packages add entries through the
entry-point groups `bench.methods` and `bench.datasets`, loaded only when asked for by name (or
listed). A module or plugin that fails to import is recorded as broken: it fails the runs that
ask for it and nothing else. A name defined twice (two classes, or a built-in and a plugin) is
an error naming both origins, raised where that name is used.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from bench.errors import UsageError


@dataclass
class Broken:
    """A registry entry whose module failed to import, or whose name is defined twice."""

    name: str
    origin: str
    error: str
    detail: str

    def fail(self) -> None:
        raise UsageError(f"{self.origin} '{self.name}' failed to load: {self.error}")


def origin_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    def __init__(self, kind: str, package: str, group: str,
                 catalog: Callable[[], dict[str, str]] | None = None):
        """`catalog` (name -> module) lists the built-ins without importing them; without one,
        every module of `package` is imported on first use."""
        self.kind = kind
        self.package = package
        self.group = group
        self.catalog = catalog
        self._entries: dict[str, Any] = {}
        self._broken: dict[str, Broken] = {}
        self._plugins: dict[str, Any] | None = None  # name -> EntryPoint, not yet loaded
        self._builtins_loaded = False
        self._imported: set[str] = set()

    # -- registration -------------------------------------------------------------------
    def register(self, name: str):
        def deco(obj):
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                if origin_of(existing) != origin_of(obj):  # a reloaded module may re-register
                    raise UsageError(f"{self.kind} '{name}' is defined twice: by "
                                     f"{origin_of(existing)} and by {origin_of(obj)}")
            obj.name = name
            self._entries[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: Any) -> None:
        """Register programmatically (tests, notebooks)."""
        self.register(name)(obj)

    # -- discovery ----------------------------------------------------------------------
    def _builtin_names(self) -> dict[str, str]:
        return self.catalog() if self.catalog is not None else {}

    def _import(self, module: str, names: list[str]) -> None:
        if module in self._imported:
            return
        self._imported.add(module)
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken built-in must not take the others down
            for short in names:
                self._broken.setdefault(short, Broken(
                    short, f"built-in {self.kind} module", _one_line(exc),
                    traceback.format_exc()))

    def _load_builtin(self, name: str) -> None:
        """Import the built-in module that defines `name` (catalog), or every module."""
        if self.catalog is not None:
            module = self._builtin_names().get(name)
            if module is not None:
                self._import(module, [name])
                if name not in self._entries and name not in self._broken:
                    self._broken[name] = Broken(name, f"built-in {self.kind}",
                                                f"{module} does not register '{name}'", "")
            return
        self._load_builtins()

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        if self.catalog is not None:
            by_module: dict[str, list[str]] = {}
            for name, module in self._builtin_names().items():
                by_module.setdefault(module, []).append(name)
            for module, names in by_module.items():
                self._import(module, names)
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=self.package + "."):
            short = info.name.rsplit(".", 1)[-1]
            if not short.startswith("_"):
                self._import(info.name, [short])

    def _plugin_points(self) -> dict[str, Any]:
        if self._plugins is None:
            self._plugins = {ep.name: ep for ep in entry_points(group=self.group)}
        return self._plugins

    def _clash(self, name: str) -> Broken | None:
        """A plugin that takes a built-in's name."""
        ep = self._plugin_points().get(name)
        if ep is None:
            return None
        builtin = self._builtin_names().get(name)
        if builtin is None and name in self._entries:
            obj = self._entries[name]
            if not getattr(obj, "__module__", "").startswith("bench."):
                return None  # the plugin itself, already loaded
            builtin = origin_of(obj)
        if builtin is None:
            return None
        return Broken(name, self.kind, f"defined twice: built-in {builtin} and plugin "
                                       f"{ep.value} (entry point group {self.group})", "")

    def _load_plugin(self, name: str) -> None:
        ep = self._plugin_points().get(name)
        if ep is None or name in self._entries or name in self._broken:
            return
        try:
            obj = ep.load()
        except Exception as exc:
            self._broken[name] = Broken(name, f"plugin {self.kind}", _one_line(exc),
                                        traceback.format_exc())
            return
        try:
            self.register(name)(obj)
        except UsageError as exc:
            self._broken[name] = Broken(name, f"plugin {self.kind}", str(exc), "")

    # -- lookup -------------------------------------------------------------------------
    def get(self, name: str):
        if name not in self._entries:
            self._load_builtin(name)
        clash = self._clash(name)
        if clash is not None:
            raise UsageError(f"{self.kind} '{name}' is {clash.error}")
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
        """Every known name; with a catalog, without importing anything."""
        if self.catalog is None:
            self._load_builtins()
        return sorted(set(self._builtin_names()) | set(self._entries)
                      | set(self._plugin_points()))

    def plugin_names(self) -> list[str]:
        return sorted(set(self._plugin_points()) - set(self._builtin_names()))

    def entries(self) -> dict[str, Any]:
        """Every entry, importing every module and plugin; broken ones map to a `Broken`."""
        self._load_builtins()
        for name in self._plugin_points():
            clash = self._clash(name)
            if clash is not None:
                self._broken[name] = clash
                continue
            self._load_plugin(name)
        out: dict[str, Any] = dict(self._broken)
        out.update({k: v for k, v in self._entries.items() if k not in self._broken})
        return dict(sorted(out.items()))

    def load_plugins(self) -> dict[str, Any]:
        """The plugins only (what `bench list methods` must import to describe them)."""
        out: dict[str, Any] = {}
        for name in self.plugin_names():
            self._load_plugin(name)
            out[name] = self._broken.get(name) or self._entries.get(name)
        for name in set(self._plugin_points()) & set(self._builtin_names()):
            out[name] = self._clash(name)
        return dict(sorted(out.items()))


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".strip()


def _method_catalog() -> dict[str, str]:
    from bench.methods.catalog import builtin_modules

    return builtin_modules()


METHODS = Registry("method", "bench.methods", "bench.methods", catalog=_method_catalog)
DATASETS = Registry("dataset", "bench.datasets", "bench.datasets")

register_method = METHODS.register
register_dataset = DATASETS.register


def get_method(name: str):
    return METHODS.get(name)


def get_dataset(name: str):
    return DATASETS.get(name)
