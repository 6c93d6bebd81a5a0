"""The storage engine: write-ahead log, versioned snapshots, crash windows, replay, trimming, clean-up."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from annrec.errors import ArtifactError
from annrec.index import build_index, load_index, storage
from annrec.index.folder import write_files
from annrec.index.wal import LOG_FILE, WriteLog, group_entries, replay

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 8)).astype(np.float32)


def _ids(index) -> set:
    return set(index.ids.tolist())


# ----------------------------------------------------------------------------- the log
def test_log_keeps_order_types_vectors_and_metadata_and_trims(tmp_path):
    log = WriteLog(tmp_path)
    assert log.max_seq() == 0 and log.entries_after(0) == []
    seq = log.append([("upsert", 7, X[0], {"title": "a"}), ("upsert", "s-1", X[1], None), ("delete", 7, None, None)])
    assert seq == 3 and log.max_seq() == 3
    e = log.entries_after(0)
    assert [(x.seq, x.op, x.id) for x in e] == [(1, "upsert", 7), (2, "upsert", "s-1"), (3, "delete", 7)]
    assert isinstance(e[0].id, int) and isinstance(e[1].id, str)
    assert np.array_equal(e[0].vector, X[0]) and e[0].metadata == {"title": "a"} and e[1].metadata is None
    assert [x.seq for x in log.entries_after(1)] == [2, 3]
    assert log.trim(2) == 2 and log.count() == 1 and log.trimmed_through() == 2
    log.append([("upsert", 8, X[2], None)])
    assert log.max_seq() == 4  # sequence numbers are never reused after a trim
    log.close()


def test_a_failed_transaction_logs_nothing(tmp_path):
    log = WriteLog(tmp_path)
    log.begin()
    log.insert([("upsert", 1, X[0], None)])
    log.rollback()
    assert log.count() == 0 and log.max_seq() == 0
    with pytest.raises(Exception):
        log.append([("upsert", 1, X[0], None), ("bogus", 2, None, None)])  # CHECK constraint: all or nothing
    assert log.count() == 0


def test_group_entries_splits_runs_at_a_repeated_id():
    from annrec.index.wal import LogEntry

    e = [LogEntry(1, "upsert", 1), LogEntry(2, "upsert", 2), LogEntry(3, "upsert", 1), LogEntry(4, "delete", 2)]
    assert [(op, [x.seq for x in run]) for op, run in group_entries(e)] == [
        ("upsert", [1, 2]), ("upsert", [3]), ("delete", [4])]


def test_load_replays_the_log_after_the_snapshot(tmp_path):
    path = build_index(X, np.arange(60), "l2", backend="hnswlib").save(tmp_path / "idx")
    log = WriteLog(path)
    log.append([("upsert", 100, X[5] + 1, {"t": 1}), ("upsert", 3, X[3] * 2, None), ("delete", 7, None, None),
                ("upsert", 100, X[6] + 1, None), ("delete", 12345, None, None)])  # an already-absent id: skipped
    index = load_index(path)
    assert index.snapshot_seq == 0 and index.applied_seq == 5
    assert _ids(index) == (set(range(60)) - {7}) | {100}
    assert np.allclose(index.get_vector(100), X[6] + 1) and index.items[100] == {"t": 1}
    assert np.allclose(index.get_vector(3), X[3] * 2)
    # trimmed past the snapshot: the entries the snapshot lacks are gone, which must not pass silently
    log.trim(5)
    with pytest.raises(ArtifactError, match="trimmed through write 5"):
        load_index(path)
    log.close()


# ----------------------------------------------------------------------------- snapshot switch
def _in_child(fn) -> int:
    """Run ``fn`` in a forked child and return its exit status: a STEP_HOOK calling os._exit there is a kill
    (no exception handler, no clean-up runs)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _kill_at(step):
    def hook(name):
        if name == step:
            os._exit(9)
    return hook


SWITCH_STEPS = ["snapshot-files", "snapshot-rename", "pointer-write", "pointer-rename", "pointer-done", "manifest",
                "retire"]


@pytest.mark.parametrize("backend", ["hnswlib", "faiss"])
@pytest.mark.parametrize("step", SWITCH_STEPS)
def test_a_kill_at_any_step_of_a_snapshot_switch_leaves_the_old_or_the_new_index_whole(tmp_path, backend, step):
    path = build_index(X[:40], np.arange(40), "l2", backend=backend).save(tmp_path / "idx")
    old = storage.current_name(path)
    new_index = build_index(X, np.arange(100, 160), "l2", backend=backend)

    def run():
        storage.STEP_HOOK = _kill_at(step)
        new_index.save(path)

    assert _in_child(run) == 9
    loaded = load_index(path)
    assert _ids(loaded) in ({*range(40)}, {*range(100, 160)})
    became_new = _ids(loaded) == set(range(100, 160))
    assert became_new == (SWITCH_STEPS.index(step) >= SWITCH_STEPS.index("pointer-done"))
    assert (loaded.search(X[:3], 1)[0][:, 0] == (np.arange(100, 103) if became_new else np.arange(3))).all()
    # start-up clean-up removes what the kill left, then the folder holds one snapshot and works as before
    storage.cleanup(path)
    snaps = [p.name for p in path.iterdir() if p.name.startswith(("snapshot-", ".snapshot-", ".CURRENT."))]
    assert snaps == [storage.current_name(path)]
    assert (storage.current_name(path) == old) != became_new
    new_index.save(path)
    assert _ids(load_index(path)) == set(range(100, 160))


BUILD_STEPS = ["snapshot-files", "snapshot-rename", "pointer-write", "pointer-rename", "pointer-done", "build-rename"]


@pytest.mark.parametrize("step", BUILD_STEPS)
def test_a_kill_during_a_fresh_build_leaves_no_index_or_a_whole_one(tmp_path, step):
    index = build_index(X, np.arange(60), "ip", backend="hnswlib")
    dest = tmp_path / "models" / "idx"

    def run():
        storage.STEP_HOOK = _kill_at(step)
        index.save(dest)

    assert _in_child(run) == 9
    assert not dest.exists()  # every step is before the one rename that publishes the folder
    leftovers = [p.name for p in dest.parent.iterdir()]
    assert leftovers and all(n.startswith(".idx.tmp-") for n in leftovers)
    assert storage.cleanup_siblings(dest.parent) == leftovers  # the writer is dead: its lock is free
    assert list(dest.parent.iterdir()) == []
    index.save(dest)
    assert _ids(load_index(dest)) == set(range(60))


def test_cleanup_keeps_a_temporary_folder_whose_writer_is_alive(tmp_path):
    import fcntl

    tmp = tmp_path / ".idx.tmp-abc"
    tmp.mkdir()
    fd = os.open(tmp / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    old = tmp_path / ".idx.old-1"  # a replaced folder left by a kill, named after pid 1: removed all the same
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    assert storage.cleanup_siblings(tmp_path) == [".idx.old-1"]
    assert tmp.exists()
    os.close(fd)
    assert storage.cleanup_siblings(tmp_path) == [".idx.tmp-abc"]


def test_a_flat_folder_still_loads_and_is_converted_by_the_next_save(tmp_path):
    index = build_index(X, np.arange(60), "l2", backend="faiss")
    flat = tmp_path / "flat"
    flat.mkdir()
    write_files(index, flat)
    m = json.loads((flat / "manifest.json").read_text())
    del m["seq"]
    (flat / "manifest.json").write_text(json.dumps(m))
    assert storage.current_name(flat) is None and _ids(load_index(flat)) == set(range(60))
    index.remove([5])
    index.save(flat)
    assert storage.current_name(flat) is not None
    assert not (flat / "index.faiss").exists() and not (flat / "ids.json").exists()
    top = json.loads((flat / "manifest.json").read_text())
    assert top["layout"] == "versioned" and top["format_version"] == 2
    assert _ids(load_index(flat)) == set(range(60)) - {5}


def test_a_rebuild_into_a_served_folder_supersedes_its_log(tmp_path):
    path = build_index(X, np.arange(60), "l2", backend="hnswlib").save(tmp_path / "idx")
    WriteLog(path).append([("upsert", 500, X[0], None)])
    assert 500 in load_index(path)
    build_index(X[:10], np.arange(10), "l2", backend="hnswlib").save(path)
    loaded = load_index(path)
    assert _ids(loaded) == set(range(10)) and loaded.snapshot_seq == 1
    log = WriteLog(path)
    assert log.count() == 0 and log.trimmed_through() == 1
    log.append([("upsert", 501, X[1], None)])  # writes after the rebuild apply to the new index
    assert _ids(load_index(path)) == set(range(10)) | {501}


def test_pointer_to_a_missing_snapshot_is_an_artifact_error(tmp_path):
    path = build_index(X, np.arange(60), "l2", backend="hnswlib").save(tmp_path / "idx")
    (path / storage.CURRENT).write_text("snapshot-000000000009-deadbeef\n")
    with pytest.raises(ArtifactError, match="not a complete snapshot folder"):
        load_index(path)


def test_replay_without_a_log_is_a_no_op(tmp_path):
    path = build_index(X, np.arange(60), "l2", backend="hnswlib").save(tmp_path / "idx")
    assert not (path / LOG_FILE).exists()
    index = load_index(path)
    assert replay(index, path, 0) == 0 and not (path / LOG_FILE).exists()
