"""bench.data_paths: --root, then $BENCH_DATA/<name>, then the TOML mapping."""

from __future__ import annotations

import pytest

from bench.data_paths import read_config, resolve_root
from bench.errors import DataError, UsageError


def test_precedence(tmp_path, monkeypatch):
    explicit, env_root, mapped = tmp_path / "explicit", tmp_path / "env", tmp_path / "mapped"
    for p in (explicit, env_root / "rsna", mapped):
        p.mkdir(parents=True)
    toml = tmp_path / "data.toml"
    toml.write_text('rsna = "mapped"\n[datasets]\nsiim = "~/nowhere-siim"\n')
    monkeypatch.setenv("BENCH_DATA_TOML", str(toml))
    # only the [datasets] table counts when it exists
    assert set(read_config()) == {"siim"}
    toml.write_text('rsna = "mapped"\nsiim = "/abs/siim"\n')
    assert read_config()["rsna"] == mapped  # relative to the TOML file
    assert resolve_root("rsna") == mapped
    monkeypatch.setenv("BENCH_DATA", str(env_root))
    assert resolve_root("rsna") == env_root / "rsna"
    assert resolve_root("rsna", explicit) == explicit
    with pytest.raises(DataError, match="does not exist"):
        resolve_root("siim")  # mapped, but the folder is absent
    with pytest.raises(UsageError, match="--root PATH"):
        resolve_root("chexlocalize")
    with pytest.raises(DataError, match="root folder does not exist"):
        resolve_root("rsna", tmp_path / "absent")


def test_default_toml_location_and_bad_toml(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    cfg = tmp_path / "afloc-bench" / "data.toml"
    cfg.parent.mkdir()
    (tmp_path / "d").mkdir()
    cfg.write_text(f'"ms-cxr" = "{tmp_path / "d"}"\n')
    assert resolve_root("ms-cxr") == tmp_path / "d"
    cfg.write_text("rsna = [unclosed\n")
    with pytest.raises(DataError, match="not valid TOML"):
        resolve_root("rsna")
    monkeypatch.setenv("BENCH_DATA_TOML", str(tmp_path / "missing.toml"))
    with pytest.raises(UsageError, match="BENCH_DATA_TOML"):
        resolve_root("rsna")
