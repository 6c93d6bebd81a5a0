"""The loader refuses inconsistent index folders with one ArtifactError naming the file and what disagrees."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annrec.errors import ArtifactError
from annrec.index import build_index, load_index
from annrec.index.storage import snapshot_folder

RNG = np.random.default_rng(0)
X = RNG.normal(size=(100, 8)).astype(np.float32)


@pytest.fixture(params=["hnswlib", "faiss"])
def folder(request, tmp_path):
    index = build_index(X, np.arange(100), "l2", backend=request.param)
    return index.save(tmp_path / request.param)


def _cut_ids(folder, n):
    path = snapshot_folder(folder)
    ids = json.loads((path / "ids.json").read_text())[:n]
    (path / "ids.json").write_text(json.dumps(ids))
    np.save(path / "deleted.npy", np.zeros(n, dtype=bool))
    np.save(path / "vectors.npy", X[:n])
    m = json.loads((path / "manifest.json").read_text())
    m["count"] = n
    (path / "manifest.json").write_text(json.dumps(m))


def test_backend_file_with_more_elements_than_ids(folder):
    _cut_ids(folder, 90)
    with pytest.raises(ArtifactError, match="100 vectors|rebuild"):
        load_index(folder)


def test_ids_cut_shorter_than_vectors(folder):
    ids = json.loads((snapshot_folder(folder) / "ids.json").read_text())[:95]
    (snapshot_folder(folder) / "ids.json").write_text(json.dumps(ids))
    with pytest.raises(ArtifactError, match="deleted.npy has 100 marks for 95 ids"):
        load_index(folder)


def test_vectors_of_another_dimension(folder):
    np.save(snapshot_folder(folder) / "vectors.npy", np.zeros((100, 7), dtype=np.float32))
    with pytest.raises(ArtifactError, match=r"vectors.npy has shape \(100, 7\) but the manifest says dim 8"):
        load_index(folder)


def test_items_json_that_is_not_json(folder):
    (snapshot_folder(folder) / "items.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="items.json is not valid item metadata"):
        load_index(folder)


def test_faiss_metric_changed_in_the_manifest(tmp_path):
    path = build_index(X, np.arange(100), "l2", backend="faiss").save(tmp_path / "f")
    m = json.loads((snapshot_folder(path) / "manifest.json").read_text())
    m["metric"] = "ip"
    (snapshot_folder(path) / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="another FAISS metric"):
        load_index(path)


def test_a_consistent_folder_loads_and_answers_the_same(folder):
    index = load_index(folder)
    assert (index.search(X[:5], 3)[0][:, 0] == np.arange(5)).all()
