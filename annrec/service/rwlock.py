"""A readers-writer lock: many concurrent searches, or one writer (upsert/delete) at a time.

hnswlib's ``add_items``/``resize_index`` and the id bookkeeping of :class:`annrec.index.Index` must not
run while a search reads them, but searches may run side by side (FAISS and hnswlib release the GIL).
Writers are preferred: once a writer waits, new readers queue behind it, so a steady stream of
searches cannot starve an upsert. Reads cost two uncontended mutex round-trips (~1 µs).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class RWLock:
    """Writer-preferring readers-writer lock built on one :class:`threading.Condition`."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """Hold a shared (read) lock for the block."""
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Hold the exclusive (write) lock for the block; waits for running readers to finish."""
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

    @property
    def readers(self) -> int:
        """Number of readers holding the lock now (for tests and metrics)."""
        return self._readers
