"""The registry of served artifacts: index name -> index, its embeddings, item metadata, recommender side.

Discovery (:func:`discover`): every folder under ``model_dir`` (the folder itself, its children, and
their children; hidden folders such as the temporary folders of an atomic write are skipped) whose
``manifest.json`` says ``annrec.index`` or ``annrec.embeddings``. An index is served under its folder
name (``parent.child`` two levels down). Its embeddings are found through the index manifest's
``source`` (``{"embeddings": <path>, "embeddings_name": <folder name>}``): the path when it exists, else
a discovered embeddings folder of that name. Embeddings no index was built from are served through an
exact in-memory FAISS ``Flat`` index under their own name (``serve_bare_embeddings``), read-only.

Concurrency (see ``docs/service.md``):

* a :class:`Snapshot` (name -> :class:`ServedIndex`) is immutable; a request takes the current one
  once and finishes on it, so a reload (load everything anew beside the old, then swap one reference)
  never disturbs requests in flight;
* searches hold the index's :class:`~annrec.service.rwlock.RWLock` in shared mode (no global lock);
  an upsert/delete holds it exclusively only while it mutates the index;
* writers and the saver also hold the index's ``mutation`` lock, so a save never sees a half-applied
  write and searches go on while the folder is written;
* a reload takes every ``mutation`` lock, saves pending writes, loads, swaps and retires the old
  snapshot; writers that waited on a retired index retry on the new one, so no write is lost.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annrec.embeddings import KIND as EMB_KIND
from annrec.embeddings import Embeddings
from annrec.errors import AnnrecError, ArtifactError, DataNotFoundError, InputError, UnknownIdError
from annrec.index import Index, build_index, load_index
from annrec.index.base import KIND as INDEX_KIND
from annrec.recommend import Recommender
from annrec.service.rwlock import RWLock

log = logging.getLogger("annrec.service")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# ----------------------------------------------------------------------------- query encoder hook
#: trainer name (manifest "trainer") -> module offering ``query_encoder_from_embeddings(emb)``.
ENCODER_MODULES: dict[str, str] = {"text": "annrec.train.text", "sequence": "annrec.train.sequence"}
#: what each trainer's encoder answers: ``/v1/search/text`` or ``/v1/recommendations/next``.
ENCODER_KINDS: dict[str, str] = {"text": "text", "sequence": "sequence"}
_ENCODER_OVERRIDES: dict[str, tuple[str, Callable[[Embeddings], Any]]] = {}


def register_query_encoder(trainer: str, factory: Callable[[Embeddings], Any] | None,
                           kind: str | None = None) -> None:
    """Register (or with ``factory=None`` remove) a query-encoder factory for a trainer name.

    ``factory(emb)`` returns an encoder (see :func:`query_encoder`) or ``None``; ``kind`` is ``"text"``
    or ``"sequence"`` (default: ``ENCODER_KINDS[trainer]``). Overrides the module lookup; used by tests
    and by plug-ins whose trainer is not in :data:`ENCODER_MODULES`.
    """
    if factory is None:
        _ENCODER_OVERRIDES.pop(trainer, None)
        return
    kind = kind or ENCODER_KINDS.get(trainer)
    if kind not in ("text", "sequence"):
        raise InputError(f"query encoder kind must be 'text' or 'sequence'; got {kind!r}")
    _ENCODER_OVERRIDES[trainer] = (kind, factory)


def query_encoder(emb: Embeddings) -> tuple[str, Any] | None:
    """The query encoder of an embeddings artifact, as ``(kind, encoder)``, or ``None`` when it has none.

    Looks up ``emb.manifest["trainer"]``; for ``"text"`` / ``"sequence"`` lazily imports
    ``annrec.train.text`` / ``annrec.train.sequence`` and calls its
    ``query_encoder_from_embeddings(emb)``. The encoder contract (``encoder.encode(...)``, or the encoder
    itself when it is a plain callable), one query per call:

    * text: ``encode(texts: list[str])`` with one text -> float32 ``(1, dim)`` or ``(dim,)``
      (sentence-transformers style, e.g. :class:`annrec.train.text.TextEncoder`);
    * sequence: ``encode(item_ids: list, timestamps: list[int] | None)`` (Unix seconds, oldest first)
      -> float32 ``(dim,)`` (e.g. :class:`annrec.train.sequence.SequenceQueryEncoder`);
    * either may return ``(vector, warnings: list[str])``; the warnings are passed to the client;
    * bad input raises :class:`~annrec.errors.InputError` (422), unknown item ids
      :class:`~annrec.errors.UnknownIdError` (404).

    A missing module or function means "no encoder" (``None``); other errors propagate.
    """
    trainer = (emb.manifest or {}).get("trainer")
    if trainer in _ENCODER_OVERRIDES:
        kind, factory = _ENCODER_OVERRIDES[trainer]
        enc = factory(emb)
        return None if enc is None else (kind, enc)
    module_name = ENCODER_MODULES.get(trainer)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if getattr(e, "name", None) == module_name:
            return None
        raise
    fn = getattr(module, "query_encoder_from_embeddings", None)
    if fn is None:
        return None
    enc = fn(emb)
    return None if enc is None else (ENCODER_KINDS[trainer], enc)


def encode_with(encoder: Any, *args: Any) -> tuple[np.ndarray, list[str]]:
    """Call an encoder (``.encode(...)`` if it has one, else the callable itself).

    Returns:
        ``(query vector float32 (1, dim), warnings)``.

    Raises:
        InputError: the encoder returned something that is not one finite vector.
    """
    fn = encoder.encode if hasattr(encoder, "encode") else encoder
    out = fn(*args)
    warnings: list[str] = []
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list):
        out, warnings = out
    vec = np.asarray(out, dtype=np.float32)
    if vec.ndim == 1:
        vec = vec[None, :]
    if vec.ndim != 2 or vec.shape[0] != 1:
        raise InputError(f"the query encoder returned an array of shape {vec.shape} for one query; expected (dim,)")
    return vec, [str(w) for w in warnings]


# ----------------------------------------------------------------------------- discovery
@dataclass
class Discovered:
    """Artifact folders found under a model dir: name -> folder."""

    indexes: dict[str, Path] = field(default_factory=dict)
    embeddings: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def discover(model_dir: str | Path) -> Discovered:
    """Find Index and Embeddings artifacts in ``model_dir`` (itself, children, grandchildren).

    Raises:
        DataNotFoundError: ``model_dir`` is not a folder.
        ArtifactError: a folder name is served twice or a manifest is unreadable.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"model dir {root} is not a folder: pass the folder holding the artifacts "
                                f"(e.g. the --out of `annrec quickstart`)")
    found = Discovered()

    def visit(path: Path, name: str, depth: int) -> None:
        manifest = path / "manifest.json"
        if manifest.is_file():
            try:
                import json

                kind = json.loads(manifest.read_text()).get("kind")
            except (OSError, ValueError, AttributeError) as e:
                raise ArtifactError(f"{manifest} is unreadable ({e}): rebuild that artifact or move it out of "
                                    f"the model dir") from None
            if kind not in (INDEX_KIND, EMB_KIND):
                found.skipped.append(f"{path} ({kind or 'no kind'})")
                return
            if not NAME_RE.match(name):
                found.skipped.append(f"{path} (name {name!r} is not usable in a URL: use letters, digits, . _ -)")
                return
            target = found.indexes if kind == INDEX_KIND else found.embeddings
            other = found.embeddings if kind == INDEX_KIND else found.indexes
            if name in target or name in other:
                raise ArtifactError(f"two artifacts would be served as {name!r} ({path}): rename one folder")
            target[name] = path
            return
        if depth >= 2:
            return
        for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            visit(child, child.name if depth == 0 else f"{name}.{child.name}", depth + 1)

    visit(root, root.name, 0)
    return found


# ----------------------------------------------------------------------------- served index
class PersistError(AnnrecError):
    """A write was applied in memory but its index folder could not be saved."""


class ServedIndex:
    """One served index with everything answering a request needs.

    Attributes:
        name: the name in URLs. path: the index folder (``None`` for an in-memory Flat over embeddings).
        index: the :class:`~annrec.index.Index`. embeddings: its :class:`Embeddings` or ``None``.
        recommender: a :class:`Recommender` when the embeddings have user vectors.
        encoder / encoder_kind: the query encoder (``"text"`` or ``"sequence"``) or ``None``.
        rw: readers-writer lock (searches shared, mutations exclusive).
        mutation: held by writers and by the saver; a reload takes it to quiesce writes.
    """

    def __init__(self, name: str, index: Index, path: Path | None, embeddings: Embeddings | None = None,
                 embeddings_path: Path | None = None) -> None:
        self.name = name
        self.index = index
        self.path = path
        self.embeddings = embeddings
        self.embeddings_path = embeddings_path
        self.recommender: Recommender | None = None
        self.recommender_error: str | None = None
        self.encoder: Any = None
        self.encoder_kind: str | None = None
        self.encoder_error: str | None = None
        self.rw = RWLock()
        self.mutation = threading.Lock()
        self.retired = False
        self.writable = path is not None  # the registry clears it when the server is read-only
        self.persister: Persister | None = None
        self.loaded_at = time.time()
        self.version = 0   # writes applied since load
        self.saved_version = 0
        self._int_ids = index._ext.dtype.kind in "iu" if len(index._ext) else None
        if embeddings is not None and embeddings.queries is not None:
            try:
                self.recommender = Recommender(embeddings, index)
            except InputError as e:
                self.recommender_error = str(e)

    # -- metadata
    @property
    def trainer(self) -> str | None:
        return (self.embeddings.manifest or {}).get("trainer") if self.embeddings is not None else None

    def item_meta(self, item_id) -> dict | None:
        m = self.index.items.get(item_id)
        if m is None and self.embeddings is not None and self.embeddings.items:
            m = self.embeddings.items.get(item_id)
        return m

    def coerce_id(self, item_id):
        """Map a URL id (a string) onto the index's id type."""
        return self.index._coerce(item_id)

    def query_param_names(self) -> dict[str, str]:
        """API parameter name -> backend parameter name, for the parameters this index understands."""
        if self.index.backend == "hnswlib":
            return {"ef": "ef"}
        out = {}
        has = getattr(self.index, "_has_param", None)
        if has is not None and has("nprobe"):
            out["nprobe"] = "nprobe"
        if has is not None and has("efSearch"):
            out["ef"] = "efSearch"
        return out

    def describe(self, full: bool = True) -> dict[str, Any]:
        """The summary shown by ``GET /v1/indexes`` (``full=False``) and ``GET /v1/indexes/{name}``."""
        idx = self.index
        d: dict[str, Any] = {
            "name": self.name, "backend": idx.backend, "metric": idx.metric, "dim": idx.dim, "count": len(idx),
            "trainer": self.trainer, "user_recommendations": self.recommender is not None,
            "query_encoder": self.encoder_kind, "writable": self.writable,
            "query_params": sorted(self.query_param_names()),
        }
        if full:
            d.update({
                "params": {k: v for k, v in idx.params.items()},
                "source": idx.source or {},
                "path": str(self.path) if self.path is not None else None,
                "embeddings": str(self.embeddings_path) if self.embeddings_path is not None else None,
                "n_users": 0 if self.embeddings is None or self.embeddings.queries is None
                else len(self.embeddings.queries),
                "id_type": None if self._int_ids is None else ("int" if self._int_ids else "str"),
                "memory_bytes": self.memory_bytes(),
                "writes_since_load": self.version, "saved_writes": self.saved_version,
                "recommender_error": self.recommender_error, "query_encoder_error": self.encoder_error,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            })
        return d

    def memory_bytes(self) -> int | None:
        """The backend's size estimate, cached until the next write (FAISS serialises the index to measure)."""
        cached = getattr(self, "_mem", None)
        if cached is None or cached[0] != self.version:
            with self.rw.read():
                cached = (self.version, _safe(self.index.memory_bytes))
            self._mem = cached
        return cached[1]

    @contextmanager
    def reading(self) -> Iterator[Index]:
        """Hold the shared lock while using the index."""
        with self.rw.read():
            yield self.index


def _safe(fn):
    try:
        return int(fn())
    except Exception:  # noqa: BLE001 - a size estimate must never fail a request
        return None


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

        def load_emb(path: Path) -> Embeddings:
            key = path.resolve()
            if key not in emb_cache:
                emb_cache[key] = Embeddings.load(path)
            return emb_cache[key]

        served: dict[str, ServedIndex] = {}
        used_emb: set[Path] = set()
        for name, path in found.indexes.items():
            index = load_index(path)
            emb_path = self._embeddings_path(index.source or {}, found)
            emb = None
            if emb_path is not None:
                emb = load_emb(emb_path)
                used_emb.add(emb_path.resolve())
                if emb.dim != index.dim:
                    log.warning("index %s (dim %d) does not match its embeddings %s (dim %d): serving it "
                                "without them", name, index.dim, emb_path, emb.dim)
                    emb, emb_path = None, None
            served[name] = ServedIndex(name, index, path, emb, emb_path)
        if s.serve_bare_embeddings:
            for name, path in found.embeddings.items():
                if path.resolve() in used_emb:
                    continue
                emb = load_emb(path)
                index = build_index(emb.vectors, emb.ids, emb.metric, backend="faiss", factory="Flat")
                index.items = {}
                index.source = {"embeddings": str(path.resolve()), "embeddings_name": name, "in_memory": True}
                served[name] = ServedIndex(name, index, None, emb, path)
        for srv in served.values():
            if srv.embeddings is not None:
                try:
                    got = query_encoder(srv.embeddings)
                except Exception as e:  # noqa: BLE001 - a broken encoder must not stop the other indexes
                    srv.encoder_error = f"{type(e).__name__}: {e}"
                    log.warning("query encoder of %s could not be loaded: %s", srv.name, srv.encoder_error)
                    got = None
                if got is not None:
                    srv.encoder_kind, srv.encoder = got
            srv.writable = srv.path is not None and not s.read_only
            if srv.writable:
                srv.persister = Persister(srv, s.persist, s.save_delay_s, self.on_save)
                reserve_capacity(srv.index)
        return Snapshot(served, generation, tuple(found.skipped))

    @staticmethod
    def _embeddings_path(source: dict[str, Any], found: Discovered) -> Path | None:
        p = source.get("embeddings")
        if p:
            path = Path(p)
            if (path / "manifest.json").is_file():
                return path
        name = source.get("embeddings_name")
        if name and name in found.embeddings:
            return found.embeddings[name]
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

        Pending writes are saved first; writes wait meanwhile and then go to the new indexes. On any
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
                    srv.mutation.acquire()
                    locked.append(srv)
                for srv in locked:
                    if srv.persister is not None:
                        srv.persister.save_locked()
                        if srv.persister.error is not None:
                            raise PersistError(f"pending writes of index {srv.name!r} could not be saved "
                                               f"({srv.persister.error}); reload refused so they are not lost")
                new = self._load_snapshot(old.generation + 1)
                self.snapshot = new
                for srv in locked:
                    srv.retired = True
                    if srv.persister is not None:
                        srv.persister.close()
            finally:
                for srv in locked:
                    srv.mutation.release()
        return new, time.perf_counter() - t0

    def close(self) -> None:
        """Save pending writes and stop the savers (server shut-down)."""
        with self._reload_lock:
            for srv in self.snapshot.indexes.values():
                if srv.persister is not None:
                    with srv.mutation:
                        srv.persister.save_locked()
                    srv.persister.close()

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
                return srv.recommender is not None
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
    def write(self, name: str, fn: Callable[[ServedIndex], Any]) -> tuple[ServedIndex, int, Any]:
        """Apply ``fn(served)`` to the named index under its write locks; returns ``(served, version, result)``.

        Raises:
            UnknownIndexError: no such index. InputError: the index is read-only.
        """
        while True:
            srv = self.get(name)
            if srv.path is None:
                raise InputError(f"index {name!r} is an in-memory exact index over embeddings and cannot be "
                                 f"changed: build an index from them with `annrec index build` to get a "
                                 f"writable one")
            if self.settings.read_only:
                raise InputError(f"writes are disabled: this server runs {self.settings.workers} worker "
                                 f"processes, each with its own copy of the indexes; run with --workers 1 to "
                                 f"write, or rebuild the index and POST /v1/admin/reload")
            with srv.mutation:
                if srv.retired:
                    continue  # a reload swapped it while we waited: apply to the new one
                with srv.rw.write():
                    result = fn(srv)
                srv.version += 1
                version = srv.version
            if srv.persister is not None:
                srv.persister.noted()
            return srv, version, result

    def wait_saved(self, srv: ServedIndex, version: int, timeout: float = 300.0) -> bool:
        """In ``sync`` mode block until ``version`` of ``srv`` is on disk; returns whether it is saved."""
        if srv.persister is None:
            return False
        if self.settings.persist == "sync":
            srv.persister.wait(version, timeout)
        return srv.saved_version >= version

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
