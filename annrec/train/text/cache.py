"""The content-hash cache of text vectors (SQLite), committed chunk by chunk."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from annrec.errors import DataError
from annrec.train.text.model import default_cache_dir

#: texts encoded between two commits of the vector cache
CACHE_CHUNK = 512


class TextVectorCache:
    """Persistent ``key -> float32 vector`` store in one SQLite file (``<cache_dir>/vectors.sqlite``).

    A key is the SHA-256 of ``(model fingerprint, normalize, max_seq_length, text)`` (see
    :meth:`TextEncoder.cache_keys`). Writes are single SQLite transactions, so an interrupted run
    leaves the cache as it was before the write (never half a batch); several processes may share
    one cache (SQLite file locking).

    Raises:
        DataError: the file exists but is not a readable SQLite cache (delete it, or disable the cache).
    """

    FILENAME = "vectors.sqlite"
    _CHUNK = 500  # keys per SELECT (below SQLite's host-parameter limit)

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.path = self.dir / self.FILENAME
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, model TEXT NOT NULL, "
                            "dim INTEGER NOT NULL, vec BLOB NOT NULL)")
        except (sqlite3.DatabaseError, OSError) as e:
            raise DataError(f"text embedding cache {self.path} cannot be used ({e}): delete that file, "
                            f"point ANNREC_CACHE_DIR / --cache-dir elsewhere, or pass --no-cache") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get_many(self, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """Vectors found for ``keys`` (those of another dimension are ignored)."""
        out: dict[bytes, np.ndarray] = {}
        try:
            with contextlib.closing(self._connect()) as con:
                for i in range(0, len(keys), self._CHUNK):
                    chunk = list(keys[i:i + self._CHUNK])
                    q = f"SELECT key, dim, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
                    for key, d, blob in con.execute(q, chunk):
                        if d == dim and len(blob) == 4 * dim:
                            out[bytes(key)] = np.frombuffer(blob, dtype="<f4")
        except sqlite3.DatabaseError as e:
            raise DataError(f"text embedding cache {self.path} is unreadable ({e}): delete it or pass "
                            f"--no-cache") from None
        return out

    def put_many(self, keys: Sequence[bytes], vectors: np.ndarray, model: str) -> None:
        """Store ``vectors[i]`` under ``keys[i]`` in one transaction (all or nothing)."""
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        rows = [(k, model, int(vectors.shape[1]), vectors[i].tobytes()) for i, k in enumerate(keys)]
        try:
            with contextlib.closing(self._connect()) as con, con:
                con.executemany("INSERT OR REPLACE INTO vectors (key, model, dim, vec) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.DatabaseError as e:
            raise DataError(f"cannot write the text embedding cache {self.path} ({e}): free disk space, delete "
                            f"it or pass --no-cache") from None

    def __len__(self) -> int:
        with contextlib.closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def clear(self, model: str | None = None) -> int:
        """Delete every entry (or those of one model fingerprint); returns how many were deleted."""
        with contextlib.closing(self._connect()) as con, con:
            cur = (con.execute("DELETE FROM vectors") if model is None
                   else con.execute("DELETE FROM vectors WHERE model = ?", (model,)))
            return int(cur.rowcount)


# ---------------------------------------------------------------------------------------------- the encoder
