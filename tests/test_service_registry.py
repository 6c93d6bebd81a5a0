"""The service's building blocks: readers-writer lock, artifact discovery, the query-encoder hook, persistence."""

from __future__ import annotations

import sys
import threading
import time
import types

import numpy as np
import pytest
from fastapi.testclient import TestClient

from _service_fixtures import ADMIN_KEY, AH, DIM, N_ITEMS, READ_KEY, RH, make_model_dir
from annrec.embeddings import Embeddings
from annrec.errors import ArtifactError, DataNotFoundError
from annrec.index import build_index
from annrec.service import Registry, create_app, discover, load_settings, query_encoder
from annrec.service.rwlock import RWLock


# ----------------------------------------------------------------------------- RWLock
def test_rwlock_readers_share_writers_exclude():
    lock = RWLock()
    inside = []
    both = threading.Barrier(2, timeout=5)

    def reader():
        with lock.read():
            inside.append(1)
            both.wait()  # both readers are inside at once, or this times out

    ts = [threading.Thread(target=reader) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert len(inside) == 2 and lock.readers == 0

    order = []
    with lock.read():
        w = threading.Thread(target=lambda: (lock.write().__enter__(), order.append("w")))
        w.start()
        time.sleep(0.1)
        assert order == []  # the writer waits for the reader
    w.join(5)
    assert order == ["w"]


def test_rwlock_prefers_waiting_writers():
    lock = RWLock()
    events = []
    r1 = lock.read()
    r1.__enter__()

    def writer():
        with lock.write():
            events.append("writer")

    def late_reader():
        with lock.read():
            events.append("late reader")

    tw = threading.Thread(target=writer)
    tw.start()
    time.sleep(0.05)
    tr = threading.Thread(target=late_reader)
    tr.start()
    time.sleep(0.05)
    assert events == []  # the late reader queues behind the waiting writer
    r1.__exit__(None, None, None)
    tw.join(5)
    tr.join(5)
    assert events == ["writer", "late reader"]


# ----------------------------------------------------------------------------- discovery
def test_discover_names_nesting_hidden_and_unknown(tmp_path):
    d = make_model_dir(tmp_path / "models", with_text=False)
    x = np.eye(4, dtype=np.float32)
    build_index(x, [0, 1, 2, 3], "l2", backend="faiss").save(d / "group" / "small")
    build_index(x, [0, 1, 2, 3], "l2", backend="faiss").save(d / ".hidden-tmp")
    (d / "results").mkdir()
    (d / "results" / "manifest.json").write_text('{"kind": "annrec.bench"}')
    (d / "bad name!").mkdir()
    (d / "bad name!" / "manifest.json").write_text('{"kind": "annrec.index"}')
    found = discover(d)
    assert set(found.indexes) == {"mf-hnsw", "mf-ivf", "group.small"}
    assert set(found.embeddings) == {"mf", "seq"}
    assert any("annrec.bench" in s for s in found.skipped) and any("bad name" in s for s in found.skipped)
    with pytest.raises(DataNotFoundError, match="not a folder"):
        discover(tmp_path / "nope")
    (d / "broken").mkdir()
    (d / "broken" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        discover(d)


def test_a_single_artifact_folder_is_a_model_dir(tmp_path):
    x = np.eye(4, dtype=np.float32)
    build_index(x, [0, 1, 2, 3], "l2", backend="faiss").save(tmp_path / "only")
    s = load_settings(model_dir=tmp_path / "only", insecure_no_auth=True)
    snap = Registry(s).load()
    assert list(snap.indexes) == ["only"]


def test_index_finds_moved_embeddings_by_name(tmp_path):
    d = make_model_dir(tmp_path / "a", with_text=False, with_sequence=False)
    moved = tmp_path / "b"
    d.rename(moved)  # the absolute source path is stale now; embeddings_name still matches
    snap = Registry(load_settings(model_dir=moved, insecure_no_auth=True)).load()
    assert snap.indexes["mf-hnsw"].recommender is not None
    assert snap.indexes["mf-hnsw"].embeddings_path == moved / "mf"


def test_empty_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="no index or embeddings"):
        Registry(load_settings(model_dir=tmp_path, insecure_no_auth=True)).load()


# ----------------------------------------------------------------------------- query encoder hook
def test_query_encoder_hook_imports_the_trainer_module(monkeypatch):
    emb = Embeddings(np.eye(3, dtype=np.float32), [0, 1, 2], "cosine", manifest={"trainer": "sequence"})
    monkeypatch.delitem(sys.modules, "annrec.train.sequence", raising=False)
    mod = types.ModuleType("annrec.train.sequence")
    mod.query_encoder_from_embeddings = lambda e: ("encoder-for", e.dim)
    monkeypatch.setitem(sys.modules, "annrec.train.sequence", mod)
    assert query_encoder(emb) == ("sequence", ("encoder-for", 3))
    mod2 = types.ModuleType("annrec.train.sequence")  # module without the function: no encoder
    monkeypatch.setitem(sys.modules, "annrec.train.sequence", mod2)
    assert query_encoder(emb) is None
    assert query_encoder(Embeddings(np.eye(3, dtype=np.float32), [0, 1, 2], "ip", manifest={"trainer": "mf"})) is None


def test_real_sequence_module_is_found_through_the_hook(tmp_path):
    """annrec.train.sequence offers query_encoder_from_embeddings; an artifact without its encoder files is
    served for vector search and reported, and /v1/recommendations/next says no sequence model is loaded."""
    pytest.importorskip("annrec.train.sequence")
    d = make_model_dir(tmp_path / "m", with_text=False)
    app = create_app(load_settings(model_dir=d, read_key=READ_KEY))
    with TestClient(app) as c:
        info = c.get("/v1/indexes/seq", headers=RH).json()
        assert info["query_encoder"] is None and "sequence encoder files" in info["query_encoder_error"]
        r = c.post("/v1/recommendations/next", json={"item_ids": [1, 2]}, headers=RH)
        assert r.status_code == 404 and "no sequence model loaded" in r.json()["message"]


def test_a_failing_encoder_is_reported_not_fatal(tmp_path, monkeypatch):
    from annrec.service import register_query_encoder

    def broken(emb):
        raise RuntimeError("weights missing")

    register_query_encoder("text", broken)
    try:
        d = make_model_dir(tmp_path / "m", with_sequence=False)
        app = create_app(load_settings(model_dir=d, read_key=READ_KEY))
        with TestClient(app) as c:
            info = c.get("/v1/indexes/words-flat", headers=RH).json()
            assert info["query_encoder"] is None and "weights missing" in info["query_encoder_error"]
            r = c.post("/v1/search/text", json={"query": "x"}, headers=RH)
            assert r.status_code == 404 and "no text model loaded" in r.json()["message"]
            assert c.post("/v1/indexes/words-flat/search", json={"vector": [0.1] * 8}, headers=RH).status_code == 200
    finally:
        register_query_encoder("text", None)


# ----------------------------------------------------------------------------- persistence
def test_failed_commit_is_a_503_and_changes_nothing(tmp_path):
    import sqlite3

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    app = create_app(load_settings(model_dir=d, admin_key=ADMIN_KEY))
    with TestClient(app) as c:
        log = app.state.registry.get("mf-ivf").store.log
        real_insert = log.insert
        log.insert = lambda rows: (_ for _ in ()).throw(sqlite3.OperationalError("database or disk is full"))
        r = c.put("/v1/indexes/mf-ivf/items", headers=AH, json={"items": [{"id": 10**6, "vector": [0.1] * DIM}]})
        assert r.status_code == 503 and "disk is full" in r.json()["message"] and "nothing was changed" in \
            r.json()["message"]
        assert c.get(f"/v1/indexes/mf-ivf/items/{10**6}", headers=AH).status_code == 404  # never visible
        log.insert = real_insert
        r = c.put("/v1/indexes/mf-ivf/items", headers=AH, json={"items": [{"id": 2, "vector": [0.1] * DIM}]})
        assert r.status_code == 200 and r.json()["persisted"] and r.json()["seq"] == 1
    from annrec.index import load_index

    idx = load_index(d / "mf-ivf")
    assert 10**6 not in idx and np.allclose(idx.get_vector(2), 0.1)


def test_failed_snapshot_loses_nothing_and_is_counted(tmp_path, monkeypatch):
    from annrec.index import load_index, storage

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    before = storage.current_name(d / "mf-ivf")
    app = create_app(load_settings(model_dir=d, admin_key=ADMIN_KEY))
    with TestClient(app) as c:
        store = app.state.registry.get("mf-ivf").store
        r = c.put("/v1/indexes/mf-ivf/items", headers=AH, json={"items": [{"id": 3, "vector": [0.2] * DIM}]})
        assert r.status_code == 200
        monkeypatch.setattr(storage, "new_snapshot", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
        assert store.snapshot() is False  # the forked writer fails: reported, retried later
        assert "exited with status 1" in c.get("/v1/indexes/mf-ivf", headers=AH).json()["storage"]["snapshot_error"]
        assert 'annrec_index_snapshot_failures_total{index="mf-ivf"} 1.0' in c.get("/metrics", headers=AH).text
        assert storage.current_name(d / "mf-ivf") == before
        assert np.allclose(load_index(d / "mf-ivf").get_vector(3), 0.2)  # in the log: a restart replays it
        monkeypatch.undo()
        assert store.snapshot() is True
        assert c.get("/v1/indexes/mf-ivf", headers=AH).json()["storage"]["snapshot_seq"] == 1
    assert storage.current_name(d / "mf-ivf").startswith("snapshot-000000000001-")


def test_default_index_setting_picks_the_recommender(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    app = create_app(load_settings(model_dir=d, read_key=READ_KEY, default_index="mf-ivf"))
    with TestClient(app) as c:
        assert c.get("/v1/users/1/recommendations", headers=RH).json()["index"] == "mf-ivf"


def test_cli_serve_check_lists_the_indexes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from annrec.cli import app as cli_app

    monkeypatch.delenv("ANNREC_CONFIG", raising=False)
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    res = CliRunner().invoke(cli_app, ["serve", "--model-dir", str(d), "--check", "--read-key", READ_KEY],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"mf-hnsw: hnswlib ip dim=16 count={N_ITEMS} trainer=mf users=True" in res.output
    assert "mf-ivf: faiss" in res.output
    assert not any(p.name.startswith(".") for p in d.iterdir())  # --check writes nothing
