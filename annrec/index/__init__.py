"""Vector indexes: one interface (:class:`Index`), several backends (FAISS, hnswlib; usearch, pynndescent and
ScaNN where installed).

>>> idx = build_index(vectors, ids, metric="ip", backend="hnswlib", M=16, ef_construction=200)
>>> ids, scores = idx.search(queries, k=10, params={"ef": 64})
>>> idx.save("index/built/movies-hnsw"); idx = load_index("index/built/movies-hnsw")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from annrec.embeddings import read_manifest
from annrec.errors import ArtifactError, InputError
from annrec.index.base import KIND, Index
from annrec.index.filtered import DenyList
from annrec.index.faiss_backend import FaissIndex, gpu_available, suggest_nlist, suggest_pq_m
from annrec.index.hnsw_backend import HnswIndex
from annrec.index.pynndescent_backend import PynndescentIndex
from annrec.index.scann_backend import ScannIndex
from annrec.index.usearch_backend import UsearchIndex

BACKENDS: dict[str, type[Index]] = {"faiss": FaissIndex, "hnswlib": HnswIndex, "usearch": UsearchIndex,
                                   "pynndescent": PynndescentIndex, "scann": ScannIndex}


def build_index(vectors, ids, metric: str, backend: str = "hnswlib", **params: Any) -> Index:
    """Build an index of ``backend`` over ``vectors`` ``(n, dim)`` with external ``ids`` ``(n,)``.

    Raises:
        InputError: unknown backend or parameters, bad vectors or ids.
    """
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise InputError(f"unknown index backend {backend!r}: use one of {', '.join(BACKENDS)}") from None
    return cls.build(vectors, ids, metric, **params)


def load_index(path: str | os.PathLike, backend: str = "local", **shard_options: Any):
    """Load an index folder, whatever its backend; a sharded folder (``annrec index build --shards``) opens as
    a :class:`~annrec.index.sharded.ShardedIndex` with its shards in this process (``backend="local"``) or
    in Ray actors (``backend="ray"``).

    Raises:
        DataNotFoundError: no such folder. ArtifactError: not an index / unknown backend / newer format.
    """
    import json

    from annrec.index.sharded import SHARDED_KIND, load_sharded

    try:
        kind = json.loads((Path(path) / "manifest.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind == SHARDED_KIND:
        return load_sharded(path, backend, **shard_options)
    from annrec.index.storage import FORMAT_VERSION as VERSIONED, snapshot_folder

    read_manifest(Path(path), KIND, max_version=VERSIONED)
    manifest = read_manifest(snapshot_folder(path), KIND)
    index_backend = manifest.get("backend")
    if index_backend not in BACKENDS:
        raise ArtifactError(f"{path} was built with backend {index_backend!r}, which this annrec does not have "
                            f"({', '.join(BACKENDS)})")
    return BACKENDS[index_backend].load(path)


__all__ = ["Index", "DenyList", "FaissIndex", "HnswIndex", "UsearchIndex", "PynndescentIndex", "ScannIndex",
           "BACKENDS", "build_index", "load_index", "gpu_available", "suggest_nlist", "suggest_pq_m"]
