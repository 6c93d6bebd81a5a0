"""Data set formats of annrec.bench: ANN-Benchmarks HDF5, TEXMEX vecs, IDX, .npy, Embeddings; bad files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from annrec.bench.datasets import (
    Dataset,
    download,
    fashion_mnist,
    from_embeddings,
    load_dataset,
    read_hdf5,
    read_idx,
    read_vecs,
    write_hdf5,
    write_vecs,
)
from annrec.embeddings import Embeddings
from annrec.errors import DataError, DataNotFoundError, InputError

from _bench_fixtures import synthetic


def test_hdf5_round_trip_keeps_everything(tmp_path):
    ds = synthetic(metric="cosine")
    nb = np.tile(np.arange(10, dtype=np.int32), (len(ds.test), 1))
    full = Dataset(ds.name, ds.train, ds.test, "angular", nb, np.linspace(0, 1, nb.size).reshape(nb.shape))
    path = write_hdf5(full, tmp_path / "x.hdf5")
    back = read_hdf5(path)
    np.testing.assert_array_equal(back.train, ds.train)
    np.testing.assert_array_equal(back.test, ds.test)
    np.testing.assert_array_equal(back.neighbors, nb)
    assert back.metric == "cosine" and back.distance == "angular"
    with h5py.File(path) as f:  # the attributes ANN-Benchmarks writes
        assert f.attrs["distance"] == "angular" and f.attrs["type"] == "dense"
        assert f.attrs["dimension"] == ds.dim and f["neighbors"].dtype == np.int32


@pytest.mark.parametrize("suffix,dtype", [(".fvecs", np.float32), (".ivecs", np.int32), (".bvecs", np.uint8)])
def test_vecs_round_trip(tmp_path, suffix, dtype):
    a = (np.random.default_rng(1).random((37, 11)) * 200).astype(dtype)
    p = write_vecs(tmp_path / f"a{suffix}", a)
    assert p.stat().st_size == 37 * (4 + 11 * np.dtype(dtype).itemsize)
    b = read_vecs(p)
    assert b.dtype == dtype
    np.testing.assert_array_equal(a, b)


def test_fvecs_layout_matches_texmex(tmp_path):
    # one record written by hand: int32 dim, then the floats, little-endian
    p = tmp_path / "hand.fvecs"
    p.write_bytes(struct.pack("<i3f", 3, 1.0, 2.5, -4.0) + struct.pack("<i3f", 3, 0, 0, 1))
    np.testing.assert_array_equal(read_vecs(p), [[1.0, 2.5, -4.0], [0, 0, 1]])


def test_truncated_and_corrupt_vecs_are_clear_errors(tmp_path):
    p = write_vecs(tmp_path / "a.fvecs", np.ones((5, 4), np.float32))
    blob = p.read_bytes()
    p.write_bytes(blob[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_vecs(p)
    bad = bytearray(blob)
    bad[20:24] = struct.pack("<i", 7)  # second record claims dimension 7
    p.write_bytes(bytes(bad))
    with pytest.raises(DataError, match="record 1"):
        read_vecs(p)
    (tmp_path / "e.fvecs").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_vecs(tmp_path / "e.fvecs")


def test_missing_truncated_unknown_files(tmp_path):
    with pytest.raises(DataNotFoundError):
        load_dataset(tmp_path / "nope.hdf5")
    with pytest.raises(DataNotFoundError, match="annrec bench download"):
        load_dataset("no-such-dataset-name", cache_dir=tmp_path)
    ds = synthetic()
    p = write_hdf5(ds, tmp_path / "t.hdf5")
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated|not a readable HDF5"):
        load_dataset(p)
    (tmp_path / "x.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match="unknown data set format"):
        load_dataset(tmp_path / "x.csv")
    (tmp_path / "fake.hdf5").write_text("not hdf5")
    with pytest.raises(DataError):
        load_dataset(tmp_path / "fake.hdf5")


def test_hdf5_missing_parts_and_unknown_distance(tmp_path):
    p = tmp_path / "a.hdf5"
    with h5py.File(p, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"] = np.ones((3, 2), np.float32)
    with pytest.raises(DataError, match="test"):
        read_hdf5(p)
    with h5py.File(p, "w") as f:
        f.attrs["distance"] = "jaccard"
        f["train"] = np.ones((3, 2), np.float32)
        f["test"] = np.ones((1, 2), np.float32)
    with pytest.raises(DataError, match="jaccard"):
        read_hdf5(p)


def test_ground_truth_of_wrong_shape_is_rejected(tmp_path):
    ds = synthetic()
    with pytest.raises(DataError, match="does not match"):
        Dataset("x", ds.train, ds.test, "l2", neighbors=np.zeros((len(ds.test) + 1, 10), np.int32))
    with pytest.raises(DataError, match="does not match"):
        Dataset("x", ds.train, ds.test, "l2", neighbors=np.full((len(ds.test), 10), len(ds.train), np.int32))
    with pytest.raises(DataError, match="dimension"):
        Dataset("x", ds.train, ds.test[:, :3], "l2")


def test_raw_vector_files_need_metric_and_pair_queries(tmp_path):
    ds = synthetic()
    write_vecs(tmp_path / "base.fvecs", ds.train)
    write_vecs(tmp_path / "query.fvecs", ds.test)
    with pytest.raises(InputError, match="metric"):
        load_dataset(tmp_path / "base.fvecs")
    got = load_dataset(tmp_path / "base.fvecs", queries=tmp_path / "query.fvecs", metric="euclidean")
    assert got.name == "base" and got.metric == "l2" and len(got.test) == len(ds.test)
    np.save(tmp_path / "b.npy", ds.train)
    held = load_dataset(tmp_path / "b.npy", metric="ip", n_queries=50)
    assert len(held.test) == 50 and len(held.train) == len(ds.train) - 50
    write_vecs(tmp_path / "gt.ivecs", np.zeros((len(ds.test) + 2, 5), np.int32))
    with pytest.raises(DataError, match="does not match"):
        load_dataset(tmp_path / "base.fvecs", queries=tmp_path / "query.fvecs", metric="l2",
                     groundtruth=tmp_path / "gt.ivecs")


def test_idx_reader_and_its_errors(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    blob = bytes([0, 0, 8, 3]) + struct.pack(">3i", 2, 3, 4) + imgs.tobytes()
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(blob))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), imgs)
    (tmp_path / "b.idx").write_bytes(blob[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "b.idx")
    (tmp_path / "c.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "c.idx")
    with pytest.raises(DataNotFoundError):
        fashion_mnist(tmp_path)


def test_embeddings_artifact_as_dataset(tmp_path):
    rng = np.random.default_rng(0)
    emb = Embeddings(rng.standard_normal((300, 8)).astype(np.float32), np.arange(300) * 3, "ip",
                     queries=rng.standard_normal((40, 8)).astype(np.float32), query_ids=np.arange(40))
    emb.save(tmp_path / "emb")
    users = load_dataset(tmp_path / "emb")
    assert users.metric == "ip" and len(users.train) == 300 and len(users.test) == 40
    items = from_embeddings(tmp_path / "emb", queries="items", n_queries=30)
    assert len(items.test) == 30 and len(items.train) == 270
    held = set(items.meta["held_out_item_ids"])
    assert len(held) == 30
    with pytest.raises(InputError):
        from_embeddings(tmp_path / "emb", queries="items", n_queries=300)


def test_download_fails_clearly_offline(tmp_path):
    with pytest.raises(DataNotFoundError, match="offline|cannot download"):
        download("glove-25-angular", tmp_path, url="http://127.0.0.1:9/glove-25-angular.hdf5", timeout=2)
    assert not list((tmp_path / "data").glob("*"))  # nothing half-written
    with pytest.raises(InputError):
        download("../etc/passwd", tmp_path)


def test_downloaded_file_is_validated(tmp_path):
    # a "download" of a non-HDF5 payload (file:// URL) must not be kept
    src = tmp_path / "junk.bin"
    src.write_bytes(b"<html>not found</html>")
    with pytest.raises((DataError, DataNotFoundError)):
        download("junk", tmp_path / "cache", url=src.as_uri())
    assert not (tmp_path / "cache" / "data" / "junk.hdf5").exists()


@pytest.mark.slow
def test_fashion_mnist_from_debian_idx():
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    ds = fashion_mnist()
    assert ds.train.shape == (60000, 784) and ds.test.shape == (10000, 784)
    assert ds.train.dtype == np.float32 and ds.metric == "l2" and ds.name == "fashion-mnist-784-euclidean"
    assert 0 <= ds.train.min() and ds.train.max() == 255  # raw pixel values, as ANN-Benchmarks
