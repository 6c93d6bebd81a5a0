"""Payload filters over HTTP: every route that ranks items takes one, and bad filters are 422s naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from _service_fixtures import ADMIN_KEY, DIM, READ_KEY, RH, make_model_dir
from annrec.service import create_app, load_settings

DRAMA = {"must": [{"key": "genres", "match": {"value": "Drama"}}]}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = make_model_dir(tmp_path_factory.mktemp("svc") / "models", with_text=False, with_sequence=False)
    app = create_app(load_settings(model_dir=root, read_key=READ_KEY, admin_key=ADMIN_KEY))
    with TestClient(app) as c:
        yield c


def _genres(hits):
    return [h["metadata"]["genres"] for h in hits]


def test_user_recommendations_and_similar_items_take_a_filter(client):
    for index in ("mf-hnsw", "mf-ivf"):
        r = client.get("/v1/users/3/recommendations", headers=RH,
                       params={"k": 10, "index": index, "filter": json.dumps(DRAMA)})
        assert r.status_code == 200, r.text
        assert len(r.json()["hits"]) == 10 and all(g == ["Drama"] for g in _genres(r.json()["hits"]))
        unfiltered = client.get("/v1/users/3/recommendations", headers=RH, params={"k": 10, "index": index}).json()
        assert any(g == ["Comedy"] for g in _genres(unfiltered["hits"]))
    r = client.get("/v1/indexes/mf-hnsw/items/1001/similar", headers=RH,
                   params={"k": 5, "filter": json.dumps({"must_not": [{"key": "genres", "match": {"value": "Drama"}}]})})
    assert r.status_code == 200 and all(g == ["Comedy"] for g in _genres(r.json()["hits"]))


def test_vector_search_with_a_filter_and_fewer_matches_than_k(client):
    q = np.ones(DIM).tolist()
    flt = {"must": [{"key": "title", "match": {"any": ["Movie 1000", "Movie 1002"]}}]}
    r = client.post("/v1/indexes/mf-ivf/search", headers=RH, json={"vector": q, "k": 10, "filter": flt})
    assert r.status_code == 200, r.text
    assert sorted(h["id"] for h in r.json()["hits"]) == [1000, 1002]
    r = client.post("/v1/indexes/mf-ivf/search", headers=RH, json={"vectors": [q, q], "k": 3, "filter": DRAMA})
    assert all(len(x["hits"]) == 3 and all(g == ["Drama"] for g in _genres(x["hits"])) for x in r.json()["results"])


@pytest.mark.parametrize("flt, needle", [
    ({"must": [{"key": "genre", "match": {"value": "Drama"}}]}, "unknown metadata key 'genre'"),
    ({"must": [{"key": "genres", "range": {"from": 3}}]}, "unknown range operator(s) ['from']"),
    ({"mustt": []}, "unknown filter clause(s) ['mustt']"),
])
def test_bad_filters_are_422_naming_the_problem(client, flt, needle):
    r = client.post("/v1/indexes/mf-ivf/search", headers=RH, json={"vector": np.ones(DIM).tolist(), "filter": flt})
    assert r.status_code == 422 and needle in r.json()["message"], r.text
    r = client.get("/v1/users/3/recommendations", headers=RH, params={"filter": json.dumps(flt)})
    assert r.status_code == 422 and needle in r.json()["message"], r.text
    r = client.get("/v1/users/3/recommendations", headers=RH, params={"filter": "{oops"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]
