"""The one check that an index belongs to an Embeddings artifact (dimension, metric, count, data hash)."""

from __future__ import annotations

import numpy as np

from annrec.embeddings import Embeddings
from annrec.errors import InputError
from annrec.index import Index


def source_data_hash(source: dict) -> str | None:
    """The data hash an index records for the Embeddings it was built from (``data_hash``; indexes
    written by annrec 0.1 call it ``fingerprint``)."""
    return source.get("data_hash") or source.get("fingerprint")


def check_pairing(embeddings: Embeddings, index: Index, *, strict: bool = False) -> None:
    """Raise unless ``index`` was built from (a compatible version of) ``embeddings``.

    Checked: the vector dimension; the metric (an index may use ``cosine`` over ``ip`` embeddings only
    when it was built so on purpose, which its ``source.embeddings_metric`` records); the item count the
    index recorded at build time (``source.embeddings_count``, when present) against ``len(embeddings)``;
    the data hash recorded at build time against the embeddings manifest's ``data_hash``, when both have one.
    Later upserts and deletes change ``len(index)`` and are fine, unless ``strict`` (an index read from
    disk for the command line): then the index must hold exactly the embeddings' items, and eight items
    spread over the catalogue must have the same stored vector in both.

    Raises:
        InputError: the two do not belong together; the message says what differs and how to fix it.
    """
    fix = "rebuild the index from these embeddings (`annrec index build --embeddings ...`)"
    if index.dim != embeddings.dim:
        raise InputError(f"the index has dimension {index.dim} but the embeddings have {embeddings.dim}: {fix}")
    src = index.source or {}
    built_over = src.get("embeddings_metric", index.metric)
    if index.metric != embeddings.metric and built_over != embeddings.metric:
        raise InputError(f"the index uses metric {index.metric!r} but the embeddings {embeddings.metric!r}: {fix}")
    count = src.get("embeddings_count")
    if count is not None and int(count) != len(embeddings):
        raise InputError(f"the index was built from embeddings of {count} items but these have {len(embeddings)}: "
                         f"{fix}")
    want = source_data_hash(src)
    have = (embeddings.manifest or {}).get("data_hash")
    if want and have and want != have:
        raise InputError(f"the index was built from embeddings with data hash {str(want)[:12]}… but these have "
                         f"{str(have)[:12]}… (retrained on other data): {fix}")
    if strict:
        _check_same_items(embeddings, index, fix)


def _check_same_items(embeddings: Embeddings, index: Index, fix: str) -> None:
    if len(index) != len(embeddings):
        raise InputError(f"the index holds {len(index):,} items but the embeddings {len(embeddings):,}: {fix}")
    probe = embeddings.ids[np.linspace(0, len(embeddings) - 1, num=min(8, len(embeddings))).astype(int)]
    for item in probe.tolist():
        if item not in index:
            raise InputError(f"item {item!r} of the embeddings is not in the index: {fix}")
        v = embeddings.vectors[embeddings.row_of(item)]
        if index.metric == "cosine":
            v = v / max(float(np.linalg.norm(v)), 1e-30)
        if not np.allclose(index.get_vector(item), v, rtol=1e-4, atol=1e-5):
            raise InputError(f"the index stores another vector for item {item!r} than the embeddings: {fix}")
