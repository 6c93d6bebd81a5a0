"""``annrec quickstart`` end to end on ml-latest-small (3 epochs, short sweep; slow)."""

from __future__ import annotations

import json

import pytest

from annrec.embeddings import Embeddings
from annrec.index import load_index

from _mf_fixtures import DATA_DIR, have_movielens, quickstart_dir, run_main

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_movielens(), reason="ml-latest-small not found (set ANNREC_DATA_DIR)")]


@pytest.fixture(scope="module")
def qs():
    out = quickstart_dir()
    return out, json.loads((out.parent / "quickstart.json").read_text()), (out.parent / "quickstart.out").read_text()


def test_layout_the_server_loads(qs):
    out, _, _ = qs
    emb = Embeddings.load(out / "mf")
    hnsw, ivf = load_index(out / "mf-hnsw"), load_index(out / "mf-ivf")
    assert emb.manifest["trainer"] == "mf" and emb.metric == "ip" and emb.dim == 17  # --factors 16, plus the bias
    assert hnsw.backend == "hnswlib" and ivf.backend == "faiss" and ivf.params["factory_resolved"].startswith("IVF")
    for idx in (hnsw, ivf):
        assert len(idx) == len(emb) and idx.source["embeddings_name"] == "mf"
        assert idx.source["embeddings"] == str((out / "mf").resolve()) and idx.items
    from annrec.service.registry import discover

    found = discover(out)
    assert set(found.indexes) == {"mf-hnsw", "mf-ivf"} and "mf" in found.embeddings


def test_reported_figures(qs):
    _, rep, text = qs
    assert 0.8 < rep["rating"]["rmse"] < 1.0 and 0.8 < rep["rating"]["bias_baseline_rmse"] < 0.9
    table = rep["topn"]["table"]
    assert set(table) == {"mf (exact)", "mf via mf-hnsw (ef=64)", "mf via mf-ivf (nprobe=8)", "bias only (exact)",
                          "popularity"}
    assert all(row["users"] == 610 for row in table.values())
    assert abs(table["mf via mf-hnsw (ef=64)"]["recall@10"] - table["mf (exact)"]["recall@10"]) < 0.01
    rows = {(r["index"], r.get("ef", r.get("nprobe"))): r for r in rep["recall_qps"]["rows"]}
    assert set(rows) == {("mf-hnsw", 10), ("mf-hnsw", 80), ("mf-ivf", 1), ("mf-ivf", 16)}
    # a wider search finds more of the exact neighbours; one IVF list of many is far from exact
    assert rows[("mf-hnsw", 80)]["recall@10"] > max(0.9, rows[("mf-hnsw", 10)]["recall@10"])
    assert rows[("mf-ivf", 16)]["recall@10"] > rows[("mf-ivf", 1)]["recall@10"]
    assert rows[("mf-ivf", 1)]["recall@10"] < 0.9
    ex = rep["example"]
    assert ex["user"] == "1" and len(ex["results"]) == 10 and all(r["title"] for r in ex["results"])
    # what the user sees
    flat = " ".join(text.split())
    for needle in ("RMSE", "bias-only baseline RMSE", "recall@10 vs QPS", "ef=80", "nprobe=16",
                   ex["results"][0]["title"][:10], "quickstart finished"):
        assert needle in flat, needle


def test_topn_figures_equal_a_recomputation(qs):
    """The popularity row and the exact MF row equal annrec.metrics' top-N protocol recomputed here on the same
    temporal split, from the data and from the written Embeddings (exact maximum inner product search)."""
    import numpy as np

    from annrec.data import load_movielens, temporal_user_split
    from annrec.metrics import dot_recommender, evaluate_topn, popularity_recommender

    out, rep, _ = qs
    table = rep["topn"]["table"]
    inter = load_movielens("ml-latest-small", data_dir=DATA_DIR, progress=False)
    train, test = temporal_user_split(inter, 0.2)
    pop = evaluate_topn(popularity_recommender(train), train, test, k=10)
    emb = Embeddings.load(out / "mf")
    qrow = {u: r for r, u in enumerate(emb.query_ids.tolist())}
    users = emb.queries[[qrow[u] for u in train.user_ids.tolist()]]
    # the artifact holds the items rated in the training part; the others cannot be recommended
    rows = {v: r for r, v in enumerate(emb.ids.tolist())}
    have = np.array([i in rows for i in train.item_ids.tolist()])
    items = np.zeros((train.n_items, emb.dim), dtype=np.float32)
    items[have] = emb.vectors[[rows[i] for i in train.item_ids[have].tolist()]]
    exact = dot_recommender(users, items)
    never = list(np.flatnonzero(~have))
    mf = evaluate_topn(lambda u, k, seen: exact(u, k, [np.union1d(s, never) for s in seen]), train, test, k=10)
    for name, ref in (("popularity", pop), ("mf (exact)", mf)):
        for m in ("recall@10", "ndcg@10"):
            assert table[name][m] == pytest.approx(ref[m], abs=6e-4), (name, m)


def test_bad_options(tmp_path, monkeypatch, capsys):
    code, out = run_main(["quickstart", "--out", tmp_path / "q", "--ef", "10,x"], monkeypatch, capsys)
    assert code == 2 and "--ef must be comma-separated positive integers" in out
    code, out = run_main(["quickstart", "--out", tmp_path / "q", "--nprobe", "0"], monkeypatch, capsys)
    assert code == 2 and "--nprobe" in out
    code, out = run_main(["quickstart", "--out", tmp_path / "q", "--epochs", "0"], monkeypatch, capsys)
    assert code == 2 and "epochs must be" in out
    assert not (tmp_path / "q").exists()
