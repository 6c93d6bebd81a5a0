"""The HTTP API through FastAPI's in-process TestClient: endpoints, auth, bad input, limits, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from _service_fixtures import ADMIN_KEY, AH, DIM, N_ITEMS, READ_KEY, RH, make_model_dir, register_fake_encoders, \
    unregister_fake_encoders
from annrec.embeddings import Embeddings
from annrec.errors import InputError
from annrec.index import load_index
from annrec.service import create_app, load_settings


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("svc") / "models")


@pytest.fixture(scope="module")
def client(model_dir):
    register_fake_encoders()
    app = create_app(load_settings(model_dir=model_dir, read_key=READ_KEY, admin_key=ADMIN_KEY, max_k=50,
                                   max_batch=8, max_ids=100, max_string_length=200, max_body_bytes=200_000))
    with TestClient(app) as c:
        yield c
    unregister_fake_encoders()


@pytest.fixture()
def writable(tmp_path):
    """A fresh model dir and client for tests that write."""
    d = make_model_dir(tmp_path / "models", with_text=False, with_sequence=False)
    app = create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY))
    with TestClient(app) as c:
        yield c, d


def emb(model_dir) -> Embeddings:
    return Embeddings.load(model_dir / "mf")


def exact_top(vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list:
    return ids[np.argsort(-(vectors @ q), kind="stable")[:k]].tolist()


# ----------------------------------------------------------------------------- probes and listing
def test_health_ready_need_no_key(client):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["indexes"] == 4


def test_list_and_describe_indexes(client):
    r = client.get("/v1/indexes", headers=RH)
    assert r.status_code == 200
    by = {d["name"]: d for d in r.json()["indexes"]}
    assert set(by) == {"mf-hnsw", "mf-ivf", "words-flat", "seq"}  # mf is used by the indexes, seq is bare
    assert by["mf-hnsw"]["backend"] == "hnswlib" and by["mf-hnsw"]["count"] == N_ITEMS
    assert by["mf-hnsw"]["user_recommendations"] and by["mf-hnsw"]["query_params"] == ["ef"]
    assert by["mf-ivf"]["query_params"] == ["nprobe"]
    assert by["words-flat"]["query_encoder"] == "text" and by["seq"]["query_encoder"] == "sequence"
    assert by["seq"]["writable"] is False
    d = client.get("/v1/indexes/mf-ivf", headers=RH).json()
    assert d["metric"] == "ip" and d["dim"] == DIM and d["params"]["factory"] == "IVF8,Flat"
    assert d["source"]["embeddings_name"] == "mf" and d["n_users"] == 40 and d["id_type"] == "int"


# ----------------------------------------------------------------------------- search
def test_search_single_matches_exact_with_metadata(client, model_dir):
    e = emb(model_dir)
    q = e.queries[0]
    r = client.post("/v1/indexes/mf-hnsw/search", json={"vector": q.tolist(), "k": 5, "ef": 200}, headers=RH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"index", "k", "hits"} and body["index"] == "mf-hnsw" and body["k"] == 5
    hits = body["hits"]
    assert [h["id"] for h in hits] == exact_top(e.vectors, e.ids, q, 5)
    assert set(hits[0]) == {"id", "score", "metadata"}
    assert hits[0]["metadata"]["title"] == f"Movie {hits[0]['id']}"
    assert hits[0]["score"] == pytest.approx(float(e.vectors[e.row_of(hits[0]["id"])] @ q), rel=1e-4)


def test_search_batch_filters_and_nprobe(client, model_dir):
    e = emb(model_dir)
    qs = e.queries[:3]
    top = exact_top(e.vectors, e.ids, qs[0], 3)
    r = client.post("/v1/indexes/mf-ivf/search", headers=RH, json={
        "vectors": qs.tolist(), "k": 3, "nprobe": 8, "denied_ids": top[:1], "include_metadata": False})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"index", "k", "results"}
    res = [q["hits"] for q in r.json()["results"]]
    assert len(res) == 3 and all(len(h) == 3 for h in res)
    assert top[0] not in [h["id"] for h in res[0]] and res[0][0]["id"] == top[1]
    assert all(h["metadata"] is None for hits in res for h in hits)
    allowed = [1001, 1002, 1003]
    r = client.post("/v1/indexes/mf-hnsw/search", headers=RH,
                    json={"vector": qs[1].tolist(), "k": 5, "allowed_ids": allowed + [999999]})
    ids = [h["id"] for h in r.json()["hits"]]
    assert sorted(ids) == allowed  # only the allowed items; fewer than k when fewer are allowed


def test_similar_items(client, model_dir):
    e = emb(model_dir)
    r = client.get("/v1/indexes/mf-ivf/items/1007/similar?k=4&nprobe=8", headers=RH)
    assert r.status_code == 200, r.text
    ids = [h["id"] for h in r.json()["hits"]]
    q = e.vectors[e.row_of(1007)]
    expected = [i for i in exact_top(e.vectors, e.ids, q, 5) if i != 1007][:4]
    assert 1007 not in ids and ids == expected


def test_user_recommendations_exclude_seen(client, model_dir):
    e = emb(model_dir)
    user = 5
    seen = set(e.seen_ids(user).tolist())
    assert seen
    r = client.get(f"/v1/users/{user}/recommendations?k=10&index=mf-ivf&nprobe=8", headers=RH)
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [h["id"] for h in body["hits"]]
    assert body["user_id"] == user and body["exclude_seen"] is True
    scores = e.vectors @ e.queries[e.query_row_of(user)]
    expected = [i for i in e.ids[np.argsort(-scores)].tolist() if i not in seen][:10]
    assert ids == expected
    r = client.get(f"/v1/users/{user}/recommendations?k=10&exclude_seen=false&index=mf-ivf&nprobe=8", headers=RH)
    assert [h["id"] for h in r.json()["hits"]] == e.ids[np.argsort(-scores)][:10].tolist()
    # default index: the first with user vectors
    assert client.get(f"/v1/users/{user}/recommendations", headers=RH).json()["index"] == "mf-hnsw"


@pytest.mark.parametrize("index,params", [("mf-hnsw", {"ef": 64}), ("mf-ivf", {"nprobe": 8})])
def test_user_recommendations_are_what_the_recommender_answers(client, model_dir, index, params):
    from annrec.index import load_index
    from annrec.recommend import Recommender

    e = emb(model_dir)
    rec = Recommender(e, load_index(model_dir / index))
    query = "&".join(f"{k}={v}" for k, v in params.items())
    for user in (1, 5, 17, 40):
        for exclude in (True, False):
            r = client.get(f"/v1/users/{user}/recommendations?k=7&index={index}&exclude_seen={str(exclude).lower()}"
                           f"&{query}", headers=RH)
            assert r.status_code == 200, r.text
            want = [h.to_dict() for h in rec.recommend(user, 7, exclude_seen=exclude, params=params)]
            got = r.json()["hits"]
            assert [h["id"] for h in got] == [h["id"] for h in want]
            assert [h["metadata"] for h in got] == [h["metadata"] for h in want]
            assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], rel=1e-5)


def test_seen_items_never_appear_unless_asked_for(client, model_dir):
    e = emb(model_dir)
    shown_seen = 0
    for user in e.query_ids.tolist():
        seen = set(e.seen_ids(user).tolist())
        r = client.get(f"/v1/users/{user}/recommendations?k=30&index=mf-ivf&nprobe=8&include_metadata=false",
                       headers=RH)
        assert r.status_code == 200 and not seen & {h["id"] for h in r.json()["hits"]}, user
        assert len(r.json()["hits"]) == 30 and all(h["metadata"] is None for h in r.json()["hits"])
        r = client.get(f"/v1/users/{user}/recommendations?k=30&index=mf-ivf&nprobe=8&exclude_seen=false",
                       headers=RH)
        assert r.json()["exclude_seen"] is False
        shown_seen += len(seen & {h["id"] for h in r.json()["hits"]})
    assert shown_seen > 0  # with exclude_seen=false the users' own items come back


def test_a_larger_ef_does_not_lower_recall(client, model_dir):
    e = emb(model_dir)
    queries = e.queries[:40]
    truth = [set(exact_top(e.vectors, e.ids, q, 10)) for q in queries]

    def recall(ef: int) -> float:
        r = client.post("/v1/indexes/mf-hnsw/search", headers=RH,
                        json={"vectors": queries[:8].tolist(), "k": 10, "ef": ef, "include_metadata": False})
        rows = [q["hits"] for q in r.json()["results"]]
        for start in range(8, len(queries), 8):
            r = client.post("/v1/indexes/mf-hnsw/search", headers=RH,
                            json={"vectors": queries[start:start + 8].tolist(), "k": 10, "ef": ef})
            rows += [q["hits"] for q in r.json()["results"]]
        return float(np.mean([len(t & {h["id"] for h in hits}) / 10 for t, hits in zip(truth, rows)]))

    recalls = [recall(ef) for ef in (10, 20, 80, 320)]
    assert all(b >= a for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] == 1.0


def test_text_and_next_with_registered_encoders(client, model_dir):
    r = client.post("/v1/search/text", json={"query": "space opera", "k": 3}, headers=RH)
    assert r.status_code == 200, r.text
    assert r.json()["query"] == "space opera" and "warnings" not in r.json()
    assert r.json()["index"] == "words-flat" and len(r.json()["hits"]) == 3
    assert all(isinstance(h["id"], str) for h in r.json()["hits"])
    # same text, same answer
    assert client.post("/v1/search/text", json={"query": "space opera", "k": 3}, headers=RH).json() == r.json()
    seq = Embeddings.load(model_dir / "seq")
    items = [3, 7, 11]
    r = client.post("/v1/recommendations/next", json={"item_ids": items, "timestamps": [10, 20, 30], "k": 4},
                    headers=RH)
    assert r.status_code == 200, r.text
    got = [h["id"] for h in r.json()["hits"]]
    q = seq.vectors[items].mean(0)
    q = q / np.linalg.norm(q)
    v = seq.vectors / np.linalg.norm(seq.vectors, axis=1, keepdims=True)
    expected = [i for i in np.argsort(-(v @ q)).tolist() if i not in items][:4]
    assert got == expected and "warnings" not in r.json() and "Deprecation" not in r.headers
    r = client.post("/v1/recommendations/next", json={"item_ids": items, "k": 4}, headers=RH)
    assert r.json()["warnings"] == ["no timestamps: every event is taken as recent"]
    r = client.post("/v1/recommendations/next", json={"item_ids": [3, 7], "timestamps": [1.5, 2], "k": 4},
                    headers=RH)
    assert r.status_code == 422 and "timestamps" in r.json()["message"]
    r = client.post("/v1/recommendations/next", json={"item_ids": [3, 999], "k": 4}, headers=RH)
    assert r.status_code == 404 and "999" in r.json()["message"]
    r = client.post("/v1/recommendations/next", json={"item_ids": [3, 7], "timestamps": [1], "k": 4}, headers=RH)
    assert r.status_code == 422 and "timestamps" in r.json()["message"]


def test_next_accepts_the_old_items_spelling_with_a_deprecation_header(client):
    new = client.post("/v1/recommendations/next", json={"item_ids": [3, 7, 11], "k": 4}, headers=RH)
    old = client.post("/v1/recommendations/next", json={"items": [3, 7, 11], "k": 4}, headers=RH)
    assert old.status_code == 200 and old.json() == new.json()
    assert old.headers["Deprecation"] == "true" and "items -> item_ids" in old.headers["Warning"]
    r = client.post("/v1/recommendations/next", json={"items": [3], "item_ids": [3], "k": 4}, headers=RH)
    assert r.status_code == 422 and "items" in r.json()["message"]  # both spellings: the old one is unknown


def test_text_and_next_404_without_encoder(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    app = create_app(load_settings(model_dir=d, insecure_no_auth=True))
    with TestClient(app) as c:
        r = c.post("/v1/search/text", json={"query": "x"})
        assert r.status_code == 404 and "no text model loaded" in r.json()["message"]
        r = c.post("/v1/recommendations/next", json={"item_ids": [1, 2]})
        assert r.status_code == 404 and "no sequence model loaded" in r.json()["message"]


def test_get_item(client):
    r = client.get("/v1/indexes/mf-hnsw/items/1003?include_vector=true", headers=RH)
    assert r.status_code == 200 and set(r.json()) == {"index", "id", "metadata", "vector"}
    assert r.json()["metadata"]["title"] == "Movie 1003" and len(r.json()["vector"]) == DIM
    r = client.get("/v1/indexes/words-flat/items/w3", headers=RH)
    assert r.status_code == 200 and r.json()["id"] == "w3" and r.json()["vector"] is None


# ----------------------------------------------------------------------------- auth
@pytest.mark.parametrize("method,path,body", [
    ("get", "/v1/indexes", None), ("get", "/v1/indexes/mf-hnsw", None),
    ("post", "/v1/indexes/mf-hnsw/search", {"vector": [0.0] * DIM}),
    ("get", "/v1/indexes/mf-hnsw/items/1001/similar", None), ("get", "/v1/users/1/recommendations", None),
    ("post", "/v1/search/text", {"query": "x"}), ("post", "/v1/recommendations/next", {"item_ids": [1]}),
    ("get", "/metrics", None),
])
def test_read_endpoints_need_a_key(client, method, path, body):
    kw = {"json": body} if body is not None else {}
    r = getattr(client, method)(path, **kw)
    assert r.status_code == 401 and "missing API key" in r.json()["message"]
    assert "WWW-Authenticate" in r.headers
    r = getattr(client, method)(path, headers={"X-API-Key": "not-the-key-at-all"}, **kw)
    assert r.status_code == 401 and "wrong API key" in r.json()["message"]
    for h in (RH, AH, {"Authorization": f"Bearer {READ_KEY}"}):
        assert getattr(client, method)(path, headers=h, **kw).status_code == 200


@pytest.mark.parametrize("method,path,body", [
    ("put", "/v1/indexes/mf-hnsw/items", {"items": [{"id": 1, "vector": [0.0] * DIM}]}),
    ("delete", "/v1/indexes/mf-hnsw/items/1001", None), ("post", "/v1/admin/reload", None),
])
def test_admin_endpoints_need_the_admin_key(client, method, path, body):
    kw = {"json": body} if body is not None else {}
    fn = client.request
    assert fn(method.upper(), path, **kw).status_code == 401
    assert fn(method.upper(), path, headers={"X-API-Key": "wrong-key-123456"}, **kw).status_code == 401
    r = fn(method.upper(), path, headers=RH, **kw)
    assert r.status_code == 403 and "admin key" in r.json()["message"]


def test_settings_refuse_missing_keys_and_confusing_combinations(model_dir, monkeypatch):
    for k in ("ANNREC_READ_KEY", "ANNREC_ADMIN_KEY", "ANNREC_INSECURE_NO_AUTH", "ANNREC_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(InputError, match="no API key given"):
        load_settings(model_dir=model_dir)
    with pytest.raises(InputError, match="choose one"):
        load_settings(model_dir=model_dir, read_key=READ_KEY, insecure_no_auth=True)
    with pytest.raises(InputError, match="at least 8"):
        load_settings(model_dir=model_dir, read_key="short")
    with pytest.raises(InputError, match="the same"):
        load_settings(model_dir=model_dir, read_key=READ_KEY, admin_key=READ_KEY)


def test_settings_precedence_flags_env_file(tmp_path, model_dir, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model_dir: {model_dir}\nport: 9001\nmax_k: 77\nread_key: file-key-123456\n")
    monkeypatch.setenv("ANNREC_PORT", "9002")
    s = load_settings(cfg)
    assert s.port == 9002 and s.max_k == 77 and s.read_key.get_secret_value() == "file-key-123456"
    s = load_settings(cfg, port=9003)
    assert s.port == 9003
    cfg.write_text(f"model_dir: {model_dir}\nread_key: file-key-123456\nmax_kk: 3\n")
    with pytest.raises(InputError, match="max_kk"):
        load_settings(cfg)
    assert "file-key" not in repr(load_settings(model_dir=model_dir, read_key="file-key-123456"))


def test_read_key_only_disables_writes(model_dir):
    app = create_app(load_settings(model_dir=model_dir, read_key=READ_KEY))
    with TestClient(app) as c:
        r = c.post("/v1/admin/reload", headers=RH)
        assert r.status_code == 403 and "without an admin key" in r.json()["message"]
        assert c.post("/v1/admin/reload").status_code == 401


# ----------------------------------------------------------------------------- bad input
def _search(client, body, index="mf-hnsw", raw=None):
    if raw is not None:
        return client.post(f"/v1/indexes/{index}/search", content=raw,
                           headers={**RH, "Content-Type": "application/json"})
    return client.post(f"/v1/indexes/{index}/search", json=body, headers=RH)


@pytest.mark.parametrize("body,status,needle", [
    ({"vector": [0.1] * (DIM - 1)}, 422, f"dimension {DIM - 1} but the index expects {DIM}"),
    ({"vectors": [[0.1] * DIM, [0.1] * 3]}, 422, "query vector 1 has dimension 3"),
    ({"vector": []}, 422, "vector"),
    ({"vector": [0.1] * DIM, "vectors": [[0.1] * DIM]}, 422, "exactly one of"),
    ({}, 422, "exactly one of"),
    ({"vector": [0.1] * DIM, "k": 0}, 422, "k"),
    ({"vector": [0.1] * DIM, "k": 51}, 422, "max_k"),
    ({"vector": [0.1] * DIM, "k": 10**30}, 422, "max_k"),
    ({"vectors": [[0.1] * DIM] * 9}, 422, "max_batch"),
    ({"vector": [0.1] * DIM, "denied_ids": list(range(101))}, 422, "max_ids"),
    ({"vector": [0.1] * DIM, "allowed_ids": [-1]}, 422, "allowed_ids"),
    ({"vector": [0.1] * DIM, "ef": 0}, 422, "ef"),
    ({"vector": [0.1] * DIM, "ef": 100000}, 422, "max_ef"),
    ({"vector": [0.1] * DIM, "nprobe": 4}, 422, "nprobe does not apply"),
    ({"vector": ["a"] * DIM}, 422, "valid number"),
    ({"vector": [0.1] * DIM, "bogus": 1}, 422, "bogus"),
    ({"vector": [0.1] * DIM, "include_metadata": "yes"}, 422, "include_metadata"),
])
def test_bad_search_input_is_4xx_with_a_message(client, body, status, needle):
    r = _search(client, body)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"], r.json()
    assert "Traceback" not in r.text


@pytest.mark.parametrize("raw", [
    b'{"vector": [NaN' + b', 0.1' * (DIM - 1) + b']}',
    b'{"vector": [Infinity' + b', 0.1' * (DIM - 1) + b']}',
    b'{"vector": [1e999' + b', 0.1' * (DIM - 1) + b']}',
    b'{"vector": [-Infinity' + b', 0.1' * (DIM - 1) + b']}',
])
def test_nan_and_inf_are_rejected(client, raw):
    r = _search(client, None, raw=raw)
    assert r.status_code == 422, r.text
    assert "must be finite" in r.json()["message"]


@pytest.mark.parametrize("raw,status", [(b'{"vector": [1,', 400), (b"not json", 400), (b"[1, 2]", 422),
                                        (b'"x"', 422), (b"", 422)])
def test_malformed_bodies(client, raw, status):
    r = _search(client, None, raw=raw)
    assert r.status_code == status, r.text
    assert r.json()["error"] in ("bad_request", "invalid_request") and r.json()["message"]


def test_unknown_index_item_user(client):
    r = _search(client, {"vector": [0.1] * DIM}, index="nope")
    assert r.status_code == 404 and "unknown index 'nope'" in r.json()["message"]
    assert "mf-hnsw" in r.json()["message"]
    for path in ("/v1/indexes/mf-hnsw/items/424242/similar", "/v1/indexes/mf-hnsw/items/abc/similar",
                 "/v1/indexes/mf-hnsw/items/-3", "/v1/indexes/words-flat/items/zzz/similar",
                 "/v1/indexes/mf-hnsw/items/99999999999999999999999999/similar"):
        r = client.get(path, headers=RH)
        assert r.status_code == 404 and "unknown" in r.json()["message"], (path, r.text)
        assert path.split("/")[5] in r.json()["message"], (path, r.text)
    r = client.get("/v1/users/9999/recommendations", headers=RH)
    assert r.status_code == 404 and "unknown user id" in r.json()["message"]
    r = client.get("/v1/users/1/recommendations?index=words-flat", headers=RH)
    assert r.status_code == 404 and "no user vectors" in r.json()["message"]
    r = client.get("/v1/users/1/recommendations?k=100000", headers=RH)
    assert r.status_code == 422 and "max_k" in r.json()["message"]
    r = client.get("/v1/indexes/words-flat/items/w1/similar?k=50", headers=RH)
    assert r.status_code == 422 and "larger than" in r.json()["message"]
    assert client.get("/v1/nothing", headers=RH).status_code == 404
    assert client.patch("/v1/indexes", headers=RH).status_code == 405


def test_text_query_limits(client):
    r = client.post("/v1/search/text", json={"query": "x" * 201}, headers=RH)
    assert r.status_code == 422 and "max_string_length" in r.json()["message"]
    r = client.post("/v1/search/text", json={"query": ""}, headers=RH)
    assert r.status_code == 422
    r = client.post("/v1/search/text", json={"query": "x", "index": "mf-hnsw"}, headers=RH)
    assert r.status_code == 404 and "no text query encoder" in r.json()["message"]


def test_body_size_limit(client):
    big = json.dumps({"vector": [0.123456789] * 20000}).encode()
    assert len(big) > 200_000
    r = _search(client, None, raw=big)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["message"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    r = client.post("/v1/indexes/mf-hnsw/search", content=chunks(), headers={**RH, "Content-Type": "application/json"})
    assert r.status_code == 413


# ----------------------------------------------------------------------------- writes
def test_upsert_search_delete_persisted(writable):
    c, d = writable
    v = np.full(DIM, 5.0, dtype=np.float32)
    r = c.put("/v1/indexes/mf-hnsw/items", headers=AH, json={"items": [
        {"id": 777777, "vector": v.tolist(), "metadata": {"title": "Brand new"}},
        {"id": 1001, "vector": (-v).tolist()}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"index": "mf-hnsw", "upserted": 2, "count": N_ITEMS + 1, "persisted": True, "seq": 2}
    hits = _search(c, {"vector": v.tolist(), "k": 1}).json()["hits"]
    assert hits[0]["id"] == 777777 and hits[0]["metadata"] == {"title": "Brand new"}
    assert c.get("/v1/indexes/mf-hnsw/items/777777", headers=RH).json()["metadata"] == {"title": "Brand new"}
    r = c.get("/v1/indexes/mf-hnsw/items/1001?include_vector=true", headers=RH).json()
    assert np.allclose(r["vector"], -v) and r["metadata"]["title"] == "Movie 1001"  # metadata kept from the embeddings
    # the folder on disk already holds the write (persist=sync)
    idx = load_index(d / "mf-hnsw")
    assert 777777 in idx and np.allclose(idx.get_vector(1001), -v)
    r = c.delete("/v1/indexes/mf-hnsw/items/777777", headers=AH)
    assert r.status_code == 200 and r.json()["deleted"] == 777777 and r.json()["count"] == N_ITEMS
    assert 777777 not in load_index(d / "mf-hnsw")
    assert all(h["id"] != 777777 for h in _search(c, {"vector": v.tolist(), "k": 5}).json()["hits"])
    assert c.get("/v1/indexes/mf-hnsw/items/777777", headers=RH).status_code == 404
    r = c.delete("/v1/indexes/mf-hnsw/items/777777", headers=AH)
    assert r.status_code == 404


@pytest.mark.parametrize("body,status,needle", [
    ({"items": [{"id": 1, "vector": [0.1] * 3}]}, 422, "dimension 3"),
    ({"items": [{"id": "str-id", "vector": [0.1] * DIM}]}, 422, "integer ids"),
    ({"items": [{"id": 1, "vector": [0.1] * DIM}, {"id": 1, "vector": [0.1] * DIM}]}, 422, "duplicates"),
    ({"items": []}, 422, "items"),
    ({"items": [{"id": 2**64, "vector": [0.1] * DIM}]}, 422, "items"),
    ({"items": [{"id": 1, "vector": [0.1] * DIM, "metadata": "x"}]}, 422, "metadata"),
])
def test_bad_upserts(writable, body, status, needle):
    c, d = writable
    r = c.put("/v1/indexes/mf-hnsw/items", headers=AH, json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]
    assert len(load_index(d / "mf-hnsw")) == N_ITEMS


def test_upsert_nan_and_read_only_indexes(client):
    raw = b'{"items": [{"id": 5, "vector": [NaN' + b', 0.1' * (DIM - 1) + b']}]}'
    r = client.put("/v1/indexes/mf-hnsw/items", content=raw, headers={**AH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "must be finite" in r.json()["message"]
    r = client.put("/v1/indexes/seq/items", headers=AH, json={"items": [{"id": 1000, "vector": [0.1] * 8}]})
    assert r.status_code == 422 and "cannot be changed" in r.json()["message"]


def test_reload_picks_up_new_artifacts_and_keeps_old_on_failure(writable):
    c, d = writable
    from annrec.index import build_index

    x = np.random.default_rng(1).normal(size=(20, DIM)).astype(np.float32)
    build_index(x, np.arange(20), "l2", backend="faiss", factory="Flat").save(d / "extra-flat")
    gen = c.get("/ready").json()["generation"]
    r = c.post("/v1/admin/reload", headers=AH)
    assert r.status_code == 200 and "extra-flat" in r.json()["indexes"] and r.json()["generation"] == gen + 1
    assert _search(c, {"vector": x[3].tolist(), "k": 1}, index="extra-flat").json()["hits"][0]["id"] == 3
    (d / "broken").mkdir()
    (d / "broken" / "manifest.json").write_text('{"kind": "annrec.index", "backend": "faiss", "format_version": 1, '
                                                '"dim": 4, "metric": "l2"}')
    r = c.post("/v1/admin/reload", headers=AH)
    assert r.status_code == 409 and "still serving generation" in r.json()["message"]
    assert c.get("/ready").json()["generation"] == gen + 1
    assert _search(c, {"vector": x[3].tolist(), "k": 1}, index="extra-flat").status_code == 200


def test_async_persistence_commits_without_fsync_and_snapshots_at_shut_down(tmp_path):
    from annrec.index import storage
    from annrec.index.wal import WriteLog

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    before = storage.current_name(d / "mf-ivf")
    app = create_app(load_settings(model_dir=d, admin_key=ADMIN_KEY, persist="async"))
    with TestClient(app) as c:
        r = c.put("/v1/indexes/mf-ivf/items", headers=AH, json={"items": [{"id": 5, "vector": [1.0] * DIM}]})
        assert r.status_code == 200 and r.json()["persisted"] is False and r.json()["seq"] == 1
        assert 5 in load_index(d / "mf-ivf")  # committed to the log: a load replays it
        assert storage.current_name(d / "mf-ivf") == before  # no snapshot yet (10,000 writes or 60 s)
        assert c.delete("/v1/indexes/mf-ivf/items/5", headers=AH).json()["seq"] == 2
    # shut-down wrote a snapshot holding both writes and trimmed the log
    after = storage.current_name(d / "mf-ivf")
    assert after != before and after.startswith("snapshot-000000000002-")
    assert WriteLog(d / "mf-ivf").count() == 0
    assert 5 not in load_index(d / "mf-ivf") and len(load_index(d / "mf-ivf")) == N_ITEMS


# ----------------------------------------------------------------------------- metrics and schema
def test_metrics_exposition(client):
    _search(client, {"vector": [0.1] * DIM, "k": 2})
    _search(client, {"vector": [0.1] * 2, "k": 2})
    text = client.get("/metrics", headers=RH).text
    assert 'annrec_http_requests_total{method="POST",route="/v1/indexes/{name}/search",status="200"}' in text
    assert 'annrec_http_errors_total{route="/v1/indexes/{name}/search",status="422"}' in text
    assert 'annrec_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/indexes/{name}/search"}' \
        in text
    assert f'annrec_index_items{{backend="hnswlib",index="mf-hnsw"}} {float(N_ITEMS)}' in text
    assert "annrec_registry_generation" in text


def test_openapi_has_models_examples_and_security(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for p in ("/health", "/ready", "/metrics", "/v1/indexes", "/v1/indexes/{name}", "/v1/indexes/{name}/search",
              "/v1/indexes/{name}/items/{item_id}/similar", "/v1/users/{user_id}/recommendations",
              "/v1/recommendations/next", "/v1/search/text", "/v1/indexes/{name}/items",
              "/v1/indexes/{name}/items/{item_id}", "/v1/admin/reload"):
        assert p in paths, p
    comp = schema["components"]["schemas"]
    assert comp["SearchRequest"]["examples"] and comp["SearchResponse"]["examples"]
    assert {"ApiKey", "Bearer"} <= set(schema["components"]["securitySchemes"])
    assert "422" in paths["/v1/indexes/{name}/search"]["post"]["responses"]


def test_fast_search_path_and_fastapi_route_agree(model_dir):
    """The search fast path and the FastAPI route give the same answers, errors and metrics included."""
    q = emb(model_dir).queries
    bodies = [{"vector": q[1].tolist(), "k": 4, "ef": 100},
              {"vectors": q[:2].tolist(), "k": 2, "denied_ids": [1001], "allowed_ids": None},
              {"vector": q[1].tolist(), "k": 5, "allowed_ids": [1001, 1002]},
              {"vector": [0.1] * 3}, {"vector": [0.1] * DIM, "k": 0}, {"vector": [0.1] * DIM, "nprobe": 2},
              {"vector": [0.1] * DIM, "k": 51}, {}, [1, 2], b'{"vector": [1,', b'{"vector": [NaN]}', b""]
    answers = []
    for fast in (True, False):
        app = create_app(load_settings(model_dir=model_dir, read_key=READ_KEY, fast_search=fast, max_k=50))
        with TestClient(app) as c:
            got = []
            for b in bodies:
                kw = {"content": b} if isinstance(b, bytes) else {"json": b}
                r = c.post("/v1/indexes/mf-hnsw/search", headers={**RH, "Content-Type": "application/json"}, **kw)
                got.append((r.status_code, r.json()))
            r = c.post("/v1/indexes/mf-hnsw/search", json=bodies[0])  # no key
            got.append((r.status_code, r.json(), r.headers.get("WWW-Authenticate")))
            got.append(c.post("/v1/indexes/nope/search", json=bodies[0], headers=RH).json())
            got.append(c.post("/v1/indexes/mf-hnsw/search", json=bodies[0],
                              headers={"Authorization": f"Bearer {READ_KEY}"}).status_code)
            text = c.get("/metrics", headers=RH).text
            assert 'annrec_http_requests_total{method="POST",route="/v1/indexes/{name}/search",status="200"} 4.0' \
                in text
            answers.append(got)
    assert answers[0] == answers[1]
    assert [a[0] for a in answers[0][:len(bodies) + 1]] == [200, 200, 200, 422, 422, 422, 422, 422, 422, 400, 422, 422,
                                                         401]
    assert answers[0][1][1]["results"][0]["hits"] and len(answers[0][2][1]["hits"]) == 2


def test_insecure_no_auth_and_public_metrics(model_dir):
    app = create_app(load_settings(model_dir=model_dir, insecure_no_auth=True))
    with TestClient(app) as c:
        assert c.get("/v1/indexes").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.post("/v1/admin/reload").status_code == 200
    app = create_app(load_settings(model_dir=model_dir, read_key=READ_KEY, metrics_public=True))
    with TestClient(app) as c:
        assert c.get("/metrics").status_code == 200 and c.get("/v1/indexes").status_code == 401


def test_key_in_header_wins_over_bearer(client):
    assert client.get("/v1/indexes", headers={"X-API-Key": READ_KEY, "Authorization": "Bearer nope-nope-nope"}) \
        .status_code == 200
    r = client.get("/v1/indexes", headers={"X-API-Key": "nope-nope-nope", "Authorization": f"Bearer {READ_KEY}"})
    assert r.status_code == 401 and "wrong API key" in r.json()["message"]
    assert client.get("/v1/indexes", headers={"Authorization": f"Basic {READ_KEY}"}).status_code == 401
    r = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {READ_KEY}"})
    assert r.status_code == 403


def test_openapi_documents_the_new_vocabulary(client):
    comp = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(comp["Hit"]["properties"]) == {"id", "score", "metadata"}
    assert "hits" in comp["SearchResponse"]["properties"] and "results" in comp["BatchSearchResponse"]["properties"]
    assert "metadata" in comp["ItemResponse"]["properties"] and "item" not in comp["ItemResponse"]["properties"]
    assert "item_ids" in comp["NextRequest"]["required"]
