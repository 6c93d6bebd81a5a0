"""Binary search bodies (application/octet-stream: float32 rows, the other fields in the query string) answer
exactly what the JSON body answers, through the fast path and through the route, with the same errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _service_fixtures import ADMIN_KEY, DIM, READ_KEY, make_model_dir
from fastapi.testclient import TestClient

from annrec.service import create_app
from annrec.service.settings import load_settings

RH = {"X-API-Key": READ_KEY}
BIN = {**RH, "Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("m"), with_text=False, with_sequence=False)


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "route"])
def test_binary_bodies_answer_like_json(model_dir, fast):
    settings = load_settings(model_dir=model_dir, read_key=READ_KEY, admin_key=ADMIN_KEY, fast_search=fast,
                             max_batch=8)
    q = np.random.default_rng(3).normal(size=(3, DIM)).astype(np.float32)
    comedy = {"must": [{"key": "genres", "match": {"value": "Comedy"}}]}
    with TestClient(create_app(settings)) as c:
        url = "/v1/indexes/mf-hnsw/search"
        for body, params, blob in (({"vector": q[0].tolist(), "k": 4}, "?k=4", q[0].tobytes()),
                                   ({"vectors": q.tolist(), "k": 3, "ef": 64}, "?k=3&ef=64", q.tobytes()),
                                   ({"vector": q[1].tolist(), "k": 5, "filter": comedy, "include_metadata": False},
                                    "?k=5&include_metadata=false&filter=" + json.dumps(comedy), q[1].tobytes())):
            want = c.post(url, json=body, headers=RH)
            got = c.post(url + params, content=blob, headers=BIN)
            assert want.status_code == got.status_code == 200 and got.json() == want.json()
        r = c.post(url + "?k=4", content=q.tobytes()[:-3], headers=BIN)
        assert r.status_code == 422 and f"dimension {DIM}" in r.json()["message"]
        r = c.post(url + "?k=4", content=np.zeros((9, DIM), np.float32).tobytes(), headers=BIN)
        assert r.status_code == 422 and "max_batch" in r.json()["message"]
        bad = q[0].copy()
        bad[2] = np.nan
        r = c.post(url + "?k=4", content=bad.tobytes(), headers=BIN)
        assert r.status_code == 422 and "finite" in r.json()["message"]
        r = c.post(url + "?k=0", content=q[0].tobytes(), headers=BIN)
        assert r.status_code == 422
        r = c.post(url + "?filter={oops", content=q[0].tobytes(), headers=BIN)
        assert r.status_code == 422 and "filter" in r.json()["message"]
        r = c.post("/v1/indexes/nope/search?k=4", content=q[0].tobytes(), headers=BIN)
        assert r.status_code == 404
        r = c.post(url + "?k=4", content=q[0].tobytes(), headers={**BIN, "X-API-Key": "wrong"})
        assert r.status_code == 401


def test_binary_bodies_only_where_documented(model_dir):
    settings = load_settings(model_dir=model_dir, read_key=READ_KEY, admin_key=ADMIN_KEY)
    with TestClient(create_app(settings)) as c:
        r = c.put("/v1/indexes/mf-hnsw/items", content=b"\0" * 64, headers={**BIN, "X-API-Key": ADMIN_KEY})
        assert r.status_code == 415
        r = c.post("/v1/indexes/mf-hnsw/search", content=b"{}", headers={**RH, "Content-Type": "text/plain"})
        assert r.status_code == 415  # a cross-site "simple" request stays refused
        spec = c.get("/openapi.json").json()
        content = spec["paths"]["/v1/indexes/{name}/search"]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "application/octet-stream"}
