"""Browser safety against a real uvicorn on 127.0.0.1: cross-site content types, foreign Host, foreign Origin."""

from __future__ import annotations

import httpx
from _service_fixtures import ADMIN_KEY, DIM, READ_KEY, ThreadServer, make_model_dir

from annrec.service import create_app
from annrec.service.guard import default_hosts
from annrec.service.settings import load_settings


def _server(tmp_path, **kw):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    return ThreadServer(create_app(load_settings(model_dir=d, **kw)))


def test_without_keys_a_web_page_cannot_drive_the_server(tmp_path):
    with _server(tmp_path, insecure_no_auth=True) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        # what a cross-site page can send without a CORS preflight: a text/plain (or form) body, with its Origin
        r = c.post("/v1/admin/reload", content=b"{}", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["message"]
        r = c.post("/v1/admin/reload", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "cors_origins" in r.json()["message"]
        r = c.put("/v1/indexes/mf-hnsw/items", headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
                  content=b'{"items": [{"id": 1, "vector": [0]}]}')
        assert r.status_code == 403
        # DNS rebinding: the page's own name resolving to 127.0.0.1 — the Host header gives it away
        for method, path in (("GET", "/v1/indexes"), ("PUT", "/v1/indexes/mf-hnsw/items")):
            r = c.request(method, path, headers={"Host": "evil.example"}, json={"items": []})
            assert r.status_code == 400 and "evil.example" in r.json()["message"], (method, r.text)
        # curl and scripts (no Origin, JSON bodies) are served as before, on any allowed name
        assert c.post("/v1/indexes/mf-hnsw/search", json={"vector": [0.1] * DIM, "k": 2}).status_code == 200
        assert c.get("/v1/indexes", headers={"Host": f"localhost:{srv.port}"}).status_code == 200
        r = c.post("/v1/indexes/mf-hnsw/search", json={"vector": [0.1] * DIM, "k": 2},
                   headers={"Origin": srv.url})  # the server's own origin (its /docs page)
        assert r.status_code == 200
        assert c.post("/v1/admin/reload").status_code == 200  # no body: no content type needed


def test_the_same_checks_apply_with_keys_and_cors_opens_named_origins(tmp_path):
    origin = "https://app.example"
    with _server(tmp_path, read_key=READ_KEY, admin_key=ADMIN_KEY, cors_origins=[origin]) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        h = {"X-API-Key": ADMIN_KEY}
        assert c.post("/v1/admin/reload", headers={**h, "Origin": "https://evil.example"}).status_code == 403
        assert c.get("/v1/indexes", headers={**h, "Host": "rebound.example"}).status_code == 400
        pre = c.options("/v1/indexes/mf-hnsw/search", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key,content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
        r = c.post("/v1/indexes/mf-hnsw/search", json={"vector": [0.1] * DIM, "k": 2},
                   headers={"X-API-Key": READ_KEY, "Origin": origin})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin


def test_default_hosts():
    assert default_hosts("127.0.0.1") == ["127.0.0.1", "::1", "localhost"]
    assert default_hosts("0.0.0.0") == ["*"] and default_hosts("::") == ["*"]
    assert "myhost" in default_hosts("myhost")


def test_read_key_sees_no_server_paths_and_405_names_every_method(tmp_path):
    with _server(tmp_path, read_key=READ_KEY, admin_key=ADMIN_KEY) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        read = c.get("/v1/indexes/mf-hnsw", headers={"X-API-Key": READ_KEY}).json()
        admin = c.get("/v1/indexes/mf-hnsw", headers={"X-API-Key": ADMIN_KEY}).json()
        assert read["path"] is None and read["embeddings"] is None and "embeddings" not in read["source"]
        assert str(tmp_path) not in str(read)
        assert admin["path"].endswith("mf-hnsw") and admin["source"]["embeddings"].endswith("mf")
        r = c.request("PATCH", "/v1/indexes/mf-hnsw/items/1001", headers={"X-API-Key": ADMIN_KEY})
        assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, HEAD"


def test_metadata_and_answers_are_bounded(tmp_path):
    with _server(tmp_path, read_key=READ_KEY, admin_key=ADMIN_KEY, max_metadata_bytes=1024,
                 max_response_bytes=4096) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        ah, rh = {"X-API-Key": ADMIN_KEY}, {"X-API-Key": READ_KEY}
        r = c.put("/v1/indexes/mf-hnsw/items", headers=ah,
                  json={"items": [{"id": 5, "vector": [0.1] * DIM, "metadata": {"blob": "x" * 2000}}]})
        assert r.status_code == 422 and "max_metadata_bytes" in r.json()["message"]
        assert c.get("/v1/indexes/mf-hnsw/items/5", headers=rh).status_code == 404  # nothing written
        # metadata within the limit, but a search returning many such hits would pass max_response_bytes
        items = [{"id": 500_000 + i, "vector": [0.01 * (i + 1)] * DIM, "metadata": {"blob": "y" * 900}}
                 for i in range(8)]
        assert c.put("/v1/indexes/mf-hnsw/items", headers=ah, json={"items": items}).status_code == 200
        q = {"vector": [0.01] * DIM, "k": 8, "allowed_ids": [it["id"] for it in items]}
        r = c.post("/v1/indexes/mf-hnsw/search", headers=rh, json=q)  # 8 hits x ~900 bytes of metadata
        assert r.status_code == 413 and "max_response_bytes" in r.json()["message"]
        r = c.post("/v1/indexes/mf-hnsw/search", headers=rh, json={**q, "k": 3})
        assert r.status_code == 200 and len(r.json()["hits"]) == 3
        r = c.post("/v1/indexes/mf-hnsw/search", headers=rh, json={**q, "include_metadata": False})
        assert r.status_code == 200 and len(r.json()["hits"]) == 8


def test_keys_from_files_never_reach_the_workers_environment_or_command_line(tmp_path):
    import os
    import time
    from pathlib import Path

    from _service_fixtures import ServerProcess

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    (tmp_path / "read.key").write_text(READ_KEY + "\n")
    (tmp_path / "admin.key").write_text(ADMIN_KEY + "\n")
    os.chmod(tmp_path / "admin.key", 0o600)
    srv = ServerProcess(d, "--workers", "2", "--read-key-file", str(tmp_path / "read.key"),
                        "--admin-key-file", str(tmp_path / "admin.key"), keys=False).wait_ready()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/v1/indexes", headers={"X-API-Key": READ_KEY}).status_code == 200
            assert c.get("/v1/indexes").status_code == 401
            assert c.post("/v1/admin/reload", headers={"X-API-Key": READ_KEY}).status_code == 403
            assert c.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
            metrics = c.get("/metrics", headers={"X-API-Key": ADMIN_KEY}).text
        deadline = time.monotonic() + 30
        pids: list[int] = []
        while time.monotonic() < deadline and len(pids) < 2:
            pids = [int(p) for p in Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()]
            time.sleep(0.2)
        assert pids  # the worker processes (and multiprocessing's helpers)
        for pid in [srv.proc.pid, *pids]:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes() if pid != srv.proc.pid else b""
            for key in (READ_KEY, ADMIN_KEY):
                assert key.encode() not in cmdline and key.encode() not in environ, pid
        for key in (READ_KEY, ADMIN_KEY):
            assert key not in metrics
    finally:
        out = srv.stop()
    assert READ_KEY not in out and ADMIN_KEY not in out  # nor in the logs


def test_an_oversized_batch_is_refused_before_the_request_model_validates_it(tmp_path, monkeypatch):
    from annrec.service import schemas as S

    validated = []
    real = S.SearchRequest.model_validate
    monkeypatch.setattr(S.SearchRequest, "model_validate",
                        classmethod(lambda cls, *a, **k: validated.append(1) or real(*a, **k)))
    with _server(tmp_path, read_key=READ_KEY, admin_key=ADMIN_KEY, max_batch=4) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v1/indexes/mf-hnsw/search", headers={"X-API-Key": READ_KEY},
                   json={"vectors": [[0.1] * DIM] * 5, "k": 2})
        assert r.status_code == 422 and "max_batch" in r.json()["message"] and validated == []
        r = c.put("/v1/indexes/mf-hnsw/items", headers={"X-API-Key": ADMIN_KEY},
                  json={"items": [{"id": 900 + i, "vector": [0.1] * DIM} for i in range(5)]})
        assert r.status_code == 422 and "max_batch" in r.json()["message"]
        r = c.post("/v1/indexes/mf-hnsw/search", headers={"X-API-Key": READ_KEY},
                   json={"vectors": [[0.1] * DIM] * 4, "k": 2})
        assert r.status_code == 200 and validated == [1]
