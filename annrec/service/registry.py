"""The registry of served artifacts: index name -> :class:`ServedIndex` (the index, its embeddings, its one
:class:`~annrec.recommend.Recommender`).

Discovery (:func:`~annrec.service.discovery.discover`): every folder under ``model_dir`` (the folder
itself, its children, and their children; hidden folders such as the temporary folders of an atomic
write are skipped) whose ``manifest.json`` says ``annrec.index`` or ``annrec.embeddings``. An index is
served under its folder name (``parent.child`` two levels down). Its embeddings are found through the
index manifest's ``source`` (``{"embeddings": <path>, "embeddings_name": <folder name>}``): the path
when it exists, else a discovered embeddings folder of that name. Embeddings no index was built from are
served through an exact in-memory FAISS ``Flat`` index under their own name (``serve_bare_embeddings``),
read-only.

Concurrency (see ``docs/service.md``):

* a :class:`Snapshot` (name -> :class:`ServedIndex`) is immutable; a request takes the current one
  once and finishes on it, so a reload (load everything anew beside the old, then swap one reference)
  never disturbs requests in flight;
* searches hold the index's :class:`~annrec.service.rwlock.RWLock` in shared mode (no global lock);
  an upsert/delete holds it exclusively only while it mutates the index;
* writes go through the index's :class:`~annrec.service.storage.IndexStore`: logged and committed to the
  write-ahead log first, then applied in memory (the readers-writer lock held exclusively for the apply
  alone); snapshots are written in the background by a forked child;
* a reload takes every store's commit lock, loads every folder anew (snapshot + log replay, so every
  committed write is there), swaps and retires the old stores; writers that waited on a retired store
  retry on the new one, so no write is lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annrec.embeddings import Embeddings
from annrec.errors import DataNotFoundError, InputError, UnknownIdError
from annrec.index import Index, build_index, load_index
from annrec.recommend import Recommender, encode_with
from annrec.service.discovery import (ENCODER_KINDS, ENCODER_MODULES, NAME_RE, Discovered, discover,
                                      load_encoder, query_encoder, register_query_encoder)
from annrec.index import storage as index_storage
from annrec.service.rwlock import RWLock
from annrec.service.storage import IndexStore, PersistError, StoreRetired, Write, reserve_capacity

#: backends whose served folders take writes over HTTP (upserts and deletes through the write-ahead log)
WRITABLE_BACKENDS = ("hnswlib", "faiss", "usearch")
#: backends served read-only, and why: a logged write is applied as one ``Index.add`` per run of upserts, and
#: PyNNDescent's add refines its whole k-NN graph and rebuilds its search graph (seconds for tens of thousands
#: of items) under the exclusive lock, stalling every search of the index meanwhile; ScaNN takes no adds at all
READ_ONLY_BACKENDS = {"pynndescent": "each add refines its whole NN-descent graph and rebuilds its search graph "
                                     "(seconds) while searches wait",
                      "scann": "its partitions and codebooks are trained on the build's vectors and take no adds"}

log = logging.getLogger("annrec.service")


# ----------------------------------------------------------------------------- served index
class ServedIndex:
    """One served index and the one :class:`~annrec.recommend.Recommender` that answers every request on it.

    Args:
        name: the name in URLs. index: the :class:`~annrec.index.Index`.
        path: the index folder (``None`` for an in-memory Flat index over embeddings: read-only).
        embeddings / embeddings_path: the :class:`Embeddings` the index was built from, or ``None``.
        encoder: ``(kind, encoder)`` from :func:`query_encoder` (kind ``"text"`` or ``"sequence"``) or ``None``.
        encoder_error: why loading the query encoder failed, if it did.

    Attributes:
        recommender: the :class:`Recommender` over ``(embeddings, index, encoder)``. When
            :func:`~annrec.recommend.check_pairing` says the embeddings do not belong to the index, it
            serves the index alone (no metadata from the embeddings, no users, no encoder) and
            ``recommender_error`` says why.
        embeddings / encoder / encoder_kind: what the recommender serves (``None`` when dropped).
        rw: readers-writer lock (searches shared, applying committed writes exclusive).
        store: the :class:`~annrec.service.storage.IndexStore` of a writable index (``None``: read-only).
    """

    def __init__(self, name: str, index: Index, path: Path | None, embeddings: Embeddings | None = None,
                 embeddings_path: Path | None = None, encoder: tuple[str, Any] | None = None,
                 encoder_error: str | None = None) -> None:
        self.name = name
        self.index = index
        self.path = path
        self.embeddings_path = embeddings_path
        self.recommender_error: str | None = None
        self.encoder_error = encoder_error
        kind, enc = encoder if encoder is not None else (None, None)
        try:
            self.recommender = Recommender(embeddings, index, enc)
        except InputError as e:
            self.recommender_error = str(e)
            log.warning("index %s does not belong to its embeddings %s (%s): serving it without them", name,
                        embeddings_path, e)
            if enc is not None:
                self.encoder_error = f"not served: the embeddings do not belong to the index ({e})"
            kind, self.embeddings_path = None, None
            self.recommender = Recommender(None, index)
        self.embeddings: Embeddings | None = self.recommender.embeddings
        self.encoder: Any = self.recommender.encoder
        self.encoder_kind: str | None = kind
        self.rw = RWLock()
        self.retired = False
        self.writable = path is not None
        self.store: IndexStore | None = None
        self.settings = None  # the registry's settings (limits), set when it loads the index
        self.loaded_at = time.time()
        ext = getattr(index, "_ext", None)
        self._int_ids = (ext.dtype.kind in "iu" if len(ext) else None) if ext is not None else \
            getattr(index, "_int_ids", None)

    @property
    def trainer(self) -> str | None:
        """The ``trainer`` of the embeddings' manifest (``"mf"``, ``"text"``, …), or ``None``."""
        return (self.embeddings.manifest or {}).get("trainer") if self.embeddings is not None else None

    @property
    def has_users(self) -> bool:
        """True when the index answers user recommendations (its embeddings carry user vectors)."""
        return self.recommender.has_users

    def query_param_names(self) -> dict[str, str]:
        """API parameter name -> backend parameter name, for the parameters this index understands."""
        if self.index.backend in ("hnswlib", "usearch"):  # HNSW graphs whose one query parameter is ef
            return {"ef": "ef"}
        out = {}
        has = getattr(self.index, "_has_param", None)
        if has is not None and has("nprobe"):
            out["nprobe"] = "nprobe"
        if has is not None and has("efSearch"):
            out["ef"] = "efSearch"
        if has is not None and has("k_factor"):
            out["k_factor"] = "k_factor"
        return out

    def describe(self, full: bool = True) -> dict[str, Any]:
        """The summary shown by ``GET /v1/indexes`` (``full=False``) and ``GET /v1/indexes/{name}``."""
        idx = self.index
        d: dict[str, Any] = {
            "name": self.name, "backend": idx.backend, "metric": idx.metric, "dim": idx.dim, "count": len(idx),
            "trainer": self.trainer, "user_recommendations": self.has_users,
            "query_encoder": self.encoder_kind, "writable": self.writable,
            "query_params": sorted(self.query_param_names()),
        }
        if full:
            d.update({
                "params": {k: v for k, v in idx.params.items()},
                "source": idx.source or {},
                "path": str(self.path) if self.path is not None else None,
                "embeddings": str(self.embeddings_path) if self.embeddings_path is not None else None,
                "n_users": len(self.embeddings.queries) if self.has_users else 0,
                "id_type": None if self._int_ids is None else ("int" if self._int_ids else "str"),
                "memory_bytes": self.memory_bytes(),
                "storage": self.store.describe() if self.store is not None else None,
                "recommender_error": self.recommender_error, "query_encoder_error": self.encoder_error,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            })
        return d

    def memory_bytes(self) -> int | None:
        """The backend's size estimate, cached until the next write (FAISS serialises the index to measure)."""
        cached = getattr(self, "_mem", None)
        version = getattr(self.index, "_generation", 0)
        if cached is None or cached[0] != version:
            with self.rw.read():
                cached = (version, _safe(self.index.memory_bytes))
            self._mem = cached
        return cached[1]


def _safe(fn):
    try:
        return int(fn())
    except Exception:  # noqa: BLE001 - a size estimate must never fail a request
        return None


# ----------------------------------------------------------------------------- snapshot and registry
@dataclass(frozen=True)
class Snapshot:
    """An immutable set of served indexes; requests hold one from start to end."""

    indexes: dict[str, ServedIndex]
    generation: int
    errors: tuple[str, ...] = ()


class UnknownIndexError(UnknownIdError):
    """No index of that name is served."""


class Registry:
    """Loads the artifacts of ``settings.model_dir`` and answers which index serves a request.

    Thread-safe: :attr:`snapshot` is swapped atomically by :meth:`reload`; writes go through :meth:`write`.
    """

    def __init__(self, settings, on_save: Callable[[str, float, bool], None] | None = None) -> None:
        self.settings = settings
        self.on_save = on_save
        self.snapshot = Snapshot({}, 0)
        self._reload_lock = threading.Lock()
        self.last_reload_token: str | None = None

    # -- loading
    def _load_snapshot(self, generation: int) -> Snapshot:
        s = self.settings
        found = discover(s.model_dir)
        if not found.indexes and not found.embeddings:
            raise DataNotFoundError(f"no index or embeddings artifacts under {s.model_dir}: build some with "
                                    f"`annrec quickstart --out {s.model_dir}` or `annrec index build`")
        emb_cache: dict[Path, Embeddings] = {}
        enc_cache: dict[Path, tuple[tuple[str, Any] | None, str | None]] = {}

        def load_emb(path: Path) -> tuple[Embeddings, tuple[str, Any] | None, str | None]:
            key = path.resolve()
            if key not in emb_cache:
                emb_cache[key] = Embeddings.load(path, mmap=True)  # the index holds the vectors it searches
                enc_cache[key] = load_encoder(emb_cache[key], path)
            return (emb_cache[key], *enc_cache[key])

        served: dict[str, ServedIndex] = {}
        used_emb: set[Path] = set()
        for parent in sorted({p.parent for p in found.indexes.values()} | {Path(s.model_dir)}):
            if not s.read_only:
                _quiet(index_storage.cleanup_siblings, parent)  # what interrupted writes left, whatever their pid
        for name, path in found.indexes.items():
            if not s.read_only:
                _quiet(index_storage.cleanup, path)
            index = self._load_index(path)
            emb_path = self._embeddings_path(index.source or {}, found)
            emb, enc, enc_error = None, None, None
            if emb_path is not None:
                emb, enc, enc_error = load_emb(emb_path)
                used_emb.add(emb_path.resolve())
            served[name] = ServedIndex(name, index, path, emb, emb_path, enc, enc_error)
        if s.serve_bare_embeddings:
            for name, path in found.embeddings.items():
                if path.resolve() in used_emb:
                    continue
                emb, enc, enc_error = load_emb(path)
                index = build_index(emb.vectors, emb.ids, emb.metric, backend="faiss", factory="Flat")
                index.items = {}
                index.source = {"embeddings": str(path.resolve()), "embeddings_name": name, "in_memory": True}
                served[name] = ServedIndex(name, index, None, emb, path, enc, enc_error)
        try:
            for srv in served.values():
                srv.settings = s
                srv.writable = srv.path is not None and srv.index.backend in WRITABLE_BACKENDS \
                    and not s.read_only and os.access(srv.path, os.W_OK)
                if srv.writable:
                    reserve_capacity(srv.index)
                    srv.store = IndexStore(srv.name, srv.path, srv.index, srv.rw, durable=s.persist == "sync",
                                           snapshot_every=s.snapshot_every_writes,
                                           snapshot_interval=s.snapshot_interval_s,
                                           follow_interval=s.reload_poll_s if s.workers > 1 else None,
                                           on_snapshot=self.on_save)
        except BaseException:
            for srv in served.values():
                if srv.store is not None:
                    srv.store.close()
            raise
        return Snapshot(served, generation, tuple(found.skipped))

    def _load_index(self, path: Path):
        """An index folder, or a sharded folder with its shards in this process or, with ``shard_backend: ray``,
        in Ray actors (a local Ray is started on first use, and shut down by :meth:`close`)."""
        if self.settings.shard_backend != "ray":
            return load_index(path)
        import ray

        fresh = not ray.is_initialized()
        index = load_index(path, backend="ray", address=self.settings.ray_address)  # ignored by a plain folder
        self._ray_started = getattr(self, "_ray_started", False) or (fresh and ray.is_initialized())
        return index

    @staticmethod
    def _embeddings_path(source: dict[str, Any], found: Discovered) -> Path | None:
        p = source.get("embeddings")
        name = source.get("embeddings_name")
        if name and name in found.embeddings:  # a model dir that was copied or moved pairs with its own copy
            return found.embeddings[name]
        if p:
            path = Path(p)
            if (path / "manifest.json").is_file():
                return path
        if p and Path(p).name in found.embeddings:
            return found.embeddings[Path(p).name]
        return None

    def load(self) -> Snapshot:
        """Initial load (blocking). Raises the artifact errors of :func:`discover` / ``load_index``."""
        with self._reload_lock:
            self.snapshot = self._load_snapshot(1)
        return self.snapshot

    def reload(self) -> tuple[Snapshot, float]:
        """Load every artifact anew beside the served ones and swap them in atomically.

        Writes wait meanwhile (each store's commit lock is held); every committed write is in the log, so the
        new indexes (snapshot + log replay) hold it; writes queued on the old stores retry on the new. On any
        error the served snapshot stays as it was.

        Returns:
            ``(new snapshot, seconds)``.

        Raises:
            AnnrecError: an artifact failed to load (nothing changed).
        """
        t0 = time.perf_counter()
        with self._reload_lock:
            old = self.snapshot
            locked = []
            try:
                for srv in sorted(old.indexes.values(), key=lambda x: x.name):
                    if srv.store is not None:
                        srv.store.commit_lock.acquire()
                        locked.append(srv)
                new = self._load_snapshot(old.generation + 1)
                self.snapshot = new
                for srv in old.indexes.values():
                    srv.retired = True
                for srv in locked:
                    srv.store.retire()
            finally:
                for srv in locked:
                    srv.store.commit_lock.release()
        for srv in locked:
            srv.store.close()  # joins its threads; the retired snapshot is then garbage
        return new, time.perf_counter() - t0

    def close(self) -> None:
        """Write a snapshot of every index with logged writes and stop the stores (server shut-down)."""
        with self._reload_lock:
            for srv in self.snapshot.indexes.values():
                if srv.store is not None:
                    srv.store.close(snapshot=True)
                if srv.index.backend == "sharded":
                    srv.index.close()
            if getattr(self, "_ray_started", False):  # the Ray this server started (never a joined cluster's)
                import ray

                ray.shutdown()
                self._ray_started = False

    # -- lookups
    def get(self, name: str, snapshot: Snapshot | None = None) -> ServedIndex:
        snap = snapshot or self.snapshot
        try:
            return snap.indexes[name]
        except KeyError:
            known = ", ".join(sorted(snap.indexes)) or "none"
            raise UnknownIndexError(f"unknown index {name!r}: the served indexes are {known} "
                                    f"(GET /v1/indexes lists them)") from None

    def pick(self, capability: str, name: str | None, snapshot: Snapshot | None = None) -> ServedIndex:
        """The index answering a user / text / sequence request: the named one, else the default, else the first.

        ``capability``: ``"users"``, ``"text"`` or ``"sequence"``.

        Raises:
            UnknownIndexError: no such index, or no index with that capability (the message says which).
        """
        snap = snapshot or self.snapshot
        what = {"users": "a collaborative-filtering model with user vectors",
                "text": "no text model loaded", "sequence": "no sequence model loaded"}[capability]

        def ok(srv: ServedIndex) -> bool:
            if capability == "users":
                return srv.has_users
            return srv.encoder_kind == capability

        if name is not None:
            srv = self.get(name, snap)
            if not ok(srv):
                reason = {"users": f"index {name!r} has no user vectors (it is not {what})",
                          "text": f"index {name!r} has no text query encoder ({what} under that name)",
                          "sequence": f"index {name!r} has no sequence encoder ({what} under that name)"}[capability]
                raise UnknownIndexError(reason)
            return srv
        default = self.settings.default_index
        if default is not None and default in snap.indexes and ok(snap.indexes[default]):
            return snap.indexes[default]
        for srv_name in sorted(snap.indexes):
            if ok(snap.indexes[srv_name]):
                return snap.indexes[srv_name]
        if capability == "users":
            raise UnknownIndexError("no collaborative-filtering model with user vectors is loaded: serve the "
                                    "embeddings of a matrix-factorisation model (e.g. `annrec quickstart`)")
        trainer = "text" if capability == "text" else "sequence"
        raise UnknownIndexError(f"{what}: serve an index built from embeddings whose trainer is {trainer!r} "
                                f"(and whose module offers query_encoder_from_embeddings)")

    # -- writes
    def write(self, name: str, write: Write) -> tuple[ServedIndex, Write]:
        """Log, commit and apply ``write`` on the named index (:meth:`IndexStore.submit`); returns
        ``(served, write)`` once it is durable and visible.

        Raises:
            UnknownIndexError: no such index. InputError: the index is read-only. UnknownIdError: a delete of
            an unknown id. PersistError: the commit failed (nothing changed).
        """
        while True:
            srv = self.get(name)
            if srv.store is None:
                if srv.path is None:
                    raise InputError(f"index {name!r} is an in-memory exact index over embeddings and cannot be "
                                     f"changed: build an index from them with `annrec index build` to get a "
                                     f"writable one")
                if self.settings.read_only:
                    raise InputError("writes are disabled: this server runs with read_only (--read-only); send "
                                     "writes to a server without it")
                if srv.index.backend in READ_ONLY_BACKENDS:
                    raise InputError(f"index {name!r} is a {srv.index.backend} index, which is read-only over HTTP: "
                                     f"{READ_ONLY_BACKENDS[srv.index.backend]}; rebuild it with `annrec index build` "
                                     f"(or add in one batch through annrec.index), then POST /v1/admin/reload")
                if srv.index.backend == "sharded":
                    raise InputError(f"index {name!r} is a sharded index, which is read-only over HTTP: write to its "
                                     f"embeddings and rebuild it with `annrec index build --shards`, then POST "
                                     f"/v1/admin/reload")
                raise InputError(f"index {name!r} is read-only (its folder {srv.path} is not writable): serve a "
                                 f"writable copy")
            try:
                return srv, srv.store.submit(write)
            except StoreRetired:
                continue  # a reload swapped it while we waited: apply to the new one

    # -- multi-worker reload propagation
    def token_file(self) -> Path | None:
        d = self.settings.runtime_dir
        return None if d is None else Path(d) / "reload-token"

    def publish_reload(self) -> None:
        """Tell the other worker processes to reload (they poll :meth:`token_file`)."""
        f = self.token_file()
        if f is None:
            return
        from annrec._io import atomic_write_text

        token = uuid.uuid4().hex
        self.last_reload_token = token
        atomic_write_text(f, token)

    def read_token(self) -> str | None:
        f = self.token_file()
        try:
            return f.read_text().strip() if f is not None else None
        except FileNotFoundError:
            return None


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except OSError as e:  # a read-only model dir: nothing to clean
        log.debug("clean-up of %s skipped: %s", args, e)


__all__ = ["Registry", "ServedIndex", "Snapshot", "UnknownIndexError", "discover", "Discovered", "query_encoder",
           "register_query_encoder", "encode_with", "ENCODER_KINDS", "ENCODER_MODULES", "NAME_RE", "IndexStore",
           "PersistError", "Write", "reserve_capacity"]
