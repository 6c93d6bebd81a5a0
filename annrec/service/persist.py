"""Persistence of served writes: a background saver per writable index, and hnswlib headroom at load."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from annrec.errors import AnnrecError
from annrec.index import Index

if TYPE_CHECKING:
    from annrec.service.registry import ServedIndex

log = logging.getLogger("annrec.service")

class PersistError(AnnrecError):
    """A write was applied in memory but its index folder could not be saved."""


# ----------------------------------------------------------------------------- persistence
class Persister:
    """Saves one index folder after writes, on a background thread.

    ``sync`` mode: a writer waits (:meth:`wait`) until a save that started after its write finished, so
    an answered write survives a crash; writes arriving during a save share the next one (group commit).
    ``async`` mode: writers do not wait; the thread saves ``delay`` seconds after the first unsaved write.
    """

    def __init__(self, served: ServedIndex, mode: str, delay: float,
                 on_save: Callable[[str, float, bool], None] | None = None) -> None:
        self.served = served
        self.mode = mode
        self.delay = delay
        self.on_save = on_save
        self._cond = threading.Condition()
        self._closed = False
        self.error: str | None = None
        self.failed_version = 0  # the writes up to this version were in a save that failed
        self._thread = threading.Thread(target=self._run, name=f"annrec-save-{served.name}", daemon=True)
        self._thread.start()

    def noted(self) -> None:
        """Wake the saver (called after a write bumped ``served.version``)."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, version: int, timeout: float | None = None) -> None:
        """Block until ``version`` is saved.

        Raises:
            PersistError: the save failed (the write stays applied in memory and is retried).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.served.saved_version < version:
                if self.error is not None and self.failed_version >= version:
                    raise PersistError(f"the write was applied but saving index {self.served.name!r} failed "
                                       f"({self.error}); it is retried with the next write or reload")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PersistError(f"saving index {self.served.name!r} takes longer than {timeout:.0f} s; "
                                       f"the write is applied and will be saved")
                self._cond.wait(remaining if remaining is not None else 1.0)

    def save_locked(self) -> None:
        """Save now if there are unsaved writes; the caller holds ``served.mutation``."""
        s = self.served
        version = s.version
        if s.saved_version >= version or s.path is None:
            return
        t0 = time.perf_counter()
        ok = False
        try:
            s.index.save(s.path)
            ok = True
        except Exception as e:  # noqa: BLE001 - disk full, permissions: report, keep serving
            log.error("saving index %s to %s failed: %s", s.name, s.path, e)
            with self._cond:
                self.error = str(e)
                self.failed_version = version
                self._cond.notify_all()
        finally:
            if self.on_save is not None:
                self.on_save(s.name, time.perf_counter() - t0, ok)
        if ok:
            with self._cond:
                s.saved_version = version
                self.error = None
                self._cond.notify_all()

    def _run(self) -> None:
        s = self.served
        while True:
            with self._cond:
                while not self._closed and s.saved_version >= s.version:
                    self._cond.wait()
                if self._closed:
                    return
                retry_only = self.error is not None and s.version <= self.failed_version
            if self.mode == "async" and self.delay > 0:
                time.sleep(self.delay)
            elif retry_only:
                time.sleep(1.0)  # no new write since the failure: retry once a second
            with s.mutation:
                if s.retired:
                    return
                self.save_locked()

    def close(self) -> None:
        """Stop the thread (the caller flushes with :meth:`save_locked` first)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def reserve_capacity(index: Index, headroom: float = 0.1, minimum: int = 1024) -> None:
    """Grow a loaded hnswlib index's capacity by ``headroom`` (at least ``minimum`` slots) before serving it.

    hnswlib loads an index with room for exactly its elements, so the first upsert would run
    ``resize_index`` (a copy of the whole graph: ~1.5 s for 60,000 x 784) while holding the write lock and
    stalling every search. Doing it at load time, before the index is served, keeps that off the request path.
    """
    raw = getattr(index, "raw", None)
    if index.backend != "hnswlib" or raw is None:
        return
    target = int(len(index._ext) * (1 + headroom)) + minimum
    if raw.get_max_elements() < target:
        raw.resize_index(target)
