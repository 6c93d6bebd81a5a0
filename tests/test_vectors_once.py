"""Vectors held once: a loaded index maps its folder's vectors read-only until a write copies them, the served
Embeddings map theirs, and a copied model dir pairs each index with its own copy of the embeddings."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from annrec.embeddings import Embeddings
from annrec.index import build_index, load_index
from annrec.index.storage import snapshot_folder

RNG = np.random.default_rng(2)
X = RNG.standard_normal((500, 16)).astype(np.float32)


def test_embeddings_load_can_map_the_vectors(tmp_path):
    Embeddings(X, np.arange(500), "l2").save(tmp_path / "e")
    plain, mapped = Embeddings.load(tmp_path / "e"), Embeddings.load(tmp_path / "e", mmap=True)
    assert not plain.mapped and mapped.mapped
    np.testing.assert_array_equal(plain.vectors, mapped.vectors)
    assert plain.vectors.flags.writeable and not mapped.vectors.flags.writeable
    with pytest.raises(ValueError):
        mapped.vectors[0, 0] = 1.0  # the artifact cannot be changed through the map


@pytest.mark.parametrize("backend", ["hnswlib", "faiss"])
def test_a_loaded_index_maps_its_vectors_until_a_write(tmp_path, backend):
    index = build_index(X, np.arange(500), "l2", backend=backend)
    index.save(tmp_path / "i")
    vec_file = snapshot_folder(tmp_path / "i") / "vectors.npy"
    digest = hashlib.sha256(vec_file.read_bytes()).hexdigest()
    loaded = load_index(tmp_path / "i")
    assert not loaded._vec_buf.flags.writeable  # the folder's read-only map
    np.testing.assert_array_equal(loaded.get_vector(7), X[7])
    got = loaded.search(X[:5], 3, allowed_ids=np.arange(0, 500, 7))[0]  # exact search over mapped rows
    assert got[0, 0] == 0 and np.isin(got, np.arange(0, 500, 7)).all()
    loaded.add(X[:2] + 100, [1000, 1001])  # the first write copies the vectors into a growable buffer
    assert loaded._vec_buf.flags.writeable and len(loaded) == 502
    np.testing.assert_array_equal(loaded.get_vector(1001), X[1] + 100)
    loaded.remove([3])
    assert hashlib.sha256(vec_file.read_bytes()).hexdigest() == digest  # the mapped file is never written
    loaded.save(tmp_path / "i")
    again = load_index(tmp_path / "i")
    assert len(again) == 501 and 3 not in again
    np.testing.assert_array_equal(again.get_vector(1000), X[0] + 100)


def test_a_copied_model_dir_pairs_with_its_own_embeddings(tmp_path):
    from _service_fixtures import ADMIN_KEY, READ_KEY, make_model_dir

    from annrec.service.registry import Registry
    from annrec.service.settings import load_settings

    a = make_model_dir(tmp_path / "a", with_text=False, with_sequence=False)
    b = tmp_path / "b"
    shutil.copytree(a, b)  # the indexes' sources still name a's embeddings folder, which exists
    snap = Registry(load_settings(model_dir=b, read_key=READ_KEY, admin_key=ADMIN_KEY)).load()
    srv = snap.indexes["mf-hnsw"]
    assert srv.embeddings_path.resolve() == (b / "mf").resolve()
    assert srv.recommender.embeddings.mapped
    assert "mf" not in snap.indexes  # the embeddings are served through their index, not a second time


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16,SQ8,RFlat", "IVF16,PQ8x4fs,RFlat"])
def test_a_loaded_faiss_index_is_a_view_of_its_file_until_the_first_add(tmp_path, factory, monkeypatch):
    index = build_index(X, np.arange(500), "l2", backend="faiss", factory=factory, nprobe=16)
    want = index.search(X[:20] + 0.01, 5)
    index.save(tmp_path / "i")
    faiss_file = snapshot_folder(tmp_path / "i") / "index.faiss"
    digest = hashlib.sha256(faiss_file.read_bytes()).hexdigest()
    loaded = load_index(tmp_path / "i")
    assert loaded._mapped  # FAISS's IO_FLAG_MMAP_IFC: the codes are views of the file
    got = loaded.search(X[:20] + 0.01, 5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    loaded.add(X[:2] + 100, [1000, 1001])  # FAISS cannot grow a view: the add makes an owned copy first
    assert not loaded._mapped and len(loaded) == 502
    assert set(loaded.search(X[1:2] + 100, 2)[0][0]) == {1000, 1001}
    np.testing.assert_array_equal(loaded.search(X[:20] + 0.01, 5)[0], want[0])
    assert hashlib.sha256(faiss_file.read_bytes()).hexdigest() == digest  # the mapped file is never written
    loaded.save(tmp_path / "i")
    assert len(load_index(tmp_path / "i")) == 502
    monkeypatch.setenv("ANNREC_FAISS_MMAP", "0")
    assert not load_index(tmp_path / "i")._mapped  # read into memory
