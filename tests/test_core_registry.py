"""Registries: built-ins, third-party plugins through entry points, broken plugins isolated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.registry import DATASETS, METHODS, Registry


def test_builtins_are_registered():
    assert {"random", "center", "oracle"} <= set(METHODS.names())
    assert "shapes" in DATASETS.names()


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UsageError, match="Did you mean: oracle"):
        METHODS.get("oracel")


def test_broken_builtin_module_fails_only_itself(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(textwrap.dedent("""
        from bench.registry import Registry
        import fakepkg
        fakepkg.REG.register("good")(type("Good", (), {}))
    """))
    (pkg / "bad.py").write_text("raise ImportError('missing dependency foo')\n")
    (pkg / "__init__.py").write_text(
        "from bench.registry import Registry\nREG = Registry('thing', 'fakepkg', 'none.group')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakepkg

    reg: Registry = fakepkg.REG
    assert reg.get("good").name == "good"
    with pytest.raises(UsageError, match="failed to load: ImportError: missing dependency foo"):
        reg.get("bad")


PLUGIN_SETUP = """
from setuptools import setup
setup(
    name="bench-plugin-demo", version="0.0.1",
    py_modules=["bench_plugin_demo", "bench_plugin_broken"],
    entry_points={
        "bench.methods": ["plugin-constant = bench_plugin_demo:ConstantMethod",
                          "plugin-broken = bench_plugin_broken:Nothing"],
        "bench.datasets": ["plugin-squares = bench_plugin_demo:Squares"],
    },
)
"""

PLUGIN_MODULE = '''
import numpy as np
from bench.datasets.base import Dataset
from bench.methods.base import Method
from bench.types import Capabilities, Finding, Sample


class ConstantMethod(Method):
    capabilities = Capabilities(localize=True)
    description = "plugin: a constant map"

    def localize(self, samples, queries):
        return [[np.ones((224, 224), np.float32) for _ in qs] for qs in queries]


class Squares(Dataset):
    tasks = ("localization",)
    pathologies = ("Square",)
    description = "plugin: four squares"
    needs_root = False

    def __len__(self):
        return 4

    def load(self, i):
        m = np.zeros((64, 64), np.uint8)
        m[8 * i:8 * i + 16, 10:30] = 1
        return Sample(id=f"sq{i}", image=(m * 200).astype(np.uint8),
                      findings=[Finding("Square", "Square", mask=m)])
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    src = tmp_path_factory.mktemp("plugin_src")
    (src / "setup.py").write_text(PLUGIN_SETUP)
    (src / "bench_plugin_demo.py").write_text(PLUGIN_MODULE)
    (src / "bench_plugin_broken.py").write_text("import a_module_that_does_not_exist\n")
    site = tmp_path_factory.mktemp("plugin_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(src)],
                   check=True, capture_output=True)
    return site


def _bench(args, site: Path, cwd: Path):
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, "-m", "bench.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_installed_plugin_is_listed_and_runs(plugin_site, tmp_path):
    r = _bench(["list", "methods", "--json"], plugin_site, tmp_path)
    assert r.returncode == 0, r.stderr
    entries = {e["name"]: e for e in json.loads(r.stdout)}
    assert entries["plugin-constant"]["capabilities"] == ["localize"]
    assert "ModuleNotFoundError" in entries["plugin-broken"]["broken"]
    r = _bench(["list", "datasets"], plugin_site, tmp_path)
    assert "plugin-squares" in r.stdout

    r = _bench(["run", "--methods", "plugin-constant,oracle", "--datasets", "plugin-squares",
                "--bootstrap", "50", "--json", "--quiet"], plugin_site, tmp_path)
    assert r.returncode == 0, r.stderr
    runs = {x["method"]: x for x in json.loads(r.stdout)["runs"]}
    assert set(runs) == {"plugin-constant", "oracle"}
    assert runs["oracle"]["summary"]["metrics"]["iou"]["overall"]["dataset_mean"] == 1.0


def test_broken_plugin_fails_only_its_run(plugin_site, tmp_path):
    r = _bench(["run", "--methods", "plugin-broken", "--datasets", "plugin-squares", "--quiet"],
               plugin_site, tmp_path)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "plugin method 'plugin-broken' failed to load" in err[0]
