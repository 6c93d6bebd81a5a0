"""The API on a real uvicorn server on 127.0.0.1: endpoints, auth, limits over a socket, persistence across a
restart of ``annrec serve``, and searches that keep answering correctly during reloads and upserts."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from _service_fixtures import ADMIN_KEY, AH, DIM, N_ITEMS, READ_KEY, RH, ServerProcess, ThreadServer, \
    make_model_dir, register_fake_encoders, unregister_fake_encoders
from annrec.embeddings import Embeddings
from annrec.service import create_app, load_settings


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    register_fake_encoders()
    d = make_model_dir(tmp_path_factory.mktemp("srv") / "models")
    app = create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY, max_body_bytes=100_000))
    with ThreadServer(app) as srv:
        yield srv, d
    unregister_fake_encoders()


def test_every_endpoint_over_http(served):
    srv, d = served
    e = Embeddings.load(d / "mf")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json()["status"] == "ready"
        assert len(c.get("/v1/indexes", headers=RH).json()["indexes"]) == 4
        assert c.get("/v1/indexes/mf-hnsw", headers=RH).json()["count"] == N_ITEMS
        q = e.queries[2]
        r = c.post("/v1/indexes/mf-hnsw/search", headers=RH, json={"vector": q.tolist(), "k": 3, "ef": 300})
        assert [h["id"] for h in r.json()["hits"]] == e.ids[np.argsort(-(e.vectors @ q))[:3]].tolist()
        assert c.get("/v1/indexes/mf-hnsw/items/1010/similar?k=3", headers=RH).status_code == 200
        assert c.get("/v1/indexes/mf-hnsw/items/1010", headers=RH).json()["metadata"]["title"] == "Movie 1010"
        assert len(c.get("/v1/users/7/recommendations?k=4", headers=RH).json()["hits"]) == 4
        assert c.post("/v1/search/text", headers=RH, json={"query": "robots", "k": 2}).status_code == 200
        assert c.post("/v1/recommendations/next", headers=RH, json={"item_ids": [1, 2], "k": 2}).status_code == 200
        assert "annrec_http_requests_total" in c.get("/metrics", headers=RH).text
        assert c.get("/openapi.json").status_code == 200
        r = c.put("/v1/indexes/mf-ivf/items", headers=AH, json={"items": [{"id": 5000, "vector": [0.5] * DIM}]})
        assert r.status_code == 200 and r.json()["persisted"]
        assert c.delete("/v1/indexes/mf-ivf/items/5000", headers=AH).status_code == 200
        assert c.post("/v1/admin/reload", headers=AH).json()["generation"] >= 2


def test_auth_and_limits_over_http(served):
    srv, _ = served
    body = {"vector": [0.1] * DIM}
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/v1/indexes/mf-hnsw/search", json=body).status_code == 401
        assert c.post("/v1/indexes/mf-hnsw/search", json=body, headers={"X-API-Key": "x" * 20}).status_code == 401
        assert c.post("/v1/indexes/mf-hnsw/search", json=body,
                      headers={"Authorization": f"Bearer {READ_KEY}"}).status_code == 200
        assert c.post("/v1/admin/reload", headers=RH).status_code == 403
        assert c.delete("/v1/indexes/mf-hnsw/items/1001", headers=RH).status_code == 403
        raw = b'{"vector": [NaN' + b', 0.1' * (DIM - 1) + b']}'
        r = c.post("/v1/indexes/mf-hnsw/search", content=raw, headers={**RH, "Content-Type": "application/json"})
        assert r.status_code == 422 and "must be finite" in r.json()["message"]
        r = c.post("/v1/indexes/mf-hnsw/search", content=b"x" * 200_000,
                   headers={**RH, "Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("/v1/indexes/mf-hnsw/search", json={"vector": [0.1] * 5}, headers=RH)
        assert r.status_code == 422 and "dimension 5" in r.json()["message"]
        assert c.get("/v1/users/abc/recommendations", headers=RH).status_code == 404


def _exact(e: Embeddings, q: np.ndarray, k: int) -> list:
    return e.ids[np.argsort(-(e.vectors @ q), kind="stable")[:k]].tolist()


def _hammer(url: str, index: str, queries: np.ndarray, expected: list[list], stop: threading.Event,
            failures: list, counts: list, extra: dict) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        i = 0
        while not stop.is_set():
            j = i % len(queries)
            try:
                r = c.post(f"/v1/indexes/{index}/search", headers=RH,
                           json={"vector": queries[j].tolist(), "k": 5, "include_metadata": False, **extra})
                if r.status_code != 200:
                    failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
                elif [h["id"] for h in r.json()["hits"]] != expected[j]:
                    failures.append(f"wrong answer for query {j}: {r.json()['hits']} != {expected[j]}")
            except httpx.HTTPError as ex:
                failures.append(repr(ex))
            i += 1
        counts.append(i)


@pytest.mark.parametrize("index,extra", [("mf-hnsw", {"ef": 300}), ("mf-ivf", {"nprobe": 8})])
def test_searches_stay_correct_during_upserts_deletes_and_reloads(tmp_path, index, extra):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    e = Embeddings.load(d / "mf")
    queries = e.queries[:10]
    expected = [_exact(e, q, 5) for q in queries]
    app = create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY, persist="async",
                                   snapshot_every_writes=5))
    # new items are tiny vectors (inner products near 0, far below every true top-5 score), so the right
    # answers do not change; the first 1,200 outgrow the spare capacity reserved at load (10 % + 1,024), so
    # hnswlib also runs resize_index while the searches go on
    tiny = np.random.default_rng(3).normal(size=(200, DIM)) * 1e-3
    stop = threading.Event()
    failures: list = []
    counts: list = []
    with ThreadServer(app) as srv:
        threads = [threading.Thread(target=_hammer, args=(srv.url, index, queries, expected, stop, failures, counts,
                                                          extra)) for _ in range(4)]
        for t in threads:
            t.start()
        n_new = n_deleted = 0
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            served = app.state.registry.get(index)
            cap0 = served.index.raw.get_max_elements() if index == "mf-hnsw" else 0
            for rnd in range(9):
                batch = [{"id": 100_000 + n_new + i, "vector": tiny[i].tolist()} for i in range(200 if rnd < 6 else 20)]
                r = c.put(f"/v1/indexes/{index}/items", headers=AH, json={"items": batch})
                assert r.status_code == 200, r.text
                n_new += len(batch)
                r = c.delete(f"/v1/indexes/{index}/items/{100_000 + n_new - 1}", headers=AH)
                assert r.status_code == 200, r.text
                n_deleted += 1
                if rnd == 5 and index == "mf-hnsw":  # 1,200 upserts, no reload yet: hnswlib has grown
                    assert served.index.raw.get_max_elements() > cap0 >= N_ITEMS + 1024
                if rnd >= 6:  # then reloads (new snapshot loaded beside, swapped) while writes go on
                    r = c.post("/v1/admin/reload", headers=AH)
                    assert r.status_code == 200, r.text
                time.sleep(0.05)
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(60)
            n_live = N_ITEMS + n_new - n_deleted
            assert c.get(f"/v1/indexes/{index}", headers=RH).json()["count"] == n_live
    assert not failures, failures[:5]
    assert sum(counts) > 20  # the searches really ran alongside
    from annrec.index import load_index

    assert len(load_index(d / index)) == n_live  # and every write reached the disk


def test_serve_persists_writes_across_a_restart(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    v = [3.0] * DIM
    with ServerProcess(d) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.put("/v1/indexes/mf-hnsw/items", headers=AH,
                  json={"items": [{"id": 900001, "vector": v, "metadata": {"title": "kept"}},
                                  {"id": 1001, "vector": [-x for x in v]}]})
        assert r.status_code == 200 and r.json()["persisted"], r.text
        assert c.delete("/v1/indexes/mf-hnsw/items/1002", headers=AH).status_code == 200
    with ServerProcess(d) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        hits = c.post("/v1/indexes/mf-hnsw/search", headers=RH, json={"vector": v, "k": 1}).json()["hits"]
        assert hits[0]["id"] == 900001 and hits[0]["metadata"] == {"title": "kept"}
        assert c.get("/v1/indexes/mf-hnsw/items/1001?include_vector=true", headers=RH).json()["vector"][0] == -3.0
        assert c.get("/v1/indexes/mf-hnsw/items/1002", headers=RH).status_code == 404
        assert c.get("/v1/indexes/mf-hnsw", headers=RH).json()["count"] == N_ITEMS


def test_serve_refuses_to_start_without_keys_and_warns_without_auth(tmp_path, monkeypatch):
    for k in ("ANNREC_READ_KEY", "ANNREC_ADMIN_KEY", "ANNREC_INSECURE_NO_AUTH", "ANNREC_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    p = ServerProcess(d, keys=False)
    assert p.proc.wait(60) == 2
    assert "no API key given" in p.stop()
    with ServerProcess(d, "--insecure-no-auth", keys=False) as srv:
        assert httpx.get(srv.url + "/v1/indexes").status_code == 200
    assert "WITHOUT authentication" in srv.stop()
    p = ServerProcess(tmp_path / "does-not-exist")
    assert p.proc.wait(60) == 2 and "is not a folder" in p.stop()


def test_workers_2_accept_writes_and_apply_each_others(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    with ServerProcess(d, "--workers", "2") as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/v1/indexes/mf-ivf/search", headers=RH, json={"vector": [0.1] * DIM}).status_code == 200
        assert all(i["writable"] for i in c.get("/v1/indexes", headers=RH).json()["indexes"] if i["name"] != "seq")

        def generations() -> dict[int, int]:  # worker pid -> generation; fresh connections reach either worker
            seen = {}
            for _ in range(16):
                with httpx.Client(base_url=srv.url, timeout=30) as fresh:
                    j = fresh.get("/ready").json()
                    seen[j["worker"]] = j["generation"]
            return seen

        deadline = time.monotonic() + 30
        while len(generations()) < 2 and time.monotonic() < deadline:  # both workers up
            time.sleep(0.2)
        # writes through fresh connections land on both workers; each worker applies the others' from the log
        writers = set()
        for i in range(12):
            with httpx.Client(base_url=srv.url, timeout=30) as fresh:
                r = fresh.put("/v1/indexes/mf-ivf/items", headers=AH,
                              json={"items": [{"id": 900_000 + i, "vector": [float(i)] * DIM}]})
                assert r.status_code == 200, r.text
                writers.add(fresh.get("/ready").json()["worker"])
        with httpx.Client(base_url=srv.url, timeout=30) as fresh:
            assert fresh.delete("/v1/indexes/mf-ivf/items/900000", headers=AH).status_code == 200
        seen_all: dict[int, bool] = {}
        while time.monotonic() < deadline + 30:  # within reload_poll_s (0.5 s) every worker has every write
            for _ in range(8):
                with httpx.Client(base_url=srv.url, timeout=30) as fresh:
                    worker = fresh.get("/ready").json()["worker"]
                    ok = fresh.get("/v1/indexes/mf-ivf/items/900000", headers=RH).status_code == 404 and all(
                        fresh.get(f"/v1/indexes/mf-ivf/items/{900_000 + i}", headers=RH).status_code == 200
                        for i in range(1, 12))
                    seen_all[worker] = seen_all.get(worker, False) or ok
            if len(seen_all) == 2 and all(seen_all.values()):
                break
            time.sleep(0.2)
        assert len(seen_all) == 2 and all(seen_all.values()), seen_all
        r = c.post("/v1/admin/reload", headers=AH)
        assert r.status_code == 200 and r.json()["generation"] == 2
        seen = {}
        while time.monotonic() < deadline:  # the other worker polls the reload token every 0.5 s
            seen.update(generations())
            if len(seen) == 2 and set(seen.values()) == {2}:
                break
            time.sleep(0.2)
        assert len(seen) == 2 and set(seen.values()) == {2}, seen
