"""The usearch backend behind Index: parameters, per-call ef, filters, deletes, quantised storage, the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.errors import InputError
from annrec.index import build_index, load_index  # imports FAISS first: usearch before FAISS crashes FAISS

pytest.importorskip("usearch")

RNG = np.random.default_rng(4)
X = RNG.standard_normal((3000, 32)).astype(np.float32)
Q = RNG.standard_normal((60, 32)).astype(np.float32)
IDS = np.arange(3000) + 100


def _truth(q, x, k, allowed=None):
    d = ((q[:, None, :] - x[None]) ** 2).sum(-1)
    if allowed is not None:
        d[:, ~allowed] = np.inf
    return IDS[np.argsort(d, axis=1)[:, :k]]


def _recall(a, b):
    return float(np.mean([len(set(r) & set(t)) / len(t) for r, t in zip(a.tolist(), b.tolist())]))


def test_bad_parameters_are_refused():
    for kw, msg in (({"M": 0}, "M"), ({"ef": -1}, "ef"), ({"dtype": "f64"}, "dtype"), ({"nprobe": 4}, "unknown")):
        with pytest.raises(InputError, match=msg):
            build_index(X[:10], IDS[:10], "l2", backend="usearch", **kw)


def test_ef_per_call_raises_recall_and_the_default_comes_back():
    index = build_index(X, IDS, "l2", backend="usearch", M=8, ef_construction=64, ef=10)
    truth = _truth(Q, X, 10)
    low = _recall(index.search(Q, 10)[0], truth)
    high = _recall(index.search(Q, 10, params={"ef": 400})[0], truth)
    assert high > low and high >= 0.98
    assert index.raw.expansion_search == 10
    assert _recall(index.search(Q, 10)[0], truth) == low


def test_allow_lists_large_and_small_and_deletes():
    index = build_index(X, IDS, "l2", backend="usearch", ef=128)
    half = IDS % 2 == 0  # a large allow-list: over-fetch and keep the allowed
    got = index.search(Q, 10, allowed_ids=IDS[half])[0]
    assert np.isin(got, IDS[half]).all() and _recall(got, _truth(Q, X, 10, half)) >= 0.95
    few = np.zeros(len(IDS), dtype=bool)
    few[::500] = True  # 6 items: exact, padded
    got, scores = index.search(Q[:3], 10, allowed_ids=IDS[few])
    assert sorted(got[0][:6].tolist()) == sorted(IDS[few].tolist()) and (got[:, 6:] == -1).all()
    assert np.isnan(scores[:, 6:]).all()
    nearest = index.search(Q[:1], 1)[0][0, 0]
    index.remove([nearest])
    assert nearest not in index.search(Q[:1], 5)[0][0]
    assert len(index) == len(IDS) - 1


def test_quantised_storage_and_inner_product(tmp_path):
    xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    index = build_index(xn, IDS, "ip", backend="usearch", dtype="f16", ef=200)
    ids, scores = index.search(xn[:5], 3)
    assert ids[:, 0].tolist() == IDS[:5].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)  # similarities, as FAISS and hnswlib give them
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    index.save(tmp_path / "u")
    again = load_index(tmp_path / "u")
    assert again.backend == "usearch" and again.params["dtype"] == "f16"
    np.testing.assert_array_equal(again.search(xn[:5], 3)[0], ids)


def test_cli_builds_and_queries_a_usearch_index(tmp_path, monkeypatch, capsys):
    from _mf_fixtures import run_main
    from _service_fixtures import make_model_dir

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    code, text = run_main(["index", "build", "--embeddings", d / "mf", "--backend", "usearch", "--param", "M=8",
                           "--out", tmp_path / "u"], monkeypatch, capsys)
    assert code == 0, text
    code, text = run_main(["index", "query", "--index", tmp_path / "u", "--item", "1005", "-k", "3", "--ef", "64"],
                          monkeypatch, capsys)
    assert code == 0 and "1005" in text, text
    code, text = run_main(["index", "query", "--index", tmp_path / "u", "--item", "1005", "--nprobe", "4"],
                          monkeypatch, capsys)
    assert code == 2 and "--nprobe applies to FAISS IVF indexes" in text


def test_a_usearch_index_is_served_and_takes_writes(tmp_path):
    from _service_fixtures import ADMIN_KEY, DIM, READ_KEY, make_model_dir
    from fastapi.testclient import TestClient

    from annrec.embeddings import Embeddings
    from annrec.service import create_app
    from annrec.service.settings import load_settings

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    e = Embeddings.load(d / "mf")
    index = build_index(e.vectors, e.ids, e.metric, backend="usearch", ef=128)
    index.source = {"embeddings": str((d / "mf").resolve()), "embeddings_name": "mf",
                    "data_hash": e.manifest.get("data_hash")}
    index.save(d / "mf-usearch")
    v = [0.5] * DIM  # the query; the new item points the same way, further than any other (inner product)
    w = [5.0] * DIM
    settings = load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY)
    with TestClient(create_app(settings)) as c:
        info = c.get("/v1/indexes/mf-usearch", headers={"X-API-Key": READ_KEY}).json()
        assert info["backend"] == "usearch" and info["writable"] and info["query_params"] == ["ef"]
        r = c.put("/v1/indexes/mf-usearch/items", headers={"X-API-Key": ADMIN_KEY},
                  json={"items": [{"id": 777777, "vector": w}]})
        assert r.status_code == 200, r.text
        r = c.post("/v1/indexes/mf-usearch/search", headers={"X-API-Key": READ_KEY},
                   json={"vector": v, "k": 3, "ef": 64})
        assert r.status_code == 200 and r.json()["hits"][0]["id"] == 777777
        r = c.post("/v1/indexes/mf-usearch/search", headers={"X-API-Key": READ_KEY},
                   json={"vector": v, "k": 3, "nprobe": 4})
        assert r.status_code == 422
    with TestClient(create_app(settings)) as c:  # a restart replays the write-ahead log
        r = c.post("/v1/indexes/mf-usearch/search", headers={"X-API-Key": READ_KEY}, json={"vector": v, "k": 1})
        assert r.json()["hits"][0]["id"] == 777777
