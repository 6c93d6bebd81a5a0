"""The write-ahead log of an index folder: every upsert and delete, in order, in SQLite.

``<index>/wal.sqlite`` (the standard library's :mod:`sqlite3`, WAL journal mode) holds one row per
written item::

    log(seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the write's sequence number, never reused
        op TEXT,                                 -- 'upsert' or 'delete'
        id,                                      -- the external id (SQLite INTEGER or TEXT, as the index)
        vector BLOB,                             -- float32 (dim,) as given (upserts), NULL for deletes
        metadata TEXT,                           -- JSON object or NULL (an upsert without metadata keeps the old)
        written_at REAL)                         -- Unix seconds
    state(key TEXT PRIMARY KEY, value)           -- 'trimmed_through': the highest seq ever trimmed
    readers(worker, applied_seq, seen_at)        -- how far each live server worker has applied the log

A write is durable once its transaction commits (``synchronous=FULL``: SQLite fsyncs the log file before
the commit returns; ``NORMAL``: a process crash loses nothing, a power loss can lose the last
transactions). A snapshot records the last ``seq`` it holds; loading is "snapshot, then every entry after
its ``seq``" (:func:`replay`), and :meth:`WriteLog.trim` drops the entries a snapshot holds. The design
is the one vector databases use (Qdrant: WAL then segments; Chroma: a SQLite log beside hnswlib).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from annrec.errors import ArtifactError

if TYPE_CHECKING:
    from annrec.index.base import Index

LOG_FILE = "wal.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    id NOT NULL,
    vector BLOB,
    metadata TEXT,
    written_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS readers (worker TEXT PRIMARY KEY, applied_seq INTEGER NOT NULL, seen_at REAL NOT NULL);
"""


@dataclass(frozen=True)
class LogEntry:
    """One logged write of one item: ``op`` ``"upsert"`` (with ``vector`` float32 ``(dim,)`` and optional
    ``metadata``) or ``"delete"``."""

    seq: int
    op: str
    id: int | str
    vector: np.ndarray | None = None
    metadata: dict | None = None


class WriteLog:
    """The SQLite write-ahead log of one index folder (created on first open).

    Args:
        folder: the index folder.
        durable: ``True``: ``synchronous=FULL`` (a commit survives a power loss); ``False``: ``NORMAL``
            (it survives a crash of the process, not of the machine).
        timeout: seconds to wait for another process's write transaction (``busy_timeout``).

    One connection, shared by the threads of a process under an internal lock; several processes (server
    workers) may open the same log: SQLite serialises their transactions.

    Raises:
        ArtifactError: the file is not a SQLite database or not an annrec log.
    """

    def __init__(self, folder: str | Path, *, durable: bool = True, timeout: float = 30.0) -> None:
        self.path = Path(folder) / LOG_FILE
        self.lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ArtifactError(f"{self.path} is not a usable write-ahead log ({e}): move it aside to serve the "
                                f"index without its logged writes") from None

    # -- reading
    def max_seq(self) -> int:
        """The highest sequence number ever written (0 for a new log; trimmed entries count)."""
        with self.lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'log'").fetchone()
        return int(row[0]) if row else 0

    def trimmed_through(self) -> int:
        """Entries up to this sequence number were dropped (a snapshot holds them)."""
        with self.lock:
            row = self._db.execute("SELECT value FROM state WHERE key = 'trimmed_through'").fetchone()
        return int(row[0]) if row else 0

    def entries_after(self, seq: int, limit: int | None = None) -> list[LogEntry]:
        """The entries with a sequence number above ``seq``, in order (at most ``limit``)."""
        sql = "SELECT seq, op, id, vector, metadata FROM log WHERE seq > ? ORDER BY seq"
        args: tuple = (int(seq),)
        if limit is not None:
            sql += " LIMIT ?"
            args += (int(limit),)
        with self.lock:
            rows = self._db.execute(sql, args).fetchall()
        return [LogEntry(s, op, i, None if v is None else np.frombuffer(v, dtype=np.float32),
                         None if m is None else json.loads(m)) for s, op, i, v, m in rows]

    def count(self) -> int:
        """Entries held (not yet trimmed)."""
        with self.lock:
            return int(self._db.execute("SELECT COUNT(*) FROM log").fetchone()[0])

    # -- writing
    def begin(self) -> None:
        """Start a write transaction (``BEGIN IMMEDIATE``: waits for other processes' writers)."""
        self.lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise

    def insert(self, rows: Iterable[tuple[str, Any, np.ndarray | None, dict | None]]) -> int:
        """Insert ``(op, id, vector, metadata)`` rows inside :meth:`begin` … :meth:`commit`; returns the last seq."""
        now = time.time()
        self._db.executemany(
            "INSERT INTO log (op, id, vector, metadata, written_at) VALUES (?, ?, ?, ?, ?)",
            ((op, _sql_id(i), None if v is None else np.ascontiguousarray(v, dtype=np.float32).tobytes(),
              None if m is None else json.dumps(m, separators=(",", ":")), now) for op, i, v, m in rows))
        return int(self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'log'").fetchone()[0])

    def commit(self) -> None:
        """Commit the transaction (durable when this returns, per ``durable``)."""
        try:
            self._db.execute("COMMIT")
        finally:
            self.lock.release()

    def rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        finally:
            self.lock.release()

    def append(self, rows: Iterable[tuple[str, Any, np.ndarray | None, dict | None]]) -> int:
        """Insert and commit ``rows`` in one transaction; returns the last sequence number."""
        self.begin()
        try:
            seq = self.insert(rows)
        except BaseException:
            self.rollback()
            raise
        self.commit()
        return seq

    def trim(self, through: int) -> int:
        """Drop the entries up to ``through`` (a snapshot holds them); returns how many were dropped."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._db.execute("DELETE FROM log WHERE seq <= ?", (int(through),)).rowcount
                self._db.execute("INSERT INTO state (key, value) VALUES ('trimmed_through', ?) ON CONFLICT(key) "
                                 "DO UPDATE SET value = max(value, excluded.value)", (int(through),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # fold SQLite's own -wal file into the database and truncate it (the freed pages are reused by
            # later entries, so the database stays about one snapshot interval of writes large)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(n)

    # -- server workers that follow the log (the log is trimmed no further than the slowest has applied)
    def heartbeat(self, worker: str, applied_seq: int) -> None:
        """Record that ``worker`` has applied the log through ``applied_seq``."""
        now = time.time()
        with self.lock:
            self._db.execute("INSERT INTO readers (worker, applied_seq, seen_at) VALUES (?, ?, ?) ON CONFLICT(worker) "
                             "DO UPDATE SET applied_seq = excluded.applied_seq, seen_at = excluded.seen_at",
                             (worker, int(applied_seq), now))
            self._db.execute("DELETE FROM readers WHERE seen_at < ?", (now - 86_400,))  # processes long gone

    def forget(self, worker: str) -> None:
        with self.lock:
            self._db.execute("DELETE FROM readers WHERE worker = ?", (worker,))

    def min_applied(self, exclude: str | None, default: int, active_within: float = 120.0) -> int:
        """The lowest ``applied_seq`` of the workers seen within ``active_within`` seconds (``exclude`` left
        out), or ``default`` when there are none."""
        with self.lock:
            row = self._db.execute("SELECT MIN(applied_seq) FROM readers WHERE seen_at >= ? AND worker != ?",
                                   (time.time() - active_within, exclude or "")).fetchone()
        return default if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        with self.lock:
            self._db.close()


def _sql_id(i: Any) -> int | str:
    if isinstance(i, (bool, np.bool_)):
        raise TypeError("ids are integers or strings")
    if isinstance(i, np.integer):
        return int(i)
    return i


def group_entries(entries: Iterable[LogEntry]) -> Iterator[tuple[str, list[LogEntry]]]:
    """Runs of consecutive entries of one operation, so a replay adds many vectors in one call."""
    run: list[LogEntry] = []
    ids: set = set()
    for e in entries:
        if run and (e.op != run[0].op or e.id in ids):
            yield run[0].op, run
            run, ids = [], set()
        run.append(e)
        ids.add(e.id)
    if run:
        yield run[0].op, run


def apply_entries(index: Index, entries: list[LogEntry]) -> int:
    """Apply logged entries to an in-memory index in order; returns the last applied sequence number.

    Upserts of a run are added in one :meth:`~annrec.index.Index.add` call (hnswlib and FAISS add in bulk);
    a delete of an id the index no longer holds is skipped (its effect is already there).
    """
    last = 0
    for op, run in group_entries(entries):
        if op == "upsert":
            x = np.stack([e.vector for e in run])
            meta = {e.id: e.metadata for e in run if e.metadata is not None} or None
            index.add(x, [e.id for e in run], items=meta)
        else:
            present = [i for i in dict.fromkeys(e.id for e in run) if i in index]
            if present:
                index.remove(present)
        last = run[-1].seq
    return last


def replay(index: Index, folder: str | Path, after: int) -> int:
    """Apply the entries of ``folder``'s log with a sequence number above ``after`` to ``index``; returns the
    last sequence number applied (``after`` when there is nothing to replay or no log).

    Raises:
        ArtifactError: the log is unreadable, or it was trimmed beyond ``after`` (entries the snapshot does not
            hold are gone: the folder's snapshot pointer is older than its log).
    """
    if not (Path(folder) / LOG_FILE).exists():
        return after
    log = WriteLog(folder, durable=False)
    try:
        if log.trimmed_through() > after:
            raise ArtifactError(f"{log.path} was trimmed through write {log.trimmed_through()} but the current "
                                f"snapshot holds writes up to {after} only: restore the newer snapshot folder")
        last = after
        while True:
            batch = log.entries_after(last, limit=10_000)
            if not batch:
                return last
            last = apply_entries(index, batch)
    except sqlite3.DatabaseError as e:
        raise ArtifactError(f"{log.path} is not a usable write-ahead log ({e})") from None
    finally:
        log.close()
