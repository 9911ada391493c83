"""The method platform: declared options, hooks, the one-model-at-a-time lifecycle, the lazy
registry, weights in the run identity, and light imports of the model modules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict

import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli.main import cli
from bench.errors import UsageError
from bench.eval.runner import Evaluator, RunSpec
from bench.imaging.geometry import ORIGINAL, SQUARE, Frame, map_to_letterbox
from bench.methods.base import Method, Option, fingerprint_path, sha256_file
from bench.registry import METHODS, Registry
from bench.types import Capabilities


class Counted(Method):
    """A method that counts how many of it are alive at once and what the runner called."""

    capabilities = Capabilities(localize=True, classify=True)
    frame = Frame(SQUARE, 32)
    option_specs = {"level": Option(1.0, "the map's constant", float)}
    live = 0
    peak = 0
    calls: list[tuple] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Counted.live += 1
        Counted.peak = max(Counted.peak, Counted.live)
        Counted.calls.append(("build", self.option("level")))

    def bind(self, dataset, protocol):
        Counted.calls.append(("bind", dataset.split, protocol))

    def localize(self, samples, queries):
        assert not self.closed
        return [[np.full((32, 32), self.option("level"), np.float32) for _ in qs]
                for qs in queries]

    def classify(self, samples, pathologies):
        return np.full((len(samples), len(pathologies)), 0.5)

    def close(self):
        Counted.live -= 1
        Counted.calls.append(("close", self.option("level")))
        super().close()


METHODS.add("test-counted", Counted)


def _spec(level: float, task: str = "localization", **kw) -> RunSpec:
    return RunSpec(method="test-counted", dataset="shapes", task=task, n_boot=20,
                   method_options={"level": level}, dataset_options={"n": 6},
                   tag=f"level={level}", **kw)


def test_one_method_alive_at_a_time_and_closed_before_the_next(tmp_path):
    Counted.live = Counted.peak = 0
    Counted.calls = []
    specs = [_spec(1.0), _spec(2.0), _spec(1.0, "classification"), _spec(3.0)]
    results = Evaluator(tmp_path, progress=False).run_all(specs)
    assert Counted.peak == 1 and Counted.live == 0
    # grouped by method: level 1 built once for its two runs, each closed before the next
    builds = [c for c in Counted.calls if c[0] in ("build", "close")]
    assert builds == [("build", 1.0), ("close", 1.0), ("build", 2.0), ("close", 2.0),
                      ("build", 3.0), ("close", 3.0)]
    assert ("bind", "test", "afloc") in Counted.calls
    # results come back in the order asked for
    assert [(r.spec.method_options["level"], r.spec.task) for r in results] == [
        (1.0, "localization"), (2.0, "localization"), (1.0, "classification"),
        (3.0, "localization")]
    # a second pass reuses every run and builds nothing
    Counted.calls = []
    again = Evaluator(tmp_path, progress=False).run_all(specs)
    assert all(r.reused for r in again) and Counted.calls == []


def test_run_json_records_the_input_recipe_of_each_purpose_used(tmp_path):
    from bench.methods.afloc.method import AFLocMethod

    method = AFLocMethod()
    loc = method.describe(("localize",))
    assert loc["inputs"] == {"localize": {"reader": "read_from_dicom", "frame": "letterbox 224",
                                          "normalize": "half"}}
    assert loc["learning"] == "zero-shot image-text" and loc["query_agnostic"] is False
    both = method.describe(("localize", "classify"))
    assert both["inputs"]["classify"] == {"reader": "minmax-uint8",
                                          "frame": "short_side_crop 224", "normalize": "half"}
    assert _spec(1.0, "classification").purposes() == ("classify",)


def test_unknown_method_options_are_errors_with_a_suggestion():
    from bench.methods.baselines import CenterPrior

    with pytest.raises(UsageError, match="has no option 'sigmaa'.*Did you mean 'sigma'"):
        CenterPrior(sigmaa=3)
    with pytest.raises(UsageError, match="option sigma='wide' is not valid"):
        CenterPrior(sigma="wide")
    assert CenterPrior(sigma=0.1).sigma == 0.1


@pytest.mark.parametrize("args, message", [
    (["--method-arg", "center.sigmaa=3"], "method 'center' has no option 'sigmaa'"),
    (["--method-arg", "nosuchmethod.x=1"], "'nosuchmethod' is not a method of this run"),
    (["--method-arg", "sigmaa=3"], "no method of this run has an option 'sigmaa'. Did you mean "
                                   "'sigma'?"),
])
def test_bench_run_refuses_misspelled_method_options(tmp_path, args, message):
    res = CliRunner().invoke(cli, ["run", "--methods", "center,random", "--datasets", "shapes",
                                   "--results-dir", str(tmp_path), "--quiet", *args])
    assert res.exit_code != 0
    assert message in str(res.exception) + res.output


def test_a_shared_option_goes_to_the_methods_that_declare_it(tmp_path):
    res = CliRunner().invoke(cli, ["run", "--methods", "center,random", "--datasets", "shapes",
                                   "--task", "localization", "--bootstrap", "10",
                                   "--method-arg", "sigma=0.1", "--results-dir", str(tmp_path),
                                   "--quiet", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    runs = {r["method"]: json.loads((tmp_path / r["run_id"] / "run.json").read_text())
            for r in json.loads(res.output)["runs"]}
    assert runs["center"]["method_info"]["config"] == {"sigma": 0.1}
    assert runs["random"]["method_info"]["config"] == {"seed": 0}


def _fake_package(tmp_path, monkeypatch, body: str):
    pkg = tmp_path / "fakemethods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ok.py").write_text(textwrap.dedent("""
        import fakemethods
        fakemethods.REG.register("ok")(type("Ok", (), {}))
    """))
    (pkg / "heavy.py").write_text(body)
    (pkg / "__init__.py").write_text("from bench.registry import Registry\nREG = Registry("
                                     "'thing', 'fakemethods', 'none.group', catalog=lambda: "
                                     "{'ok': 'fakemethods.ok', 'heavy': 'fakemethods.heavy'})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakemethods

    return fakemethods.REG


def test_the_registry_imports_a_module_only_when_its_name_is_asked_for(tmp_path, monkeypatch):
    reg: Registry = _fake_package(tmp_path, monkeypatch,
                                  "raise ImportError('needs a 5 GB dependency')\n")
    assert reg.names() == ["heavy", "ok"]
    assert "fakemethods.heavy" not in sys.modules and "fakemethods.ok" not in sys.modules
    assert reg.get("ok").name == "ok"
    assert "fakemethods.heavy" not in sys.modules
    with pytest.raises(UsageError, match="failed to load: ImportError: needs a 5 GB dependency"):
        reg.get("heavy")


def test_a_name_defined_twice_is_an_error_naming_both(tmp_path, monkeypatch):
    reg = Registry("thing", "nothing", "none.group", catalog=dict)

    class A:
        pass

    class B:
        pass

    reg.add("x", A)
    reg.add("x", A)  # the same class again is fine (a module imported twice)
    with pytest.raises(UsageError, match=r"'x' is defined twice: by .*:.*A and by .*:.*B"):
        reg.add("x", B)


def test_bench_list_methods_imports_no_model(tmp_path):
    code = ("import sys; from bench.cli.main import main\n"
            "try:\n    main(['list', 'methods', '--json'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'bench.methods.afloc.method', 'transformers', "
            "'scipy', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout[:r.stdout.rindex("HEAVY")])
    assert {e["name"] for e in listed} >= {"afloc", "center", "random", "oracle", "human"}
    afloc = next(e for e in listed if e["name"] == "afloc")
    assert afloc["learning"] == "zero-shot image-text" and "Table 1" in afloc["paper"]
    assert next(e for e in listed if e["name"] == "center")["query_agnostic"] is True
    assert r.stdout.strip().endswith("HEAVY []")


def test_weights_named_by_a_folder_count_by_content(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (folder / "config.json").write_text("{}")
    first = fingerprint_path(folder)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("x")  # hidden files do not count
    assert fingerprint_path(folder) == first
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\nlung\n")
    assert fingerprint_path(folder) != first

    def spec(**opts):
        return RunSpec(method="afloc", dataset="shapes", method_options=opts)

    with_folder = spec(text_encoder=str(folder))
    assert with_folder.identity()["weights"]["text_encoder"]["content"] == fingerprint_path(folder)
    before = with_folder.fingerprint()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    assert spec(text_encoder=str(folder)).fingerprint() != before
    # an id that is not in the offline cache is named as such (loading it fails anyway)
    hub = spec(text_encoder="nobody/no-such-model").identity()["weights"]["text_encoder"]
    assert hub == {"source": "nobody/no-such-model", "snapshot": None}


def test_run_identity_is_unchanged_where_no_weights_are_named(tmp_path):
    """Existing result folders stay valid: the identity of a run that names no folder or hub
    weights is computed exactly as before the method platform (the dict below is that code)."""
    import hashlib

    import torch

    from bench.methods._shared.checkpoints import save_weights

    ckpt = tmp_path / "w.safetensors"
    save_weights(ckpt, {"w": torch.zeros(2)}, {"preset": "tiny"}, None)
    for spec in (RunSpec(method="center", dataset="shapes", method_options={"sigma": 0.2}),
                 RunSpec(method="afloc", dataset="synthetic-rsna", split="test",
                         method_options={"checkpoint": str(ckpt)}, data_stamp="w")):
        old = asdict(spec)
        for k in ("device", "batch_size", "keep_maps"):
            old.pop(k)
        if old["data_stamp"] is None:
            old.pop("data_stamp")
        old.pop("inputs")  # data-file stamps (issue 18) are absent for in-memory/synthetic sets
        if spec.method_options.get("checkpoint"):
            old["checkpoint_sha256"] = sha256_file(ckpt)
        blob = json.dumps(old, sort_keys=True, default=str).encode()
        assert spec.fingerprint() == hashlib.sha256(blob).hexdigest()[:16]
    # where it changes: an official (pickled) AFLoc checkpoint reads its tokenizer from the
    # Hugging Face cache, which the identity now names
    official = tmp_path / "official.ckpt"
    torch.save({"state_dict": {}}, official)
    spec = RunSpec(method="afloc", dataset="shapes", method_options={"checkpoint": str(official)})
    assert spec.identity()["weights"]["text_encoder"]["source"] == (
        "emilyalsentzer/Bio_ClinicalBERT")


def test_figures_store_the_map_the_protocol_scores(tmp_path):
    """`--keep-maps` stores each map on the 224 letterbox by the protocol's own mapping (NaN
    where the method saw nothing), not by a second copy of it."""
    from bench.datasets.shapes import Shapes
    from bench.eval.protocols.afloc import map_to_afloc_frame

    class Original(Counted):
        frame = Frame(ORIGINAL)

        def localize(self, samples, queries):
            return [[np.arange(s.hw[0] * s.hw[1], dtype=np.float32).reshape(s.hw) for _ in qs]
                    for s, qs in zip(samples, queries)]

    METHODS.add("test-original-frame", Original)
    spec = RunSpec(method="test-original-frame", dataset="shapes", n_boot=10, keep_maps=2,
                   dataset_options={"n": 3, "height": 40, "width": 90})
    result = Evaluator(tmp_path, progress=False).run(spec)
    stored = sorted((result.path / "maps").glob("*.npz"))
    assert stored
    sample = Shapes(n=3, height=40, width=90).load(0)
    heat = np.load(stored[0])["heatmap"]
    want = map_to_afloc_frame(np.arange(40 * 90, dtype=np.float32).reshape(40, 90),
                              Frame(ORIGINAL), sample.hw)
    np.testing.assert_array_equal(heat, want)
    assert np.isnan(heat[0, 0]) and np.array_equal(want, map_to_letterbox(
        np.arange(3600, dtype=np.float32).reshape(40, 90), Frame(ORIGINAL), (40, 90)),
        equal_nan=True)


def test_the_model_modules_need_only_torch_torchvision_numpy_and_transformers():
    """benchmarks/train_step.py runs on a GPU box with nothing else installed."""
    code = textwrap.dedent("""
        import sys
        for name in ("pandas", "scipy", "cv2", "sklearn", "pydicom", "pyarrow", "click",
                     "matplotlib", "open_clip", "pytorch_grad_cam"):
            sys.modules[name] = None  # `import name` fails, as where it is not installed
        for m in ("bench.methods.afloc.model", "bench.methods._shared.contrastive",
                  "bench.methods._shared.bert_text", "bench.methods.afloc.presets"):
            __import__(m)
        from bench.methods.afloc import presets
        from bench.methods.afloc.model import AFLocModel
        cfg = presets.preset_config("tiny")
        cfg.bert["vocab_size"] = 50
        AFLocModel(cfg)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--datasets", "shapes", "--dataset-arg", "nn=3"],
     "no dataset of this run has an option 'nn'. Did you mean 'n'?"),
    (["--datasets", "shapes", "--dataset-arg", "shapes.heigth=30"],
     "dataset 'shapes' has no option 'heigth' (--dataset-arg). Did you mean 'height'?"),
])
def test_misspelled_dataset_options_are_refused(tmp_path, args, message):
    res = CliRunner().invoke(cli, ["run", "--methods", "center", "--results-dir", str(tmp_path),
                                   "--quiet", *args])
    assert res.exit_code != 0 and message in str(res.exception)


def test_an_adapter_knows_its_options_and_its_twins():
    from bench.datasets.shapes import Shapes
    from bench.registry import get_dataset

    assert Shapes.option_names() == ["height", "n", "seed", "width"]
    twin = get_dataset("synthetic-rsna").option_names()
    assert {"scale", "seed", "world", "positives_only", "split_list"} <= set(twin)
    with pytest.raises(UsageError, match="dataset 'shapes' has no option 'positives_only'"):
        Shapes(positives_only=True)
