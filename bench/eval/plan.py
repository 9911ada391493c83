"""Which runs a `bench run` invocation means: every method on every dataset it can serve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.errors import UsageError
from bench.registry import DATASETS, METHODS, get_dataset, get_method
from bench.types import CLASSIFICATION, LOCALIZATION

from .runner import RunSpec

# The embedded default: baselines (and AFLoc when a checkpoint is available) on the synthetic
# world; `shapes` stands in when the synthetic world is not installed.
DEFAULT_METHODS = ("afloc", "gloria", "convirt", "center", "random", "oracle")
DEFAULT_DATASETS = ("synthetic-rsna", "synthetic-ms-cxr", "synthetic-covid-rural",
                    "synthetic-siim")
FALLBACK_DATASETS = ("shapes",)


@dataclass
class Plan:
    specs: list[RunSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_names() -> tuple[list[str], list[str], list[str]]:
    """The embedded default: the baselines, and each trainable default method (AFLoc) once its
    tiny synthetic-world checkpoint exists (found without importing the method)."""
    from bench.methods.catalog import CATALOG
    from bench.paths import default_checkpoint

    notes = []
    methods = []
    known_methods = METHODS.names()
    for m in DEFAULT_METHODS:
        if m not in known_methods:
            continue
        info = CATALOG.get(m)
        if info and "trainable" in info.capabilities and default_checkpoint(m) is None:
            notes.append(f"{m} left out of the default run: no trained checkpoint found "
                         f"(train one with `bench train {m} --dataset synthetic-mimic "
                         f"--preset tiny`)")
            continue
        methods.append(m)
    known = DATASETS.names()
    datasets = [d for d in DEFAULT_DATASETS if d in known] or list(FALLBACK_DATASETS)
    return methods, datasets, notes


def build_plan(methods: list[str], datasets: list[str], *, tasks: tuple[str, ...],
               base: dict[str, Any], method_options: dict[str, dict[str, Any]],
               dataset_options: dict[str, dict[str, Any]]) -> Plan:
    plan = Plan()
    for d in datasets:
        dcls = get_dataset(d)
        for m in methods:
            mcls = get_method(m)
            mcls.check_options(method_options.get(m, {}))  # a bad value fails before any work
            caps = mcls.capabilities
            served = False
            for task in tasks:
                if task not in dcls.tasks:
                    continue
                if task == LOCALIZATION and not caps.localize:
                    continue
                if task == CLASSIFICATION and not caps.classify:
                    continue
                if task == LOCALIZATION and base.get("prompt") == "precise" and not caps.free_text:
                    plan.notes.append(f"{m} takes no free-text queries: no precise-prompt run "
                                      f"on {d}")
                    continue
                plan.specs.append(RunSpec(method=m, dataset=d, task=task,
                                          method_options=method_options.get(m, {}),
                                          dataset_options=dataset_options.get(d, {}), **base))
                served = True
            if not served:
                plan.notes.append(f"{m} cannot serve {d} (tasks: {', '.join(dcls.tasks)}; "
                                  f"{m} can: {', '.join(caps.as_list()) or 'nothing'})")
    if not plan.specs:
        raise UsageError("nothing to run: " + "; ".join(plan.notes))
    return plan
