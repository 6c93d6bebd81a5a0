"""The served storage engine: visibility after commit, group commit, background snapshots, kill -9 and restart,
stale-folder clean-up, no leak of replaced snapshots."""

from __future__ import annotations

import gc
import signal
import threading
import time
import weakref

import httpx
import numpy as np
from _service_fixtures import ADMIN_KEY, DIM, N_ITEMS, READ_KEY, ServerProcess, make_model_dir
from fastapi.testclient import TestClient

from annrec.index import load_index, storage
from annrec.index.wal import WriteLog
from annrec.service import create_app
from annrec.service.settings import load_settings

AH = {"X-API-Key": ADMIN_KEY}
RH = {"X-API-Key": READ_KEY}


def _app(d, **kw):
    return create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY, **kw))


def test_no_read_sees_a_write_before_its_commit(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    app = _app(d)
    with TestClient(app) as c:
        log = app.state.registry.get("mf-hnsw").store.log
        real_commit = log.commit
        committing, release = threading.Event(), threading.Event()

        def slow_commit():
            committing.set()
            release.wait(10)
            real_commit()

        log.commit = slow_commit
        result = {}
        t = threading.Thread(target=lambda: result.update(r=c.put(
            "/v1/indexes/mf-hnsw/items", headers=AH, json={"items": [{"id": 424242, "vector": [3.0] * DIM}]})))
        t.start()
        assert committing.wait(10)
        # logged but not committed: neither a lookup nor a search sees it
        assert c.get("/v1/indexes/mf-hnsw/items/424242", headers=RH).status_code == 404
        hits = c.post("/v1/indexes/mf-hnsw/search", headers=RH, json={"vector": [3.0] * DIM, "k": 3}).json()["hits"]
        assert 424242 not in [h["id"] for h in hits]
        release.set()
        t.join(10)
        assert result["r"].status_code == 200
        assert c.get("/v1/indexes/mf-hnsw/items/424242", headers=RH).status_code == 200


def test_concurrent_writes_share_commits(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    app = _app(d)
    with TestClient(app) as c:
        log = app.state.registry.get("mf-ivf").store.log
        real_commit, commits = log.commit, []

        def counted():
            commits.append(1)
            time.sleep(0.05)  # an fsync that takes a while: the writes arriving meanwhile wait for the next commit
            real_commit()

        log.commit = counted
        codes = []

        def put(i):
            r = c.put("/v1/indexes/mf-ivf/items", headers=AH, json={"items": [{"id": 800_000 + i, "vector": [0.5] * DIM}]})
            codes.append(r.status_code)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert codes == [200] * 16
        assert len(commits) < 16  # group commit
        assert WriteLog(d / "mf-ivf").max_seq() == 16
    assert {800_000 + i for i in range(16)} <= set(load_index(d / "mf-ivf").ids.tolist())


def test_snapshot_every_n_writes_trims_the_log_and_keeps_one_snapshot(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    app = _app(d, snapshot_every_writes=5)
    with TestClient(app) as c:
        for i in range(6):
            assert c.put("/v1/indexes/mf-hnsw/items", headers=AH,
                         json={"items": [{"id": 700_000 + i, "vector": [0.25] * DIM}]}).status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st = c.get("/v1/indexes/mf-hnsw", headers=RH).json()["storage"]
            if st["snapshot_seq"] >= 5:
                break
            time.sleep(0.1)
        assert st["snapshot_seq"] >= 5 and st["snapshots_written"] >= 1 and st["applied_seq"] == 6
        snaps = [p.name for p in (d / "mf-hnsw").iterdir() if p.name.startswith(("snapshot-", ".snapshot-"))]
        assert snaps == [storage.current_name(d / "mf-hnsw")]
        assert WriteLog(d / "mf-hnsw").count() == 6 - st["snapshot_seq"]
        # the snapshot alone (no log) already holds the first five writes
        from annrec.index.folder import _read_files

        snap = _read_files(type(app.state.registry.get("mf-hnsw").index), storage.snapshot_folder(d / "mf-hnsw"))
        assert {700_000 + i for i in range(5)} <= set(snap.ids.tolist())


def test_a_reload_frees_the_replaced_indexes(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    app = _app(d)
    with TestClient(app) as c:
        c.put("/v1/indexes/mf-hnsw/items", headers=AH, json={"items": [{"id": 5, "vector": [0.1] * DIM}]})
        old = weakref.ref(app.state.registry.get("mf-hnsw"))
        old_index = weakref.ref(app.state.registry.get("mf-hnsw").index)
        assert c.post("/v1/admin/reload", headers=AH).status_code == 200
        gc.collect()
        assert old() is None and old_index() is None
        assert c.get("/v1/indexes/mf-hnsw/items/5", headers=RH).status_code == 200  # replayed from the log


def test_kill_9_loses_no_acknowledged_write_and_restart_cleans_up(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    srv = ServerProcess(d).wait_ready()
    acked = {}
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for i in range(20):
            v = [float(i)] * DIM
            assert c.put("/v1/indexes/mf-hnsw/items", headers=AH,
                         json={"items": [{"id": 600_000 + i, "vector": v, "metadata": {"n": i}}]}).status_code == 200
            acked[600_000 + i] = v
        for i in range(0, 20, 4):
            assert c.delete(f"/v1/indexes/mf-hnsw/items/{600_000 + i}", headers=AH).status_code == 200
            acked.pop(600_000 + i)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    # what earlier kills could leave: temporary and replaced folders (any pid), a half-written snapshot
    (d / ".mf-hnsw.old-1").mkdir()
    (d / ".mf-hnsw.old-1" / "manifest.json").write_text('{"kind": "annrec.index"}')
    (d / ".mf-ivf.tmp-x1y2").mkdir()
    (d / "mf-hnsw" / ".snapshot-000000000003-0badf00d.tmp").mkdir()
    with ServerProcess(d) as srv2, httpx.Client(base_url=srv2.url, timeout=30) as c:
        for i, v in acked.items():
            r = c.get(f"/v1/indexes/mf-hnsw/items/{i}?include_vector=true", headers=RH)
            assert r.status_code == 200 and np.allclose(r.json()["vector"], v) and r.json()["metadata"] == {"n": i - 600_000}
        for i in range(0, 20, 4):
            assert c.get(f"/v1/indexes/mf-hnsw/items/{600_000 + i}", headers=RH).status_code == 404
        assert c.get("/v1/indexes/mf-hnsw", headers=RH).json()["count"] == N_ITEMS + 15
        assert not any(p.name.startswith(".") for p in d.iterdir())
        assert not (d / "mf-hnsw" / ".snapshot-000000000003-0badf00d.tmp").exists()
    # a clean stop writes a snapshot holding every write
    assert storage.current_name(d / "mf-hnsw").startswith("snapshot-000000000025-")
