"""The storage engine under a served index: writes go to the write-ahead log first, snapshots in the background.

Per writable index, one :class:`IndexStore`:

* **commit** (one committer thread): the writes waiting at that moment share one SQLite transaction (group
  commit). Inside it the entries other worker processes logged since are applied first, then each write is
  checked against the index (an unknown id to delete fails that write alone), logged, and committed
  (``persist: sync``: ``synchronous=FULL``, fsynced before the answer). Only then are the committed entries
  read back from the log and applied to the in-memory index, under the readers-writer lock held exclusively
  for the apply alone: no search ever sees a write that is not committed.
* **snapshot** (one snapshot thread): every ``snapshot_every_writes`` logged items or ``snapshot_interval_s``
  seconds (when there is anything new) and at shut-down, the index is written as a new versioned snapshot
  (:mod:`annrec.index.storage`) by a forked child process from the copy-on-write image of this process —
  Redis's ``BGSAVE`` scheme: the parent holds the commit lock only for the ``fork()`` (milliseconds), never
  the readers-writer lock, and the child's writing holds no lock or GIL of the server (it runs at nice 19,
  so it takes the CPU the searches leave). The child names the
  new snapshot in ``CURRENT``; the parent then trims the log through the snapshot's sequence number (and
  no further than every live worker has applied) and removes older snapshots.
* **follow** (workers > 1): the committer also wakes every ``reload_poll_s`` and applies what other workers
  logged, so a write acknowledged by one worker is visible through all within that delay.

Errors: a commit that fails (disk full, a locked database past its timeout) answers 503 and changes nothing;
a failed snapshot loses nothing (the log still holds every write) and is retried at the next trigger.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from annrec.errors import AnnrecError, UnknownIdError
from annrec.index import Index, storage
from annrec.index.wal import WriteLog, apply_entries

if TYPE_CHECKING:
    from annrec.service.rwlock import RWLock

log = logging.getLogger("annrec.service")


class PersistError(AnnrecError):
    """A write could not be committed to the write-ahead log (nothing was applied)."""


class StoreRetired(Exception):
    """The store was replaced by a reload: submit the write to the new one."""


@dataclass
class Write:
    """One write request: ``op`` ``"upsert"`` (``ids``, ``vectors`` float32 ``(n, dim)``, ``metadata`` per id)
    or ``"delete"`` (``ids``)."""

    op: str
    ids: list
    vectors: np.ndarray | None = None
    metadata: dict | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    seq: int = 0
    result: Any = None


class IndexStore:
    """Write-ahead log, group commit, snapshots and multi-worker follow for one served index.

    Args:
        name: the served name. folder: the index folder. index: the loaded :class:`Index` (its
            ``applied_seq`` / ``snapshot_seq`` say where the log stands). rw: the index's readers-writer lock.
        durable: ``persist: sync`` (``synchronous=FULL``) or ``async`` (``NORMAL``).
        snapshot_every: logged items that trigger a snapshot. snapshot_interval: seconds that trigger one
            (when anything is new). follow_interval: seconds between reads of other workers' entries
            (``None``: one worker, no polling).
        on_snapshot: ``(name, seconds, ok)`` after each snapshot (metrics).

    Raises:
        ArtifactError: the log is unusable.
    """

    def __init__(self, name: str, folder, index: Index, rw: RWLock, *, durable: bool = True,
                 snapshot_every: int = 10_000, snapshot_interval: float = 60.0, follow_interval: float | None = None,
                 on_snapshot: Callable[[str, float, bool], None] | None = None) -> None:
        self.name = name
        self.folder = folder
        self.index: Index | None = index
        self.rw = rw
        self.durable = durable
        self.snapshot_every = snapshot_every
        self.snapshot_interval = snapshot_interval
        self.follow_interval = follow_interval
        self.on_snapshot = on_snapshot
        self.log = WriteLog(folder, durable=durable)
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"  # one row per store (reloads make new ones)
        self.applied_seq = index.applied_seq
        self.snapshot_seq = index.snapshot_seq
        self.logged_since_snapshot = max(0, self.applied_seq - self.snapshot_seq)
        self.last_snapshot_at = time.monotonic()
        self.snapshot_error: str | None = None
        self.snapshots = 0
        self.commit_lock = threading.Lock()  # the committer, a fork, a reload: one at a time
        self._cond = threading.Condition()
        self._queue: deque[Write] = deque()
        self._closed = False
        self.retired = False
        self.log.heartbeat(self.worker, self.applied_seq)
        self._beat_at = time.monotonic()
        self._threads = [threading.Thread(target=self._commit_loop, name=f"annrec-commit-{name}", daemon=True),
                         threading.Thread(target=self._snapshot_loop, name=f"annrec-snapshot-{name}", daemon=True)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ writes
    def submit(self, write: Write, timeout: float = 300.0) -> Write:
        """Queue ``write`` and wait until it is committed and applied (or failed).

        Raises:
            StoreRetired: a reload replaced this store (retry on the new one). PersistError: the commit failed.
            UnknownIdError / InputError: the write does not fit the index (nothing was logged).
        """
        with self._cond:
            if self.retired or self._closed:
                raise StoreRetired(self.name)
            self._queue.append(write)
            self._cond.notify_all()
        if not write.done.wait(timeout):
            raise PersistError(f"committing a write to index {self.name!r} took longer than {timeout:.0f} s")
        if write.error is not None:
            raise write.error
        return write

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    self._cond.wait(self.follow_interval)
                if self._closed and not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
            if batch or self.follow_interval is not None:
                try:
                    self._commit(batch)
                except BaseException as e:  # noqa: BLE001 - never let the committer die silently
                    log.exception("committing writes to index %s failed", self.name)
                    _fail(batch, PersistError(f"the write to index {self.name!r} could not be committed ({e})"))

    def _commit(self, batch: list[Write]) -> None:
        if not batch:  # following other workers: read only
            with self.commit_lock:
                if not self.retired:
                    self._apply_new()
                    self._beat()
            return
        with self.commit_lock:
            if self.retired:
                _fail(batch, StoreRetired(self.name))
                return
            self._reserve(sum(len(w.ids) for w in batch if w.op == "upsert"))
            try:
                self.log.begin()
            except Exception as e:  # noqa: BLE001 - a locked or unwritable database: 503, nothing changed
                _fail(batch, PersistError(f"the write to index {self.name!r} could not be logged ({e}); nothing "
                                          f"was changed: retry"))
                return
            accepted: list[tuple[Write, int]] = []  # with the number of rows logged up to and including it
            try:
                self._apply_new()  # other workers' committed entries first: checks see the latest state
                live: dict = {}
                rows: list = []
                for w in batch:
                    try:
                        rows += self._rows(w, live)
                        accepted.append((w, len(rows)))
                    except AnnrecError as e:
                        _fail([w], e)
                last = self.log.insert(rows) if rows else 0
                self.log.commit()
            except BaseException as e:
                self.log.rollback()
                _fail(batch, PersistError(f"the write to index {self.name!r} could not be committed ({e}); "
                                          f"nothing was changed: retry"))
                return
            self._apply_new()
            self.logged_since_snapshot += len(rows)
            for w, end in accepted:  # one transaction: its rows took consecutive sequence numbers
                w.seq = last - len(rows) + end
                w.done.set()
            if rows and self.logged_since_snapshot >= self.snapshot_every:
                with self._cond:
                    self._cond.notify_all()
            if self.follow_interval is not None:
                self._beat()

    def _beat(self) -> None:
        """Tell the other workers how far this one has applied the log (at most every 5 s)."""
        if time.monotonic() - self._beat_at > 5.0:
            self.log.heartbeat(self.worker, self.applied_seq)
            self._beat_at = time.monotonic()

    def _rows(self, w: Write, live: dict) -> list:
        """Check a write against the index (and the earlier writes of this commit); its log rows."""
        index = self.index
        if w.op == "upsert":
            index.check_upsert(w.vectors, w.ids)
            for i in w.ids:
                live[i] = True
            meta = w.metadata or {}
            return [("upsert", i, v, meta.get(i)) for i, v in zip(w.ids, w.vectors)]
        ids = [index.coerce_id(i) for i in w.ids]
        for i in ids:
            if not live.get(i, i in index):
                raise UnknownIdError(f"unknown id {i!r}: it is not in index {self.name!r}")
            live[i] = False
        w.result = ids[0] if len(ids) == 1 else ids
        return [("delete", i, None, None) for i in ids]

    def _apply_new(self) -> int:
        """Apply the committed log entries after ``applied_seq`` (ours and other workers'); returns how many."""
        n = 0
        while True:
            entries = self.log.entries_after(self.applied_seq, limit=10_000)
            if not entries:
                return n
            self._reserve(sum(1 for e in entries if e.op == "upsert"))
            with self.rw.write():
                self.applied_seq = apply_entries(self.index, entries)
                self.index.applied_seq = self.applied_seq
            n += len(entries)

    def _reserve(self, n_new: int) -> None:
        """Room for ``n_new`` more vectors, grown by 1.5x at a time: the vector buffer outside the readers-writer
        lock (only the committer writes), hnswlib's capacity under it (rarely)."""
        index = self.index
        need = len(index._ext) + n_new
        if need > len(index._vec_buf) or need > _backend_capacity(index):
            index.reserve(max(need, int(len(index._vec_buf) * 1.5) + 1024), self.rw)

    # ------------------------------------------------------------------ snapshots
    def _snapshot_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(1.0)
                if self._closed:
                    return
            pending = self.logged_since_snapshot
            due = pending >= self.snapshot_every or (
                pending and time.monotonic() - self.last_snapshot_at >= self.snapshot_interval)
            if due and not self.retired:
                self.snapshot()

    def snapshot(self) -> bool:
        """Write a snapshot now if the log holds entries the current one lacks; returns whether one was written.
        Another process writing one at this moment: skipped (returns False)."""
        t0 = time.perf_counter()
        with storage.snapshot_lock(self.folder, blocking=False) as mine:
            if not mine or self.index is None:
                return False
            disk = _disk_seq(self.folder)
            with self.commit_lock:
                if self.retired:
                    return False
                seq = self.applied_seq
                if seq <= max(self.snapshot_seq, disk):
                    self.snapshot_seq = max(self.snapshot_seq, disk)
                    self.logged_since_snapshot = 0
                    self.last_snapshot_at = time.monotonic()
                    return False
                ok = self._write_snapshot(seq)
            if ok is None:  # forked: wait outside the commit lock
                ok = self._wait_child()
            elapsed = time.perf_counter() - t0
            if ok:
                self.snapshot_seq = seq
                self.logged_since_snapshot = max(0, self.applied_seq - seq)
                self.snapshots += 1
                self.snapshot_error = None
                try:
                    upto = min(seq, self.log.min_applied(exclude=self.worker, default=seq))
                    self.log.trim(upto)
                    storage.retire(self.folder, {storage.current_name(self.folder)})
                except Exception as e:  # noqa: BLE001 - trimming is an optimisation; the next snapshot retries
                    log.warning("trimming the log of index %s failed: %s", self.name, e)
            self.last_snapshot_at = time.monotonic()
            if self.on_snapshot is not None:
                self.on_snapshot(self.name, elapsed, bool(ok))
            return bool(ok)

    def _write_snapshot(self, seq: int) -> bool | None:
        """Under the commit lock: fork a child that writes and switches to the snapshot (returns None; see
        :meth:`_wait_child`), or write it in this process where fork is missing (returns whether it worked)."""
        if not hasattr(os, "fork"):
            try:
                storage.switch(self.folder, storage.new_snapshot(self.index, self.folder, seq))
                return True
            except Exception as e:  # noqa: BLE001
                self.snapshot_error = str(e)
                log.error("snapshot of index %s failed: %s", self.name, e)
                return False
        pid = os.fork()
        if pid == 0:  # the child: a frozen copy of the server; write, switch, exit without any clean-up
            code = 1
            try:
                _close_sockets()
                os.nice(19)  # the snapshot yields the CPU to the searches and commits of the server
                storage.switch(self.folder, storage.new_snapshot(self.index, self.folder, seq))
                code = 0
            finally:
                os._exit(code)
        self._child = pid
        return None

    def _wait_child(self) -> bool:
        _, status = os.waitpid(self._child, 0)
        ok = os.waitstatus_to_exitcode(status) == 0
        if not ok:
            self.snapshot_error = f"the snapshot writer exited with status {os.waitstatus_to_exitcode(status)}"
            log.error("snapshot of index %s failed (%s); the write-ahead log keeps every write, retrying later",
                      self.name, self.snapshot_error)
        return ok

    # ------------------------------------------------------------------ life cycle
    def retire(self) -> None:
        """Refuse new writes (they retry on the store that replaces this one); the caller holds ``commit_lock``."""
        with self._cond:
            self.retired = True
            queued = list(self._queue)
            self._queue.clear()
        _fail(queued, StoreRetired(self.name))

    def close(self, snapshot: bool = False) -> None:
        """Stop the threads (after a snapshot when ``snapshot``) and close the log; drops the index reference."""
        if snapshot and not self.retired:
            try:
                self.snapshot()
            except Exception as e:  # noqa: BLE001 - the log holds every write: nothing is lost
                log.warning("snapshot at shut-down of index %s failed: %s", self.name, e)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=30)
        try:
            self.log.forget(self.worker)
        except Exception:  # noqa: BLE001
            pass
        self.log.close()
        self.index = None

    def describe(self) -> dict[str, Any]:
        """The ``storage`` block of ``GET /v1/indexes/{name}``: log positions (sequence numbers), snapshots
        written, the last snapshot error, whether commits are fsynced."""
        return {"applied_seq": self.applied_seq, "snapshot_seq": self.snapshot_seq,
                "logged_since_snapshot": self.logged_since_snapshot, "snapshots_written": self.snapshots,
                "snapshot_error": self.snapshot_error, "durable": self.durable}


def _fail(writes: list[Write], error: BaseException) -> None:
    """Answer the writes of ``writes`` not answered yet with ``error``."""
    for w in writes:
        if not w.done.is_set():
            w.error = error
            w.done.set()


def _disk_seq(folder) -> int:
    """The seq of the folder's current snapshot (another worker may have written a newer one)."""
    import json

    try:
        return int(json.loads((storage.snapshot_folder(folder) / "manifest.json").read_text()).get("seq", 0))
    except (OSError, ValueError, AnnrecError):
        return 0


def _close_sockets() -> None:
    """In a forked snapshot writer: close inherited sockets, so a restarted server can bind its port at once."""
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        try:
            fd = int(name)
            if fd > 2 and stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except (OSError, ValueError):
            pass


def _backend_capacity(index: Index) -> int:
    raw = getattr(index, "raw", None) if index.backend == "hnswlib" else None
    return raw.get_max_elements() if raw is not None else 1 << 62


def reserve_capacity(index: Index, headroom: float = 0.1, minimum: int = 1024) -> None:
    """Grow a loaded index's (hnswlib) graph capacity by ``headroom`` (at least ``minimum`` slots) before serving
    it (:meth:`~annrec.index.Index.reserve`).

    hnswlib loads an index with room for exactly its elements, so the first upsert would run
    ``resize_index`` (a copy of the whole graph: ~1.5 s for 60,000 x 784) while holding the write lock and
    stalling every search. Doing it at load time, before the index is served, keeps that off the request path.
    The vector buffer stays the folder's read-only map until the first write grows it (outside the lock:
    :meth:`IndexStore._reserve`), so a served index that is never written holds its vectors once, in the library.
    """
    index.reserve(int(len(index._ext) * (1 + headroom)) + minimum, vectors=False)
