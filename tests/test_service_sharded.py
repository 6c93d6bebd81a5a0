"""A sharded index folder is served like any index: the same answers as the unsharded index on every endpoint,
with its shards in the server's process or (``annrec serve --ray``) in Ray actors."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from _service_fixtures import ADMIN_KEY, DIM, N_ITEMS, READ_KEY, ServerProcess, make_model_dir
from fastapi.testclient import TestClient

from annrec.embeddings import Embeddings
from annrec.index import build_index
from annrec.index.sharded import build_sharded
from annrec.service import create_app
from annrec.service.settings import load_settings

RH = {"X-API-Key": READ_KEY}
AH = {"X-API-Key": ADMIN_KEY}
COMEDY = {"must": [{"key": "genres", "match": {"value": "Comedy"}}]}


def _model_dir(tmp_path):
    """The fixture models plus the same embeddings as one exact index and as 3 exact shards."""
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    e = Embeddings.load(d / "mf")
    source = {"embeddings": str((d / "mf").resolve()), "embeddings_name": "mf", "data_hash": e.manifest.get("data_hash")}
    flat = build_index(e.vectors, e.ids, e.metric, backend="faiss", factory="Flat")
    flat.source = dict(source)
    flat.save(d / "mf-flat")
    build_sharded(e.vectors, e.ids, e.metric, d / "mf-sharded", shards=3, backend="faiss", factory="Flat",
                  source=source)
    return d


def _requests():
    q = np.random.default_rng(5).normal(size=(3, DIM)).round(3)
    yield "POST", "/v1/indexes/{name}/search", {"vector": q[0].tolist(), "k": 7}
    yield "POST", "/v1/indexes/{name}/search", {"vectors": q.tolist(), "k": 4}
    yield "POST", "/v1/indexes/{name}/search", {"vector": q[1].tolist(), "k": 5, "filter": COMEDY}
    yield "POST", "/v1/indexes/{name}/search", {"vector": q[2].tolist(), "k": 5, "denied_ids": [1001, 1002, 1003]}
    yield "GET", "/v1/indexes/{name}/items/1005/similar?k=6", None
    yield "GET", "/v1/indexes/{name}/items/1005", None
    for user in (1, 7, 40):
        yield "GET", f"/v1/users/{user}/recommendations?k=8&index={{name}}", None
    yield "GET", "/v1/users/3/recommendations?k=5&exclude_seen=false&index={name}", None
    yield "GET", "/v1/users/3/recommendations?index={name}&filter=" + json.dumps(COMEDY).replace("{", "{{").replace(
        "}", "}}"), None


def _answers(call, name):
    out = []
    for method, path, body in _requests():
        r = call(method, path.format(name=name), body)
        assert r.status_code == 200, (path, r.text)
        j = r.json()
        j.pop("index", None)
        for hits in [j.get("hits")] + [x["hits"] for x in j.get("results", [])]:
            for h in hits or []:
                h["score"] = round(h["score"], 4)
        out.append(j)
    return out


def test_a_sharded_folder_answers_like_the_unsharded_index(tmp_path):
    d = _model_dir(tmp_path)
    app = create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY))
    with TestClient(app) as c:
        info = c.get("/v1/indexes/mf-sharded", headers=RH).json()
        assert info["backend"] == "sharded" and info["count"] == N_ITEMS and info["writable"] is False
        assert info["user_recommendations"] is True and info["recommender_error"] is None

        def call(method, path, body):
            return c.request(method, path, headers=RH, json=body)

        assert _answers(call, "mf-sharded") == _answers(call, "mf-flat")
        r = c.put("/v1/indexes/mf-sharded/items", headers=AH, json={"items": [{"id": 5, "vector": [0.1] * DIM}]})
        assert r.status_code == 422 and "sharded index" in r.json()["message"]
        # the shard folders are part of the sharded index, not served on their own
        assert not any(i["name"].startswith("mf-sharded.") for i in c.get("/v1/indexes", headers=RH).json()["indexes"])


def test_read_only_serves_and_refuses_writes_and_writes_nothing(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    before = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    app = create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY, read_only=True))
    with TestClient(app) as c:
        assert c.post("/v1/indexes/mf-hnsw/search", headers=RH, json={"vector": [0.1] * DIM}).status_code == 200
        r = c.put("/v1/indexes/mf-hnsw/items", headers=AH, json={"items": [{"id": 5, "vector": [0.1] * DIM}]})
        assert r.status_code == 422 and "--read-only" in r.json()["message"]
    after = sorted(str(p.relative_to(d)) for p in d.rglob("*") if not p.name.endswith(".lock"))
    assert after == before


@pytest.mark.ray
def test_serve_ray_answers_like_the_in_process_shards(tmp_path):
    import shutil
    import tempfile

    pytest.importorskip("ray")
    d = _model_dir(tmp_path)
    ray_tmp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 108 bytes
    env = {"ANNREC_RAY_TMP": ray_tmp}
    with ServerProcess(d, "--ray", env=env).wait_ready(180) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        def call(method, path, body):
            return c.request(method, path, headers=RH, json=body)

        got = _answers(call, "mf-sharded")
        assert got == _answers(call, "mf-flat")
    assert "Traceback" not in srv.stop()
    shutil.rmtree(ray_tmp, ignore_errors=True)
