"""The index interface shared by every backend (one backend per file).

An :class:`Index` maps *external* ids (non-negative integers or strings) to dense internal labels
``0..n-1`` in insertion order; the backend library only ever sees the labels. Removal marks a label
deleted (hnswlib's ``mark_deleted``; an ``IDSelector`` bitmap for FAISS), so labels stay stable and an
upsert of a known id is "delete the old label, append a new one".

Scores follow the metric: ``ip`` and ``cosine`` return similarities (higher is better), ``l2``
returns squared Euclidean distances (lower is better) — the same numbers FAISS returns. A result
slot that could not be filled (fewer than ``k`` items allowed) holds id ``-1`` (integer ids) or
``None`` (string ids) and score ``nan``.

The files of an index are in :mod:`annrec.index.folder`; :mod:`annrec.index.storage` keeps them as versioned
snapshots named by a pointer file, with a write-ahead log (:mod:`annrec.index.wal`) of the writes since:
a crash during ``save`` leaves the previous snapshot current.
"""

from __future__ import annotations

import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from annrec._validate import as_matrix, check_k, check_metric, normalize_ids
from annrec.embeddings import _coerce_id, library_versions
from annrec.errors import InputError, UnknownIdError
from annrec.index.filtered import FilteredSearch
from annrec.index.folder import KIND

FORMAT_VERSION = 1

class Index(FilteredSearch, ABC):
    """A vector index with external ids, filtering, updates and an atomic on-disk format.

    Subclasses implement the ``_backend_*`` hooks. Use :func:`annrec.index.build_index` or
    :meth:`build` to create one and :func:`annrec.index.load_index` to read one.

    Attributes:
        backend: ``"faiss"`` or ``"hnswlib"``.
        metric: ``"ip"`` (maximum inner product search), ``"cosine"`` or ``"l2"``.
        dim: vector dimension.
        params: build parameters (factory string, M, efConstruction, …) and default query parameters.
        items: optional metadata per external id, saved with the index.
        source: free-form provenance (the embeddings folder and its data hash), saved in the manifest.
    """

    backend: ClassVar[str]
    file_name: ClassVar[str]
    #: query-time parameters this backend understands (e.g. ``ef``; ``nprobe``, ``efSearch``).
    query_param_names: ClassVar[tuple[str, ...]]
    #: other accepted spellings of query parameters -> the backend's name (FAISS takes ``ef`` for efSearch,
    #: so ``ef`` is the one name of the HNSW search-list size in Python, on the CLI and over HTTP)
    query_param_aliases: ClassVar[dict[str, str]] = {}
    #: True when the backend itself never returns deleted labels (hnswlib's mark_deleted)
    native_deletes: ClassVar[bool] = False
    #: True when a recurring filter is answered from a cached sub-index (filtered search is costly here)
    filter_views: ClassVar[bool] = False
    #: the build parameters a filter view copies from its parent
    view_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dim: int, metric: str, **params: Any) -> None:
        if not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise InputError(f"dim must be a positive integer; got {dim!r}")
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self._cosine = self.metric == "cosine"  # queries are normalised before the search
        self._identity_ids = False  # external ids == labels (0..n-1 ints): results need no mapping
        self.params: dict[str, Any] = dict(params)
        self.items: dict[Any, dict] = {}
        self.source: dict[str, Any] = {}
        self._ext: np.ndarray = np.empty(0, dtype=np.int64)     # label -> external id
        self._ext_padded: np.ndarray = np.array([-1], dtype=np.int64)  # same, plus the "missing" sentinel
        self._label: dict[Any, int] = {}                        # live external id -> label
        self._deleted = np.zeros(0, dtype=bool)
        self._n_deleted = 0
        self._vec_buf = np.empty((0, self.dim), dtype=np.float32)  # capacity >= number of labels
        self._write_lock = threading.Lock()
        self._generation = 0  # bumped by every change of the id -> label map (see labels_of)
        self._lookup: tuple[int, np.ndarray | None] | None = None
        # (generation before, generation after, ids) of the latest upserts and deletes (see changed_since)
        self._changes: deque[tuple[int, int, list]] = deque(maxlen=4096)
        self.build_seconds: float | None = None
        self.snapshot_seq = 0  # the last write-ahead-log entry the loaded snapshot holds
        self.applied_seq = 0   # the last log entry applied to this index (snapshot + replay)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, vectors, ids, metric: str, **params: Any) -> Index:
        """Create an index over ``vectors`` ``(n, dim)`` float32 with external ``ids`` ``(n,)``.

        Raises:
            InputError: wrong shapes, NaN/Inf, duplicate or invalid ids, bad parameters.
        """
        x = as_matrix(vectors, name="vectors")
        ext = normalize_ids(ids)
        if len(ext) != len(x):
            raise InputError(f"{len(ext)} ids for {len(x)} vectors: give exactly one id per vector")
        index = cls(x.shape[1], metric, **params)
        t0 = time.perf_counter()
        x = index._prepare(x)
        index._backend_create(x)
        index._append(x, ext)
        index.build_seconds = time.perf_counter() - t0
        return index

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            if (norms == 0).any():
                raise InputError(f"row {int(np.argmax(norms[:, 0] == 0))} is a zero vector, which has no "
                                 f"direction under the cosine metric: drop it or use metric 'ip'/'l2'")
            x = x / norms
        return np.ascontiguousarray(x, dtype=np.float32)

    def _append(self, x: np.ndarray, ext: np.ndarray) -> None:
        start = len(self._ext)
        labels = np.arange(start, start + len(x), dtype=np.int64)
        self._backend_add(x, labels)
        if len(self._ext) == 0:
            self._ext = ext.copy()
        else:
            if (self._ext.dtype.kind in "iu") != (ext.dtype.kind in "iu"):
                raise InputError("this index uses " + ("integer" if self._ext.dtype.kind in "iu" else "string")
                                 + " ids: pass ids of the same type")
            self._ext = np.concatenate([self._ext, ext])
        sentinel = np.array([-1] if self._ext.dtype.kind in "iu" else [None],
                            dtype=self._ext.dtype if self._ext.dtype.kind in "iu" else object)
        self._ext_padded = np.concatenate([self._ext, sentinel])
        self._identity_ids = self._ext.dtype.kind in "iu" and bool(
            (self._ext == np.arange(len(self._ext))).all())
        self._deleted = np.concatenate([self._deleted, np.zeros(len(x), dtype=bool)])
        self._store_vectors(start, x)
        for e, lab in zip(ext.tolist(), labels.tolist()):
            self._label[e] = lab
        self._generation += 1

    @property
    def _vectors(self) -> np.ndarray:
        """The stored vectors of every label, float32 ``(n_labels, dim)`` (a view of the buffer)."""
        return self._vec_buf[:len(self._ext)]

    def _store_vectors(self, start: int, x: np.ndarray) -> None:
        need = start + len(x)
        if need > len(self._vec_buf):
            # grow geometrically so a stream of small upserts does not copy every vector each time
            grown = np.empty((max(need, int(len(self._vec_buf) * 1.5)), self.dim), dtype=np.float32)
            grown[:start] = self._vec_buf[:start]
            self._vec_buf = grown
        self._vec_buf[start:need] = x

    # ------------------------------------------------------------------ updates
    def add(self, vectors, ids, items: dict[Any, dict] | None = None) -> None:
        """Insert or replace (upsert) items: ``vectors`` ``(n, dim)``, ``ids`` ``(n,)``.

        A known id is replaced: its old entry is marked deleted and the new vector appended.

        Raises:
            InputError: wrong dimension, NaN/Inf, invalid/duplicate ids, id type differing from the index's.
        """
        x, ext = self.check_upsert(vectors, ids)
        with self._write_lock:
            before = self._generation
            old = [self._label[e] for e in ext.tolist() if e in self._label]
            if old:
                self._mark_deleted(np.asarray(old, dtype=np.int64))
            self._append(x, ext)
            if items:
                self.items.update(items)
            self._changes.append((before, self._generation, ext.tolist()))

    def check_upsert(self, vectors, ids) -> tuple[np.ndarray, np.ndarray]:
        """Check an upsert without changing anything: ``vectors`` ``(n, dim)`` and ``ids`` ``(n,)`` as :meth:`add`
        stores them — float32 C-contiguous (normalised under cosine) and the normalised id array.

        Raises:
            InputError: wrong dimension, NaN/Inf, invalid/duplicate ids, a count or id type that does not match,
                vectors the backend cannot hold.
        """
        x = as_matrix(vectors, dim=self.dim, name="vectors")
        ext = normalize_ids(ids)
        if len(ext) != len(x):
            raise InputError(f"{len(ext)} ids for {len(x)} vectors: give exactly one id per vector")
        if len(self._ext) and (self._ext.dtype.kind in "iu") != (ext.dtype.kind in "iu"):
            raise InputError("this index uses " + ("integer" if self._ext.dtype.kind in "iu" else "string")
                             + " ids: pass ids of the same type")
        x = self._prepare(x)
        self._backend_check(x)  # before anything changes: a refused upsert loses nothing
        return x, ext

    def reserve(self, n_labels: int, rw=None, *, vectors: bool = True) -> None:
        """Make room for ``n_labels`` labels before they are added: the stored-vector buffer (grown into a new
        array, so readers of the old one are undisturbed; ``vectors=False`` leaves it, e.g. mapped from the
        folder until the first write; FAISS's mapped index too) and the backend's capacity (hnswlib's ``resize_index``, run under
        ``rw.write()`` when a readers-writer lock is given)."""
        if vectors and n_labels > len(self._vec_buf):
            grown = np.empty((n_labels, self.dim), dtype=np.float32)
            grown[:len(self._ext)] = self._vectors
            self._vec_buf = grown
        self._backend_reserve(n_labels, rw, vectors)

    def _backend_reserve(self, n_labels: int, rw=None, vectors: bool = True) -> None:
        """Grow the backend's capacity to ``n_labels`` (default: nothing to do); ``vectors=False``: leave
        storage mapped from the folder as it is (FAISS copies a mapped index only when ``vectors`` is true)."""

    def remove(self, ids) -> None:
        """Delete items by external id (marked deleted; they never appear in results again).

        Raises:
            UnknownIdError: an id is not in the index (nothing is removed then).
        """
        ids = list(ids) if not isinstance(ids, (str, int, np.integer)) else [ids]
        with self._write_lock:
            before = self._generation
            labels = [self._label_of(i) for i in ids]
            self._mark_deleted(np.asarray(labels, dtype=np.int64))
            for i in ids:
                self.items.pop(self._coerce(i), None)
            self._changes.append((before, self._generation, [self._coerce(i) for i in ids]))

    def changed_since(self, generation: int) -> set | None:
        """The external ids upserted or deleted since ``generation`` (``_generation`` then), or ``None`` when
        the record of changes does not reach back that far (callers recompute from scratch)."""
        if generation == self._generation:
            return set()
        changes = list(self._changes)
        if not changes or changes[0][0] > generation or generation > self._generation:
            return None
        out: set = set()
        for _, after, ids in changes:
            if after > generation:
                out.update(ids)
        return out

    def _mark_deleted(self, labels: np.ndarray) -> None:
        self._backend_mark_deleted(labels)
        self._deleted[labels] = True
        self._n_deleted = int(self._deleted.sum())
        for ext_id in self._ext[labels].tolist():
            self._label.pop(ext_id, None)
        self._generation += 1

    def coerce_id(self, ext_id):
        """An id as this index stores it: a string from a URL or the CLI becomes an int on an integer-id index."""
        return self._coerce(ext_id)

    def _coerce(self, ext_id):
        return _coerce_id(ext_id, self._ext) if len(self._ext) else ext_id

    def _label_of(self, ext_id) -> int:
        try:
            return self._label[self._coerce(ext_id)]
        except (KeyError, TypeError):
            raise UnknownIdError(f"unknown id {ext_id!r}: it is not in this index of {len(self)} items") from None

    def __contains__(self, ext_id) -> bool:
        try:
            return self._coerce(ext_id) in self._label
        except TypeError:
            return False

    def __len__(self) -> int:
        """Number of live (not deleted) items."""
        return len(self._label)

    @property
    def ids(self) -> np.ndarray:
        """External ids of the live items, in label order."""
        return self._ext[~self._deleted]

    def get_vector(self, ext_id) -> np.ndarray:
        """The stored float32 ``(dim,)`` vector of an item (normalised under cosine).

        Raises:
            UnknownIdError: unknown or deleted id.
        """
        return self._vectors[self._label_of(ext_id)].copy()

    # ------------------------------------------------------------------ search
    def set_query_params(self, **params: Any) -> None:
        """Set the default query-time parameters (``ef`` for hnswlib; ``nprobe`` / ``ef`` (= ``efSearch``) for FAISS).

        Raises:
            InputError: a parameter this backend does not know, or a non-positive value.
        """
        params = self._check_query_params(params)
        self.params.update(params)
        self._backend_set_query_params(params)

    def _check_query_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        if not params:
            return {}
        if self.query_param_aliases and any(n in self.query_param_aliases for n in params):
            params = {self.query_param_aliases.get(n, n): v for n, v in params.items()}
        for name, value in params.items():
            if name not in self.query_param_names:
                raise InputError(f"unknown query parameter {name!r} for the {self.backend} backend: use "
                                 f"{', '.join(self.query_param_names)}")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise InputError(f"query parameter {name} must be a positive integer; got {value!r}")
        return params

    def search(self, queries, k: int, *, params: dict[str, Any] | None = None, allowed_ids=None,
               denied_ids=None, threads: int | None = None, filter_key: str | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` nearest items of each query.

        Args:
            queries: float32 ``(nq, dim)`` (or one ``(dim,)`` vector).
            k: results per query, ``1 <= k <= len(self)``.
            params: query-time parameters for this call (``{"ef": 128}``, ``{"nprobe": 16}``; FAISS HNSW
                takes ``ef`` or its own name ``efSearch``).
            allowed_ids: only these external ids may be returned (unknown ids are ignored).
            denied_ids: these external ids are never returned; or a :class:`~annrec.index.DenyList`
                from :meth:`deny_list`, resolved once for repeated searches (seen items).
            threads: threads for a batch (``None``: all cores; 1: the single-query protocol).
            filter_key: names the filter ``allowed_ids`` came from (the canonical JSON of a payload filter), so
                a backend with costly filtered search (hnswlib) may answer a recurring filter from a cached
                sub-index (:mod:`annrec.index.filter_views`).

        Returns:
            ``(ids, scores)``, each ``(nq, k)``: ids as int64 (``-1`` = no result) or object (``None``);
            scores float32 (similarity for ip/cosine, squared L2 distance for l2; ``nan`` = no result).

        Raises:
            InputError: wrong dimension, NaN/Inf, ``k`` <= 0 or larger than the index, bad parameters.
        """
        if type(queries) is np.ndarray and queries.ndim == 1:
            queries = queries[None, :]
        # Fast path (the benchmark and serving hot loop): float32 C-contiguous queries, no allow-list, no
        # per-call parameters. Same checks as below, fewer Python layers (~5-10 us saved per call).
        if (params is None and allowed_ids is None
                and type(queries) is np.ndarray and queries.dtype == np.float32 and queries.ndim == 2
                and queries.shape[1] == self.dim and queries.shape[0] and queries.flags.c_contiguous
                and type(k) is int and 0 < k <= len(self._label)):
            flat = queries.reshape(-1)
            ss = float(flat.dot(flat))
            if math.isfinite(ss):  # NaN/Inf anywhere (or overflow) -> the checked path below
                if self._cosine and len(queries) == 1:  # ss is this query's squared norm: one scalar product
                    queries = queries * np.float32(1.0 / math.sqrt(ss) if ss > 0 else 0.0)
                elif self._cosine:  # one vectorised step; a zero query stays zero (every score 0)
                    norms = np.sqrt(np.einsum("ij,ij->i", queries, queries))
                    queries = queries / np.maximum(norms, np.float32(1e-30))[:, None]
                if denied_ids is not None:
                    return self._search_denied(queries, k, None, denied_ids, threads)
                if not (self._n_deleted and not self.native_deletes):
                    labels, scores = self._backend_search(queries, k, None, None, threads)
                    return (labels if self._identity_ids else self._ext_padded[labels]), scores
        q = as_matrix(queries, dim=self.dim, name="queries")
        k = check_k(k, limit=len(self._label))
        if params:
            params = self._check_query_params(params)
        if self._cosine:
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), np.float32(1e-30))
        if allowed_ids is None and denied_ids is not None:
            return self._search_denied(q, k, params, denied_ids, threads)
        if allowed_ids is not None or (self._n_deleted and not self.native_deletes):
            return self._search_allowed(q, k, params, allowed_ids, denied_ids, threads, filter_key)
        labels, scores = self._backend_search(q, k, params, None, threads)
        return self._ext_padded[labels], scores

    def labels_of(self, ids) -> np.ndarray:
        """Internal labels of external ids, int64 ``(n,)``; ``-1`` for ids that are unknown or deleted.

        Vectorised for an integer array on an integer-id index (a dense id -> label table, built once per
        change of the index); other ids go through the id dictionary.
        """
        if type(ids) is np.ndarray and ids.dtype.kind in "iu" and self._ext.dtype.kind in "iu":
            table = self._lookup
            if table is None or table[0] != self._generation:
                table = self._lookup = (self._generation, self._label_table())
            if table[1] is not None:
                # table[0] and table[-1] are -1: negative ids clip to the first, too large ones to the last
                return table[1].take(ids.ravel().astype(np.int64) + 1, mode="clip")
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        out = []
        for i in ids:
            try:
                out.append(self._label.get(self._coerce(i), -1))
            except TypeError:
                out.append(-1)
        return np.asarray(out, dtype=np.int64)

    def _label_table(self) -> np.ndarray | None:
        """A dense int64 table external id + 1 -> live label (``-1`` elsewhere, first and last entries
        included) for integer ids up to
        ``max(16 * n, 2**22)``; ``None`` for larger ids (they go through the id dictionary)."""
        live = np.flatnonzero(~self._deleted)
        ext = self._ext[live]
        top = int(ext.max()) + 1 if len(ext) else 0
        if top > max(16 * len(self._ext), 1 << 22):
            return None
        table = np.full(top + 2, -1, dtype=np.int64)
        table[ext + 1] = live
        return table

    def count_live(self, ids) -> int:
        """How many distinct ids of ``ids`` are live in this index (unknown and deleted ids do not count)."""
        labels = np.sort(self.labels_of(ids))
        labels = labels[labels >= 0]
        return int(np.count_nonzero(np.diff(labels))) + 1 if len(labels) else 0

    # ------------------------------------------------------------------ persistence
    def manifest(self) -> dict[str, Any]:
        """The ``manifest.json`` content describing this index."""
        return {"kind": KIND, "format_version": FORMAT_VERSION, "backend": self.backend, "metric": self.metric,
                "dim": self.dim, "count": len(self), "n_labels": int(len(self._ext)),
                "params": {k: v for k, v in self.params.items()}, "source": self.source,
                "build_seconds": self.build_seconds,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": library_versions()}

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the index folder; returns its path (:func:`annrec.index.storage.save`: a new folder is written
        whole and renamed into place; an existing index folder gets a new current snapshot, so it is never
        without a complete index; any other folder is refused, or moved aside with ``force``).

        Raises:
            InputError: ``path`` is a file or a folder that is not an index artifact (without ``force``).
        """
        from annrec.index.folder import write_folder

        return write_folder(self, path, force=force)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Index:
        """Read an index folder written by :meth:`save`: its current snapshot, then the write-ahead-log entries
        after it (:func:`annrec.index.folder.read_folder`).

        Raises:
            DataNotFoundError: no such folder.
            ArtifactError: not an index, another backend's folder, a newer format, or missing/corrupt files.
        """
        from annrec.index.folder import read_folder

        return read_folder(cls, path)

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _backend_create(self, x: np.ndarray) -> None:
        """Create (and train, if needed) the backend index; ``x`` are the initial vectors."""

    @abstractmethod
    def _backend_add(self, x: np.ndarray, labels: np.ndarray) -> None:
        """Add vectors under the given consecutive labels."""

    def _backend_check(self, x: np.ndarray) -> None:
        """Refuse vectors this index cannot hold (raise :class:`InputError`) before an upsert changes anything."""

    @abstractmethod
    def _backend_mark_deleted(self, labels: np.ndarray) -> None:
        """Exclude labels from future results (the base class also keeps a mask)."""

    @abstractmethod
    def _backend_search(self, q: np.ndarray, k: int, params: dict[str, Any] | None, mask: np.ndarray | None,
                        threads: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(labels int64 (nq, k), scores float32 (nq, k))``; ``mask`` is a bool allow-mask or None."""

    @abstractmethod
    def _backend_set_query_params(self, params: dict[str, Any]) -> None:
        """Apply default query parameters."""

    @abstractmethod
    def _backend_save(self, file: Path) -> None:
        """Write the backend's own file."""

    @abstractmethod
    def _backend_load(self, file: Path, n_labels: int) -> None:
        """Read the backend's own file."""

    def _backend_verify(self, file: Path) -> None:
        """Check the loaded backend file against the folder (element count, dimension, metric); raise
        :class:`~annrec.errors.ArtifactError` naming ``file`` and what disagrees."""

    @abstractmethod
    def memory_bytes(self) -> int:
        """Approximate in-memory size of the backend index in bytes (excluding the stored vectors copy)."""
