"""Index layer: exactness, recall, ids, filters, updates, persistence and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _index_fixtures import brute_force, fashion_mnist
from annrec.errors import ArtifactError, DataNotFoundError, InputError, UnknownIdError
from annrec.index import (FaissIndex, HnswIndex, PynndescentIndex, UsearchIndex, build_index, load_index, suggest_nlist,
                          suggest_pq_m)
from annrec.index.spec import IndexSpec

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2000, 24)).astype(np.float32)
Q = RNG.standard_normal((50, 24)).astype(np.float32)
IDS = np.arange(2000) * 7 + 3  # external ids differ from row numbers

BACKEND_CLASSES = {"faiss": FaissIndex, "hnswlib": HnswIndex, "usearch": UsearchIndex, "pynndescent": PynndescentIndex}
BACKENDS = [("faiss", {"factory": "Flat"}), ("faiss", {"factory": "HNSW32", "efSearch": 256}),
            ("faiss", {"factory": "IVF{nlist},Flat", "nprobe": 64}), ("hnswlib", {"ef": 256}),
            ("usearch", {"ef": 256}), ("pynndescent", {"epsilon": 0.4})]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(found, truth)]))


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_faiss_flat_equals_numpy_brute_force(metric):
    index = build_index(X, IDS, metric, backend="faiss", factory="Flat")
    ids, scores = index.search(Q, 10)
    order, ref = brute_force(X, Q, 10, metric)
    np.testing.assert_array_equal(ids, IDS[order])
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("backend,params", BACKENDS)
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_every_backend_finds_the_true_neighbours(backend, params, metric):
    index = build_index(X, IDS, metric, backend=backend, **params)
    ids, scores = index.search(Q, 10)
    order, ref = brute_force(X, Q, 10, metric)
    assert recall(ids, IDS[order]) >= 0.9
    # scores are the metric's own values: sorted best-first
    diffs = np.diff(scores, axis=1)
    assert (diffs >= -1e-4).all() if metric == "l2" else (diffs <= 1e-4).all()


def test_string_ids_and_missing_slots():
    names = np.array([f"item-{i}" for i in range(len(X))], dtype=object)
    index = build_index(X, names, "l2", backend="hnswlib")
    ids, scores = index.search(Q[:2], 5, allowed_ids=["item-1", "item-2", "item-3", "nope"])
    assert set(ids[0][:3]) == {"item-1", "item-2", "item-3"}
    assert ids[0][3] is None and np.isnan(scores[0][3])


@pytest.mark.parametrize("backend,params", BACKENDS)
def test_allow_and_deny_lists(backend, params):
    index = build_index(X, IDS, "ip", backend=backend, **params)
    allowed = IDS[::3]  # large allow-list: goes through the backend's own filter
    ids, _ = index.search(Q, 10, allowed_ids=allowed)
    assert np.isin(ids, allowed).all()
    order, _ = brute_force(X[::3], Q, 10, "ip")
    assert recall(ids, allowed[order]) >= 0.9
    small = IDS[:40]  # small allow-list: exact search
    ids, _ = index.search(Q, 10, allowed_ids=small)
    order, _ = brute_force(X[:40], Q, 10, "ip")
    np.testing.assert_array_equal(ids, small[order])
    denied = IDS[:1000]
    ids, _ = index.search(Q, 10, denied_ids=denied)
    assert not np.isin(ids, denied).any()


@pytest.mark.parametrize("backend,params", BACKENDS)
def test_remove_and_upsert(backend, params):
    index = build_index(X, IDS, "l2", backend=backend, **params)
    ids, _ = index.search(Q[:1], 3)
    nearest = ids[0][0]
    index.remove([nearest])
    assert nearest not in index and len(index) == len(X) - 1
    ids2, _ = index.search(Q[:1], 3)
    assert nearest not in ids2[0]
    with pytest.raises(UnknownIdError, match="unknown id"):
        index.remove([nearest])
    # upsert: put an id exactly on the query, and replace an existing id's vector
    index.add(Q[:1], [999_999])
    ids3, scores3 = index.search(Q[:1], 1)
    assert ids3[0][0] == 999_999 and scores3[0][0] == pytest.approx(0.0, abs=1e-3)
    index.add(Q[:1] + 100, [999_999])
    assert len(index) == len(X)  # replaced, not duplicated
    ids4, _ = index.search(Q[:1], 1)
    assert ids4[0][0] != 999_999
    np.testing.assert_allclose(index.get_vector(999_999), Q[0] + 100)


@pytest.mark.parametrize("backend,params", BACKENDS + [("faiss", {"factory": "IVF16,PQ8x4", "nprobe": 4})])
def test_save_load_round_trip(tmp_path, backend, params):
    index = build_index(X, IDS, "cosine", backend=backend, **params)
    index.remove([IDS[5]])
    index.add(Q[:2], [10**9, 10**9 + 1], items={10**9: {"title": "new"}})
    ids, scores = index.search(Q, 10)
    index.save(tmp_path / "idx")
    from annrec.index.storage import snapshot_folder

    manifest = json.loads((snapshot_folder(tmp_path / "idx") / "manifest.json").read_text())
    assert manifest["backend"] == backend and manifest["count"] == len(X) + 1 and manifest["dim"] == 24
    loaded = load_index(tmp_path / "idx")
    ids2, scores2 = loaded.search(Q, 10)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5, atol=1e-5)
    assert IDS[5] not in loaded and loaded.items[10**9] == {"title": "new"}
    assert type(loaded) is BACKEND_CLASSES[backend]


def test_crash_during_save_keeps_the_previous_index(tmp_path, monkeypatch):
    index = build_index(X, IDS, "l2", backend="hnswlib")
    index.save(tmp_path / "idx")
    def listing():  # the lock files of a versioned folder are created by the first switch and stay
        return sorted(p.name for p in (tmp_path / "idx").iterdir() if not p.name.endswith(".lock"))

    before = listing()
    index.add(Q[:1], [123_456_789])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "idx")
    monkeypatch.undo()
    assert listing() == before
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary leftovers
    assert 123_456_789 not in load_index(tmp_path / "idx")


def test_bad_input_is_rejected_with_clear_messages(tmp_path):
    index = build_index(X, IDS, "l2", backend="faiss")
    with pytest.raises(InputError, match="dimension 23 but the index expects 24"):
        index.search(Q[:, :23], 5)
    bad = Q.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN or Inf.*row 3"):
        index.search(bad, 5)
    with pytest.raises(InputError, match="NaN or Inf"):
        index.add(np.full((1, 24), np.inf, dtype=np.float32), [1])
    for k in (0, -1):
        with pytest.raises(InputError, match="k must be >= 1"):
            index.search(Q, k)
    with pytest.raises(InputError, match="larger than the 2000 items"):
        index.search(Q, 2001)
    with pytest.raises(InputError, match="ef \\(efSearch\\) applies to an HNSW index"):
        index.search(Q, 5, params={"ef": 10})
    with pytest.raises(InputError, match="duplicates"):
        build_index(X[:3], [1, 1, 2], "l2")
    with pytest.raises(InputError, match="3 ids for 2 vectors"):
        build_index(X[:2], [1, 2, 3], "l2")
    with pytest.raises(InputError, match="unknown metric"):
        build_index(X, IDS, "hamming")
    with pytest.raises(InputError, match="unknown index backend 'annoy'"):
        build_index(X, IDS, "l2", backend="annoy")
    with pytest.raises(InputError, match="unknown hnswlib parameter"):
        build_index(X, IDS, "l2", backend="hnswlib", nprobe=3)
    with pytest.raises(InputError, match="needs at least 4096 training vectors"):
        build_index(X, IDS, "l2", backend="faiss", factory="IVF4096,Flat")
    with pytest.raises(InputError, match="FAISS cannot build"):
        build_index(X, IDS, "l2", backend="faiss", factory="IVF16,PQ7")
    with pytest.raises(InputError, match="zero vector"):
        build_index(np.zeros((3, 4), np.float32), [1, 2, 3], "cosine")
    with pytest.raises(InputError, match="same type"):
        index.add(Q[:1], ["a-string"])


def test_loading_wrong_or_damaged_folders(tmp_path):
    with pytest.raises(DataNotFoundError, match="no artifact folder"):
        load_index(tmp_path / "missing")
    h = build_index(X, IDS, "l2", backend="hnswlib")
    h.save(tmp_path / "h")
    with pytest.raises(ArtifactError, match="holds a 'hnswlib' index, not a 'faiss' one"):
        FaissIndex.load(tmp_path / "h")
    m = json.loads((tmp_path / "h" / "manifest.json").read_text())
    m["format_version"] = 99
    (tmp_path / "h" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="newer than this annrec"):
        load_index(tmp_path / "h")
    f = build_index(X, IDS, "l2", backend="faiss")
    f.save(tmp_path / "f")
    from annrec.index.storage import snapshot_folder

    (snapshot_folder(tmp_path / "f") / "index.faiss").unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        load_index(tmp_path / "f")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "manifest.json").write_text('{"kind": "annrec.embeddings", "format_version": 1}')
    with pytest.raises(ArtifactError, match="not 'annrec.index'"):
        load_index(tmp_path / "e")


def test_suggest_nlist_and_specs(tmp_path):
    assert suggest_nlist(9742) == 128 and suggest_nlist(60_000) == 1024 and suggest_nlist(100) == 2 and suggest_nlist(10) == 1
    assert suggest_pq_m(65) == 13 and suggest_pq_m(784) == 56 and suggest_pq_m(32) == 8
    x32 = RNG.standard_normal((2000, 16)).astype(np.float32)
    presets = sorted(Path("index").glob("*.yaml"))
    assert len(presets) >= 4
    for preset in presets:
        spec = IndexSpec.from_yaml(preset)
        index = build_index(x32, np.arange(2000), "ip", backend=spec.backend, **spec.params)
        assert index.search(x32[:5], 1)[0][:, 0].tolist() == list(range(5)) or "PQ" in spec.params["factory"]
    (tmp_path / "bad.yaml").write_text("backend: annoy\nparams: {}\n")
    with pytest.raises(InputError, match="not a valid index spec"):
        IndexSpec.from_yaml(tmp_path / "bad.yaml")


@pytest.mark.slow
def test_hnsw_recall_on_fashion_mnist():
    """HNSW recall@10 >= 0.95 on real vectors (Fashion-MNIST, ANN-Benchmarks' euclidean set)."""
    train, test = fashion_mnist(10_000, 200)
    truth, _ = build_index(train, np.arange(len(train)), "l2", backend="faiss").search(test, 10)
    for backend, params in [("hnswlib", {"M": 16, "ef_construction": 100, "ef": 64}),
                            ("faiss", {"factory": "HNSW32", "efSearch": 64})]:
        index = build_index(train, np.arange(len(train)), "l2", backend=backend, **params)
        ids, _ = index.search(test, 10)
        assert recall(ids, truth) >= 0.95, backend
        single = np.concatenate([index.search(q, 10, threads=1)[0] for q in test[:20]])
        np.testing.assert_array_equal(single, ids[:20])  # one at a time == batch
