"""MedKLIP's training triplets: the official file layout and the synthetic reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.errors import UsageError
from bench.methods.medklip import triplets
from bench.methods.medklip.names import ANATOMIES, OBSERVATIONS


def write_official(tmp_path):
    labels = np.full((3, 51, 75), -1, dtype=np.int64)
    a_rll, a_heart = ANATOMIES.index("right_lower_lung"), ANATOMIES.index("heart_size")
    labels[1, a_rll, OBSERVATIONS.index("pneumonia")] = 1
    labels[1, a_heart, OBSERVATIONS.index("cardiomegaly")] = 0
    labels[2, :, OBSERVATIONS.index("effusion")] = 0
    np.save(tmp_path / "landmark_observation_adj_mtx.npy", labels)
    ann = {"/data/mimic/files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg": {"labels_id": 1},
           "/data/mimic/files/p10/p10000032/s53189527/2a2277a9-b0ded155.jpg": {"labels_id": 2}}
    (tmp_path / "rad_graph_metric_train.json").write_text(json.dumps(ann))
    return labels


def test_read_official_layout(tmp_path):
    labels = write_official(tmp_path)
    rows, arr = triplets.read_official(tmp_path / "rad_graph_metric_train.json",
                                       tmp_path / "landmark_observation_adj_mtx.npy")
    assert rows == {"02aa804e-bde0afdd": 1, "2a2277a9-b0ded155": 2}
    np.testing.assert_array_equal(arr[1], labels[1])
    exist, index = triplets.sample_triplets(arr[1], np.random.default_rng(0))
    assert exist.shape == (75,) and index.shape == (75, 8)
    assert exist[OBSERVATIONS.index("pneumonia")] == 1
    assert exist[OBSERVATIONS.index("cardiomegaly")] == 0
    assert (np.delete(exist, [20, 24]) == -1).all()
    # a present entity's first position is one of its anatomies
    assert index[20, 0] == ANATOMIES.index("right_lower_lung")
    assert ((index >= 0) & (index < 51)).all()


def test_read_official_refuses_bad_files(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 51, 74)))
    (tmp_path / "a.json").write_text(json.dumps({"x.jpg": {"labels_id": 0}}))
    with pytest.raises(UsageError, match="expected \\(N, 51, 75\\)"):
        triplets.read_official(tmp_path / "a.json", tmp_path / "bad.npy")
    np.save(tmp_path / "ok.npy", np.zeros((1, 51, 75)))
    (tmp_path / "b.json").write_text(json.dumps({"x.jpg": {"labels_id": 4}}))
    with pytest.raises(UsageError, match="labels_id 4 outside"):
        triplets.read_official(tmp_path / "b.json", tmp_path / "ok.npy")


def test_synthetic_matrix_from_a_report():
    report = ("Patchy right lower lobe opacities consistent with pneumonia. Small left pleural "
              "effusion. No pneumothorax. The heart size is normal.")
    labels = {"Pneumonia": 1, "Lung Opacity": 1, "Pleural Effusion": 1, "Pneumothorax": 0,
              "Cardiomegaly": 0, "Edema": -1}
    m = triplets.synthetic_matrix(labels, report)
    col = lambda n: m[:, OBSERVATIONS.index(n)]  # noqa: E731
    assert np.flatnonzero(col("pneumonia") == 1).tolist() == [ANATOMIES.index("right_lower_lung")]
    assert np.flatnonzero(col("opacity") == 1).tolist() == [ANATOMIES.index("right_lower_lung")]
    assert np.flatnonzero(col("effusion") == 1).tolist() == [ANATOMIES.index("left_pleural")]
    assert np.flatnonzero(col("pneumothorax") == 0).tolist() == [ANATOMIES.index("unspecified")]
    assert (col("edema") == -1).all()  # uncertain: left out
    exist, _ = triplets.sample_triplets(m, np.random.default_rng(0))
    assert exist[OBSERVATIONS.index("pneumothorax")] == 0 and exist[20] == 1


def test_official_triplets_match_prepared_pairs_by_dicom_id(tmp_path):
    from types import SimpleNamespace

    from bench.methods.medklip.train import official_pairs

    labels = write_official(tmp_path)
    prepared = SimpleNamespace(frames=np.zeros((3, 4, 4), np.uint8),
                               ids=["2a2277a9-b0ded155", "unknown-id", "02aa804e-bde0afdd"],
                               skipped={}, labels=[{}] * 3, reports=[None] * 3)
    pairs = official_pairs(prepared, str(tmp_path / "rad_graph_metric_train.json"),
                           str(tmp_path / "landmark_observation_adj_mtx.npy"))
    assert pairs.ids == ["2a2277a9-b0ded155", "02aa804e-bde0afdd"]
    assert pairs.index.tolist() == [0, 2]
    np.testing.assert_array_equal(pairs.matrices[0], labels[2])
    np.testing.assert_array_equal(pairs.matrices[1], labels[1])
    assert pairs.skipped == {"not in the triplet file": 1}
