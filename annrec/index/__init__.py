"""Vector indexes: one interface (:class:`Index`), two backends (FAISS, hnswlib).

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
from annrec.index.faiss_backend import FaissIndex, gpu_available, suggest_nlist, suggest_pq_m
from annrec.index.hnsw_backend import HnswIndex

BACKENDS: dict[str, type[Index]] = {"faiss": FaissIndex, "hnswlib": HnswIndex}


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


def load_index(path: str | os.PathLike) -> Index:
    """Load an index folder, whatever its backend.

    Raises:
        DataNotFoundError: no such folder. ArtifactError: not an index / unknown backend / newer format.
    """
    manifest = read_manifest(Path(path), KIND)
    backend = manifest.get("backend")
    if backend not in BACKENDS:
        raise ArtifactError(f"{path} was built with backend {backend!r}, which this annrec does not have "
                            f"({', '.join(BACKENDS)})")
    return BACKENDS[backend].load(path)


__all__ = ["Index", "FaissIndex", "HnswIndex", "BACKENDS", "build_index", "load_index", "gpu_available",
           "suggest_nlist", "suggest_pq_m"]
