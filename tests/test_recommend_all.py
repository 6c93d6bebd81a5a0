"""``annrec recommend-all``: every user's top-k as Parquet, the same lists as the served Recommender."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _service_fixtures import N_USERS, make_model_dir
from annrec.embeddings import Embeddings
from annrec.index import load_index
from annrec.recommend import Recommender
from annrec.recommend.offline import read_recommendations, recommend_all

COMEDY = {"must": [{"key": "genres", "match": {"value": "Comedy"}}]}


def _expected(d, index=True, **kw):
    emb = Embeddings.load(d / "mf")
    rec = Recommender(emb, load_index(d / "mf-hnsw") if index else None)
    return {int(u): [(r.item_id, round(r.score, 4)) for r in rec.recommend(int(u), 5, **kw)]
            for u in emb.query_ids.tolist()}


def _got(out):
    df = read_recommendations(out)
    got: dict = {}
    for u, i, s in zip(df.user_id.tolist(), df.item_id.tolist(), df.score.tolist()):
        got.setdefault(int(u), []).append((int(i), round(float(s), 4)))
    return df, got


def test_local_run_writes_every_users_served_list(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    m = recommend_all(d / "mf", tmp_path / "recs", index=d / "mf-hnsw", k=5, batch_size=7)
    assert m["users"] == N_USERS and m["rows"] == 5 * N_USERS and m["backend"] == "local"
    df, got = _got(tmp_path / "recs")
    assert list(df.columns) == ["user_id", "rank", "item_id", "score"]
    assert df.groupby("user_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    assert got == _expected(d)
    # a filter and --include-seen reach every list
    recommend_all(d / "mf", tmp_path / "recs", k=5, filter=COMEDY, exclude_seen=False)
    _, got = _got(tmp_path / "recs")
    assert got == _expected(d, index=False, filter=COMEDY, exclude_seen=False)


def test_cli_recommend_all_and_its_errors(tmp_path, monkeypatch, capsys):
    from _mf_fixtures import run_main

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    out = tmp_path / "recs"
    code, text = run_main(["recommend-all", "--embeddings", d / "mf", "--index", d / "mf-hnsw", "-k", "5", "--ef",
                           "64", "--out", out, "--json", tmp_path / "r.json"], monkeypatch, capsys)
    assert code == 0, text
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == 5 * N_USERS
    assert _got(out)[1] == _expected(d)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, text = run_main(["recommend-all", "--embeddings", d / "mf", "--out", mine], monkeypatch, capsys)
    assert code == 2 and "refusing to replace it" in text
    assert (mine / "notes.txt").read_text() == "keep me"
    code, text = run_main(["recommend-all", "--embeddings", d / "mf", "-k", "0", "--out", tmp_path / "x"],
                          monkeypatch, capsys)
    assert code == 2 and "k must be a positive integer" in text
    code, text = run_main(["recommend-all", "--embeddings", d / "mf-hnsw", "--out", tmp_path / "x"],
                          monkeypatch, capsys)
    assert code == 2 and not (tmp_path / "x").exists()


@pytest.mark.ray
def test_ray_data_run_writes_the_same_lists(tmp_path):
    pytest.importorskip("ray")
    import shutil
    import tempfile

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    ray_tmp = tempfile.mkdtemp(prefix="ray-")  # Ray's socket paths must stay under 108 bytes
    import os

    os.environ["ANNREC_RAY_TMP"] = ray_tmp
    try:
        m = recommend_all(d / "mf", tmp_path / "recs", index=d / "mf-hnsw", k=5, batch_size=8, backend="ray")
    finally:
        del os.environ["ANNREC_RAY_TMP"]
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert m["backend"] == "ray" and m["rows"] == 5 * N_USERS
    assert _got(tmp_path / "recs")[1] == _expected(d)
    assert np.isfinite(read_recommendations(tmp_path / "recs").score).all()
