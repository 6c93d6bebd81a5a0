"""Payload filters: every operator, errors that name the problem, and filtered recommendations on MovieLens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annrec.errors import InputError
from annrec.recommend.filters import allowed_ids

from _mf_fixtures import have_movielens, quickstart_dir, run_main

ITEMS = {
    1: {"title": "A", "genres": ["Comedy", "Drama"], "year": 1995},
    2: {"title": "B", "genres": ["Action"], "year": 2003},
    3: {"title": "C", "genres": ["Comedy"], "year": 2010, "rating": None},
    4: {"title": "D", "genres": [], "year": 1980, "rating": 4.5},
}


@pytest.mark.parametrize("spec, want", [
    ({"must": [{"key": "genres", "match": {"value": "Comedy"}}]}, [1, 3]),
    ({"must": [{"key": "genres", "match": {"any": ["Action", "Drama"]}}]}, [1, 2]),
    ({"must": [{"key": "title", "match": {"value": "B"}}]}, [2]),
    ({"must": [{"key": "year", "range": {"gte": 2000, "lt": 2010}}]}, [2]),
    ({"must": [{"key": "year", "range": {"gt": 1995, "lte": 2010}}]}, [2, 3]),
    ({"must": [{"key": "rating", "is_null": True}]}, [1, 2, 3]),
    ({"must": [{"key": "rating", "is_null": False}]}, [4]),
    ({"should": [{"key": "year", "range": {"lt": 1990}}, {"key": "title", "match": {"value": "A"}}]}, [1, 4]),
    ({"must_not": [{"key": "genres", "match": {"value": "Comedy"}}]}, [2, 4]),
    ({"must": [{"should": [{"key": "year", "range": {"lt": 1990}}, {"key": "year", "range": {"gt": 2005}}]}],
      "must_not": [{"key": "rating", "is_null": False}]}, [3]),
])
def test_every_operator(spec, want):
    assert allowed_ids(spec, ITEMS) == want
    assert allowed_ids(json.dumps(spec), ITEMS) == want  # the CLI's JSON text


@pytest.mark.parametrize("spec, needle", [
    ("{not json", "not valid JSON"),
    ({"musst": []}, "unknown filter clause(s) ['musst']"),
    ({"must": [{"key": "genre", "match": {"value": "x"}}]}, "unknown metadata key 'genre'"),
    ({"must": [{"key": "year", "range": {"from": 1}}]}, "unknown range operator(s) ['from']"),
    ({"must": [{"key": "year", "between": [1, 2]}]}, "exactly one of 'match', 'range', 'is_null'"),
    ({"must": [{"key": "year", "range": {"gte": "2000"}}]}, "must be a number"),
    ({"must": []}, "non-empty list"),
])
def test_errors_name_the_problem(spec, needle):
    with pytest.raises(InputError) as e:
        allowed_ids(spec, ITEMS)
    assert needle in str(e.value)


@pytest.mark.slow
@pytest.mark.skipif(not have_movielens(), reason="ml-latest-small not found (set ANNREC_DATA_DIR)")
def test_filtered_recommendations_on_movielens(tmp_path, monkeypatch, capsys):
    from annrec.embeddings import Embeddings
    from annrec.index import load_index
    from annrec.recommend import Recommender

    qs = quickstart_dir()
    emb = Embeddings.load(qs / "mf")
    comedy = {"must": [{"key": "genres", "match": {"value": "Comedy"}}],
              "must_not": [{"key": "genres", "match": {"value": "Romance"}}]}
    exact, hnsw = Recommender(emb), Recommender(emb, load_index(qs / "mf-hnsw"))
    users = emb.query_ids[:50].tolist()
    overlap = []
    for u in users:
        want = exact.recommend(u, 10, filter=comedy)
        got = hnsw.recommend(u, 10, filter=comedy)
        for r in got:
            assert "Comedy" in r.metadata["genres"] and "Romance" not in r.metadata["genres"]
        assert not {r.item_id for r in got} & set(emb.seen_ids(u).tolist())
        # the unfiltered top-10 filtered afterwards is a subset of what the filtered search ranks first
        scores = emb.vectors @ emb.queries[emb.query_row_of(u)]
        allowed = set(exact.filter_ids(comedy)) - set(emb.seen_ids(u).tolist())
        rows = [i for i in np.argsort(-scores) if emb.ids[i] in allowed][:10]
        assert [r.item_id for r in want] == emb.ids[rows].tolist()
        overlap.append(len({r.item_id for r in want} & {r.item_id for r in got}) / 10)
    assert np.mean(overlap) >= 0.9
    report = tmp_path / "r.json"
    code, out = run_main(["recommend", "1", "--embeddings", qs / "mf", "--filter", json.dumps(comedy), "--json",
                          report], monkeypatch, capsys)
    assert code == 0, out
    assert all("Comedy" in r["genres"] for r in json.loads(report.read_text())["results"])
    code, out = run_main(["recommend", "1", "--embeddings", qs / "mf", "--filter", '{"must": [{"key": "genre", '
                          '"match": {"value": "Comedy"}}]}'], monkeypatch, capsys)
    assert code == 2 and "unknown metadata key 'genre'" in out
