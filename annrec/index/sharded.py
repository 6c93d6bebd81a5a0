"""Sharded indexes: S ordinary index folders behind one :class:`ShardedIndex` with ``Index.search``'s contract.

Folder format::

    manifest.json   kind "annrec.sharded-index", format_version, metric, dim, count, partition, shards
                    (folder names relative to this one), counts, backend, params, source (data hash)
    shard-000/ …    ordinary index folders (``annrec.index``): any command opens one on its own

Partitioning (``partition``): ``hash`` puts integer id ``i`` on shard ``i % S`` and a string id on
``crc32(id) % S``, so ownership needs no table and upserts of new ids go to a known shard; ``range`` splits
the rows in order (contiguous blocks) and routes by an id -> shard table built at load time (new ids go
to the smallest shard).

Each shard returns its own top ``k`` and :func:`merge_topk` keeps the best ``k`` overall: exact for exact
shards, and at least as good as one index at the same ``ef`` / ``nprobe`` for approximate ones. Filters
(``allowed_ids``, ``denied_ids``) and writes go only to the shards that own the ids. The shards sit behind
a small backend protocol (:class:`LocalShard`; :mod:`annrec.index.ray_shards` puts them in Ray actors).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from annrec._io import atomic_dir, write_json
from annrec._validate import as_matrix, check_int, check_k, normalize_ids
from annrec.embeddings import read_manifest
from annrec.errors import ArtifactError, InputError, UnknownIdError

SHARDED_KIND = "annrec.sharded-index"
FORMAT_VERSION = 1
PARTITIONS = ("hash", "range")


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int, metric: str,
               int_ids: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several ``(ids (nq, k_i), scores (nq, k_i))`` result sets of the same queries.

    Descending scores for ``ip`` / ``cosine``, ascending for ``l2``; unfilled slots (id ``-1`` / ``None``,
    score NaN) sort last; ties keep the order of ``parts`` (stable). Returns ``(ids (nq, k), scores
    (nq, k))`` padded like :meth:`annrec.index.Index.search`.
    """
    nq = parts[0][0].shape[0] if parts else 0
    ids = np.concatenate([p[0] for p in parts], axis=1) if parts else np.empty((0, 0), dtype=np.int64)
    scores = np.concatenate([p[1] for p in parts], axis=1).astype(np.float32) if parts else \
        np.empty((0, 0), dtype=np.float32)
    key = scores.astype(np.float64) * (1.0 if metric == "l2" else -1.0)
    key[np.isnan(key)] = np.inf
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_scores = np.take_along_axis(scores, order, axis=1)
    if out_ids.shape[1] < k:
        pad = k - out_ids.shape[1]
        out_ids = np.concatenate([out_ids, np.full((nq, pad), -1 if int_ids else None,
                                                   dtype=np.int64 if int_ids else object)], axis=1)
        out_scores = np.concatenate([out_scores, np.full((nq, pad), np.nan, dtype=np.float32)], axis=1)
    return out_ids, out_scores


def shard_of(ids, n_shards: int) -> np.ndarray:
    """The ``hash`` partition: shard number of each id, int64 ``(n,)`` (``id % S``; ``crc32(str) % S``)."""
    arr = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
    if arr.dtype.kind in "iu":
        return (arr.astype(np.int64) % n_shards).astype(np.int64)
    return np.asarray([zlib.crc32(str(i).encode()) % n_shards for i in arr.tolist()], dtype=np.int64)


class ShardBackend(Protocol):
    """What a shard answers: in this process (:class:`LocalShard`) or in a Ray actor."""

    def search_batch(self, queries: np.ndarray, k: int, params: dict | None, allowed_ids, denied_ids,
                     threads: int | None) -> tuple[np.ndarray, np.ndarray]: ...
    def add(self, vectors: np.ndarray, ids: np.ndarray, items: dict | None) -> None: ...
    def remove(self, ids: list) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def reload(self) -> None: ...
    def get_vector(self, item_id) -> np.ndarray: ...
    def contains(self, ids: list) -> list[bool]: ...
    def ids(self) -> list: ...
    def save(self) -> None: ...


class LocalShard:
    """A shard as an :class:`~annrec.index.Index` in this process, loaded from (and saved to) its folder."""

    def __init__(self, path: Path, index=None) -> None:
        from annrec.index import load_index

        self.path = Path(path)
        self.index = index if index is not None else load_index(self.path)

    def search_batch(self, queries, k, params, allowed_ids, denied_ids, threads):
        n = len(self.index)
        if n == 0:
            return merge_topk([], k, self.index.metric, self._int_ids())
        ids, scores = self.index.search(queries, min(k, n), params=params, allowed_ids=allowed_ids,
                                        denied_ids=denied_ids, threads=threads)
        return merge_topk([(ids, scores)], k, self.index.metric, self._int_ids())

    def _int_ids(self) -> bool:
        return self.index._ext.dtype.kind in "iu" if len(self.index._ext) else True

    def add(self, vectors, ids, items):
        self.index.add(vectors, ids, items=items)

    def remove(self, ids):
        self.index.remove(ids)

    def info(self):
        return {"path": str(self.path), "count": len(self.index), "backend": self.index.backend,
                "dim": self.index.dim, "metric": self.index.metric, "int_ids": self._int_ids(),
                "memory_bytes": int(self.index.memory_bytes()),
                "query_params": [n for n in self.index.query_param_names
                                 if getattr(self.index, "_has_param", lambda _: True)(n)]}

    def ids(self):
        return self.index.ids.tolist()

    def reload(self):
        from annrec.index import load_index

        self.index = load_index(self.path)

    def get_vector(self, item_id):
        return self.index.get_vector(item_id)

    def contains(self, ids):
        return [i in self.index for i in ids]

    def save(self):
        self.index.save(self.path)


class ShardedIndex:
    """Several index shards searched as one (the :class:`~annrec.index.Index` search contract).

    Args:
        shards: one backend per shard (:class:`LocalShard`, or Ray actor handles from
            :mod:`annrec.index.ray_shards`).
        manifest: the sharded folder's manifest (metric, dim, partition, params, source).
        path: the sharded folder (``None`` in memory).

    Raises:
        ArtifactError: shards that disagree on metric or dimension.
    """

    backend = "sharded"

    def __init__(self, shards: list, manifest: dict[str, Any], path: Path | None = None) -> None:
        self.shards = shards
        self.path = path
        self.metric = manifest["metric"]
        self.dim = int(manifest["dim"])
        self.partition = manifest.get("partition", "hash")
        self.params: dict[str, Any] = dict(manifest.get("params") or {})
        self.source: dict[str, Any] = dict(manifest.get("source") or {})
        self.items: dict[Any, dict] = {}
        self.build_seconds = manifest.get("build_seconds")
        self._shard_backend = manifest.get("backend", "")
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(shards)), thread_name_prefix="annrec-shard")
        self.refresh()

    # ------------------------------------------------------------------ bookkeeping
    def refresh(self) -> None:
        """Re-read each shard's count, id type and (for ``range``) the id -> shard table."""
        infos = list(self._pool.map(lambda s: s.info(), self.shards))
        for i, inf in enumerate(infos):
            if inf["dim"] != self.dim or inf["metric"] != self.metric:
                raise ArtifactError(f"shard {i} has dim {inf['dim']} / metric {inf['metric']} but the sharded index "
                                    f"{self.dim} / {self.metric}: rebuild it with `annrec index build --shards`")
        self._counts = [int(inf["count"]) for inf in infos]
        self._query_params = set(infos[0].get("query_params", [])) if infos else set()
        self._int_ids = all(inf.get("int_ids", True) for inf in infos)
        self._owner: dict[Any, int] | None = None
        if self.partition == "range":
            self._owner = {}
            for s, shard in enumerate(self.shards):
                for i in shard.ids():
                    self._owner[i] = s

    def __len__(self) -> int:
        return int(sum(self._counts))

    @property
    def shard_backend(self) -> str:
        """The backend of the shards (``hnswlib`` or ``faiss``)."""
        return str(self.params.get("shard_backend") or self._shard_backend)

    def _has_param(self, name: str) -> bool:
        """True when the query parameter ``name`` applies to the shards."""
        return name in self._query_params

    def coerce_id(self, ext_id):
        """An id as the shards store it (a URL string becomes an int on integer ids)."""
        if self._int_ids and isinstance(ext_id, str) and ext_id.strip().lstrip("-").isdigit():
            return int(ext_id)
        if self._int_ids and isinstance(ext_id, np.integer):
            return int(ext_id)
        return ext_id if self._int_ids else str(ext_id)

    def owners(self, ids) -> np.ndarray:
        """Shard number of each id (``-1`` when a ``range`` index does not hold it)."""
        ids = [self.coerce_id(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else list(ids))]
        if self.partition == "hash":
            return shard_of(np.asarray(ids, dtype=np.int64 if self._int_ids else object), len(self.shards))
        return np.asarray([self._owner.get(i, -1) for i in ids], dtype=np.int64)

    def _split(self, ids) -> list[list]:
        ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        owner = self.owners(ids)
        parts: list[list] = [[] for _ in self.shards]
        for i, o in zip(ids, owner.tolist()):
            if o >= 0:
                parts[o].append(self.coerce_id(i))
        return parts

    def __contains__(self, ext_id) -> bool:
        o = int(self.owners([ext_id])[0])
        return o >= 0 and bool(self.shards[o].contains([self.coerce_id(ext_id)])[0])

    def count_live(self, ids) -> int:
        """How many distinct ids of ``ids`` are live in some shard."""
        parts = self._split(list(dict.fromkeys(self.coerce_id(i) for i in
                                                (ids.tolist() if isinstance(ids, np.ndarray) else ids))))
        return int(sum(sum(self.shards[s].contains(p)) for s, p in enumerate(parts) if p))

    def get_vector(self, ext_id) -> np.ndarray:
        """The stored vector of an item, from its shard. Raises :class:`UnknownIdError` if no shard has it."""
        o = int(self.owners([ext_id])[0])
        if o < 0:
            raise UnknownIdError(f"unknown id {ext_id!r}: it is not in this index of {len(self)} items")
        return self.shards[o].get_vector(self.coerce_id(ext_id))

    # ------------------------------------------------------------------ search
    def search(self, queries, k: int, *, params: dict[str, Any] | None = None, allowed_ids=None,
               denied_ids=None, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`annrec.index.Index.search` over every shard (in parallel), merged exactly.

        Filters go only to the shards owning the ids; a shard with no allowed id is not asked.

        Raises:
            InputError: wrong dimension, NaN/Inf, ``k`` <= 0 or larger than the index, bad parameters.
        """
        q = as_matrix(queries, dim=self.dim, name="queries")
        k = check_k(k, limit=len(self))
        allowed = self._split(allowed_ids) if allowed_ids is not None else None
        denied = self._split(denied_ids) if denied_ids is not None else None
        jobs = []
        for s, shard in enumerate(self.shards):
            if self._counts[s] == 0 or (allowed is not None and not allowed[s]):
                continue
            jobs.append(self._pool.submit(shard.search_batch, q, k, params,
                                          None if allowed is None else allowed[s],
                                          None if denied is None or not denied[s] else denied[s], threads))
        return merge_topk([j.result() for j in jobs], k, self.metric, self._int_ids)

    # ------------------------------------------------------------------ writes
    def add(self, vectors, ids, items: dict[Any, dict] | None = None) -> None:
        """Upsert items, each into the shard that owns its id (``hash``) or, for new ids of a ``range`` index,
        the smallest shard.

        Raises:
            InputError: as :meth:`annrec.index.Index.add`.
        """
        x = as_matrix(vectors, dim=self.dim, name="vectors")
        ext = normalize_ids(ids)
        if len(ext) != len(x):
            raise InputError(f"{len(ext)} ids for {len(x)} vectors: give exactly one id per vector")
        owner = self.owners(ext)
        if self.partition == "range":
            owner[owner < 0] = int(np.argmin(self._counts))
        for s in np.unique(owner).tolist():
            rows = np.flatnonzero(owner == s)
            sub = {i: items[i] for i in ext[rows].tolist() if i in items} if items else None
            self.shards[s].add(x[rows], ext[rows], sub)
        self.refresh()

    def remove(self, ids) -> None:
        """Delete items from their shards. Raises :class:`UnknownIdError` (nothing removed) for an unknown id."""
        ids = list(ids) if not isinstance(ids, (str, int, np.integer)) else [ids]
        for i in ids:
            if i not in self:
                raise UnknownIdError(f"unknown id {i!r}: it is not in this index of {len(self)} items")
        for s, part in enumerate(self._split(ids)):
            if part:
                self.shards[s].remove(part)
        self.refresh()

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Save every shard into its folder (shards are saved where they were loaded from)."""
        for shard in self.shards:
            shard.save()
        return Path(path or self.path)

    def memory_bytes(self) -> int:
        return int(sum(s.info().get("memory_bytes", 0) for s in self.shards))

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def build_sharded(vectors, ids, metric: str, out: str | os.PathLike, *, shards: int, partition: str = "hash",
                  backend: str = "hnswlib", source: dict | None = None, items: dict | None = None,
                  force: bool = False, executor: str = "local", ray_address: str | None = None,
                  **params: Any) -> Path:
    """Build ``shards`` index folders of ``backend`` plus the sharded manifest under ``out``.

    Args:
        executor: ``"local"`` builds the shards one after another in this process; ``"ray"`` builds them
            as Ray Data group tasks (:func:`annrec.index.ray_build.build_shards_on_ray`; a local Ray, or the
            cluster at ``ray_address``), the same folders either way.

    Raises:
        InputError: fewer than 2 shards or more shards than vectors, an unknown partition or executor, bad
            parameters.
    """
    shards = check_int(shards, "--shards", minimum=2, hint=" (one shard is an ordinary index)")
    if partition not in PARTITIONS:
        raise InputError(f"unknown partition {partition!r}: use {' or '.join(PARTITIONS)}")
    if executor not in ("local", "ray"):
        raise InputError(f"unknown executor {executor!r}: use local or ray")
    x = as_matrix(vectors, name="vectors")
    ext = normalize_ids(ids)
    if len(ext) < shards:
        raise InputError(f"{len(ext)} vectors cannot fill {shards} shards")
    owner = shard_of(ext, shards) if partition == "hash" else \
        np.minimum(np.arange(len(ext)) * shards // len(ext), shards - 1)
    with atomic_dir(out, SHARDED_KIND, force=force) as tmp:
        if executor == "ray":
            from annrec.index.ray_build import build_shards_on_ray

            built = build_shards_on_ray(x, ext, owner, metric, tmp, backend, params, source, items, ray_address)
        else:
            built = [_build_shard(x, ext, owner, s, metric, tmp, backend, params, source, items)
                     for s in range(shards)]
        write_json(tmp / "manifest.json", {
            "kind": SHARDED_KIND, "format_version": FORMAT_VERSION, "metric": built[0][3], "dim": built[0][4],
            "count": int(sum(b[1] for b in built)), "partition": partition, "shards": [b[0] for b in built],
            "counts": [b[1] for b in built], "backend": backend, "params": built[-1][2],
            "source": dict(source or {})})
    return Path(out)


def _build_shard(x, ext, owner, s: int, metric: str, folder: Path, backend: str, params: dict, source, items):
    """Build and save shard ``s`` (the rows with ``owner == s``); returns ``(name, count, params, metric, dim)``."""
    from annrec.index import build_index

    rows = np.flatnonzero(owner == s)
    index = build_index(x[rows], ext[rows], metric, backend=backend, **params)
    index.source = dict(source or {})
    if items:
        index.items = {i: items[i] for i in ext[rows].tolist() if i in items}
    name = f"shard-{s:03d}"
    index.save(folder / name)
    return (name, len(index), {k: v for k, v in index.params.items() if k != "mips_max_norm"}, index.metric,
            index.dim)


def load_sharded(path: str | os.PathLike, backend: str = "local", **ray_options: Any) -> ShardedIndex:
    """Open a sharded folder: shards in this process (``backend="local"``) or in Ray actors (``"ray"``).

    Raises:
        DataNotFoundError: no such folder. ArtifactError: not a sharded index, a missing shard folder.
        InputError: an unknown backend.
    """
    path = Path(path)
    manifest = read_manifest(path, SHARDED_KIND)
    folders = [path / name for name in manifest.get("shards", [])]
    missing = [str(f) for f in folders if not (f / "manifest.json").exists()]
    if not folders or missing:
        raise ArtifactError(f"sharded index {path} is incomplete (missing {', '.join(missing) or 'shards'}): rebuild "
                            f"it with `annrec index build --shards`")
    if backend == "local":
        shards = [LocalShard(f) for f in folders]
    elif backend == "ray":
        from annrec.index.ray_shards import ray_shards

        shards = ray_shards(folders, **ray_options)
    else:
        raise InputError(f"unknown shard backend {backend!r}: use 'local' or 'ray'")
    return ShardedIndex(shards, manifest, path)
