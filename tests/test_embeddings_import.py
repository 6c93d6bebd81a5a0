"""``annrec embeddings import`` from each format, then an index and a search on the result."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from annrec.embeddings import Embeddings
from annrec.index import build_index

from _mf_fixtures import run_main

RNG = np.random.default_rng(0)
X = RNG.normal(size=(120, 6)).astype(np.float32)
IDS = np.arange(500, 620)


def _write(fmt, tmp_path):
    if fmt == "npy":
        p = tmp_path / "v.npy"
        np.save(p, X)
    elif fmt == "fvecs":
        from annrec.bench.datasets import write_vecs

        p = write_vecs(tmp_path / "v.fvecs", X)
    elif fmt == "hdf5":
        import h5py

        p = tmp_path / "v.hdf5"
        with h5py.File(p, "w") as f:
            f.create_dataset("train", data=X)
            f.create_dataset("test", data=X[:5])
            f.attrs["distance"] = "euclidean"
    elif fmt == "parquet":
        p = tmp_path / "v.parquet"
        pd.DataFrame({"item_id": IDS, "vector": [row.tolist() for row in X]}).to_parquet(p)
    else:
        p = tmp_path / "v.csv"
        pd.DataFrame({"item_id": IDS, **{f"d{j}": X[:, j] for j in range(X.shape[1])}}).to_csv(p, index=False)
    return p


@pytest.mark.parametrize("fmt", ["npy", "fvecs", "hdf5", "parquet", "csv"])
def test_import_each_format_then_search(fmt, tmp_path, monkeypatch, capsys):
    src = _write(fmt, tmp_path)
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": IDS, "title": [f"Thing {i}" for i in IDS], "genres": ["a|b"] * len(IDS)}).to_csv(
        items, index=False)
    args = ["embeddings", "import", src, "--out", tmp_path / "emb", "--items", items]
    if fmt in ("parquet", "csv"):
        args += ["--id-col", "item_id"]
    else:
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(map(str, IDS)))
        args += ["--ids", ids_file]
    code, out = run_main(args, monkeypatch, capsys)
    assert code == 0, out
    emb = Embeddings.load(tmp_path / "emb")
    assert np.allclose(emb.vectors, X) and emb.ids.tolist() == IDS.tolist()
    assert emb.metric == ("l2" if fmt == "hdf5" else "cosine")
    assert emb.items[IDS[3]] == {"title": f"Thing {IDS[3]}", "genres": ["a", "b"]}
    code, out = run_main(["index", "build", "--embeddings", tmp_path / "emb", "--backend", "faiss", "--out",
                          tmp_path / "idx"], monkeypatch, capsys)
    assert code == 0, out
    report = tmp_path / "r.json"
    code, out = run_main(["similar", str(IDS[0]), "--embeddings", tmp_path / "emb", "--index", tmp_path / "idx",
                          "-k", "3", "--json", report], monkeypatch, capsys)
    assert code == 0, out
    got = json.loads(report.read_text())["results"]
    exact = build_index(X, IDS, emb.metric, backend="faiss", factory="Flat").search(X[0], 4)[0][0][1:]
    assert [r["id"] for r in got] == exact.tolist() and got[0]["title"].startswith("Thing")


def test_import_errors_are_one_line(tmp_path, monkeypatch, capsys):
    def fails(args, needle):
        code, out = run_main(args, monkeypatch, capsys)
        assert code == 2 and out.startswith("error:") and needle in out, out

    npy = _write("npy", tmp_path)
    short = tmp_path / "ids.txt"
    short.write_text("1\n2\n")
    fails(["embeddings", "import", npy, "--ids", short, "--out", tmp_path / "e"], "2 ids for 120 vectors")
    fails(["embeddings", "import", tmp_path / "v.bin", "--out", tmp_path / "e"], "no file at")
    (tmp_path / "v.bin").write_bytes(b"xx")
    fails(["embeddings", "import", tmp_path / "v.bin", "--out", tmp_path / "e"], "unknown vector format")
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,d0,d1\n1,0.5,x\n2,0.1,0.2\n")
    fails(["embeddings", "import", bad, "--id-col", "item_id", "--out", tmp_path / "e"], "not numeric")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[1.0, np.nan]], dtype=np.float32))
    fails(["embeddings", "import", nan, "--out", tmp_path / "e"], "NaN")
    fails(["embeddings", "import", npy, "--metric", "hamming", "--out", tmp_path / "e"], "metric")
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_import_fashion_mnist_vectors_and_search_them(tmp_path, monkeypatch, capsys):
    from annrec.bench.datasets import FASHION_MNIST_DIR, read_idx

    path = FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    x = read_idx(path)[:3000].reshape(3000, -1).astype(np.float32)
    np.save(tmp_path / "fm.npy", x)
    code, out = run_main(["embeddings", "import", tmp_path / "fm.npy", "--metric", "l2", "--out", tmp_path / "fm"],
                         monkeypatch, capsys)
    assert code == 0, out
    code, out = run_main(["index", "build", "--embeddings", tmp_path / "fm", "--backend", "hnswlib", "--out",
                          tmp_path / "fm-hnsw"], monkeypatch, capsys)
    assert code == 0, out
    from annrec.index import load_index

    index = load_index(tmp_path / "fm-hnsw")
    found = index.search(x[:100], 10)[0]
    exact = build_index(x, np.arange(3000), "l2", backend="faiss", factory="Flat").search(x[:100], 10)[0]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), exact.tolist())])
    assert recall > 0.9
