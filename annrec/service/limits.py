"""Request checks that depend on the settings or on the index: limits, search parameters, query vectors.

Each raises :class:`~annrec.errors.InputError` (422) with a message naming the setting or the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from annrec._validate import as_matrix
from annrec.errors import InputError
from annrec.service.registry import ServedIndex
from annrec.service.settings import ServiceSettings


def check_limits(settings: ServiceSettings, *, k: int | None = None, batch: int | None = None,
                 ids: dict[str, list | None] | None = None, ef: int | None = None, nprobe: int | None = None,
                 text: str | None = None) -> None:
    """Check a request against ``max_k``, ``max_batch``, ``max_ids`` (each list of ``ids``: name -> list),
    ``max_string_length`` (string ids and ``text``), ``max_ef`` and ``max_nprobe``.

    Raises:
        InputError: a value is above its limit (the message names the setting).
    """
    if k is not None and k > settings.max_k:
        raise InputError(f"k={k} is above this server's limit of {settings.max_k} (max_k setting)")
    if batch is not None and batch > settings.max_batch:
        raise InputError(f"{batch} vectors in one request is above the limit of {settings.max_batch} "
                         f"(max_batch setting): split the batch")
    for name, lst in (ids or {}).items():
        if lst is None:
            continue
        if len(lst) > settings.max_ids:
            raise InputError(f"{name} has {len(lst)} ids, above the limit of {settings.max_ids} (max_ids setting)")
        for v in lst:
            if isinstance(v, str) and len(v) > settings.max_string_length:
                raise InputError(f"an id in {name} is {len(v)} characters long, above the limit of "
                                 f"{settings.max_string_length}")
    if ef is not None and ef > settings.max_ef:
        raise InputError(f"ef={ef} is above this server's limit of {settings.max_ef} (max_ef setting)")
    if nprobe is not None and nprobe > settings.max_nprobe:
        raise InputError(f"nprobe={nprobe} is above this server's limit of {settings.max_nprobe}")
    if text is not None and len(text) > settings.max_string_length:
        raise InputError(f"the query is {len(text)} characters long, above the limit of "
                         f"{settings.max_string_length} (max_string_length setting)")


def query_params(srv: ServedIndex, ef: int | None, nprobe: int | None,
                 k_factor: int | None = None) -> dict[str, int] | None:
    """The HTTP parameters ``ef`` / ``nprobe`` / ``k_factor`` as the backend's search parameters (``{"ef": 64}``
    for hnswlib, ``{"efSearch": 64}`` / ``{"nprobe": 16}`` / ``{"k_factor": 4}`` for FAISS), or ``None`` when none
    is given.

    Raises:
        InputError: a parameter the index does not understand (``nprobe`` on HNSW, ``ef`` on IVF).
    """
    names = srv.query_param_names()
    params = {}
    for api_name, value in (("ef", ef), ("nprobe", nprobe), ("k_factor", k_factor)):
        if value is None:
            continue
        if api_name not in names:
            have = ", ".join(sorted(names)) or "none"
            raise InputError(f"{api_name} does not apply to index {srv.name!r} ({srv.index.backend} "
                             f"{srv.index.params.get('factory_resolved') or srv.index.params.get('factory') or ''}"
                             f"); it understands: {have}")
        params[names[api_name]] = int(value)
    return params or None


def to_queries(vectors: Sequence[Sequence[float]], dim: int) -> np.ndarray:
    """Query vectors (lists of floats) as a float32 ``(n, dim)`` matrix.

    Raises:
        InputError: a vector of another dimension than the index's (the message names it), NaN/Inf.
    """
    for i, v in enumerate(vectors):
        if len(v) != dim:
            raise InputError(f"query vector {i} has dimension {len(v)} but the index expects {dim}: encode it with "
                             f"the same model the index was built from")
    return as_matrix(vectors, dim=dim, name="query vectors")


def allowed_k(srv: ServedIndex, k: int, allowed_ids: list | None, denied_ids: list | None) -> int:
    """``k`` capped at the number of live items an allow-list leaves (less the denied ones), so a filtered
    search answers fewer hits instead of failing; ``0`` when none is left. ``k`` as is without an allow-list."""
    if allowed_ids is None:
        return k
    gone = set(denied_ids or ())
    return min(k, srv.index.count_live([i for i in allowed_ids if i not in gone]))


class ResponseTooLarge(InputError):
    """An answer would pass ``max_response_bytes`` (answered 413)."""


def check_response_size(settings: ServiceSettings | None, rows: list, include_metadata: bool) -> None:
    """Refuse (before serialisation) an answer whose hits would pass ``max_response_bytes``.

    ``rows``: one list of :class:`~annrec.recommend.Recommendation` per query. Hits without metadata cost at
    most ~64 bytes each. The metadata is measured (serialised once more) only when the hits could pass the limit
    with every item at ``max_metadata_bytes`` — the bound written metadata is held to — so an ordinary answer
    pays nothing for the check.

    Raises:
        ResponseTooLarge: the message names the setting and the size.
    """
    limit = settings.max_response_bytes if settings is not None else 32 * 1024 * 1024
    n = sum(len(r) for r in rows)
    size = 256 + 64 * n
    per_item = settings.max_metadata_bytes if settings is not None else 16 * 1024
    if include_metadata and size <= limit < size + n * per_item:
        import orjson

        for r in rows:
            for h in r:
                if h.metadata is not None:
                    size += len(orjson.dumps(h.metadata))
            if size > limit:
                break
    if size > limit:
        raise ResponseTooLarge(f"the answer would hold more than {limit} bytes (max_response_bytes setting): ask "
                               f"for fewer hits (k), fewer query vectors per request, or include_metadata=false")


def check_metadata(settings: ServiceSettings, items) -> None:
    """Refuse upserted items whose metadata passes ``max_metadata_bytes`` (as JSON).

    Raises:
        InputError: the message names the item, its size and the setting.
    """
    import orjson

    for it in items:
        if it.metadata is not None:
            size = len(orjson.dumps(it.metadata))
            if size > settings.max_metadata_bytes:
                raise InputError(f"item {it.id!r} has {size} bytes of metadata, above the limit of "
                                 f"{settings.max_metadata_bytes} (max_metadata_bytes setting): store large "
                                 f"documents elsewhere and keep a reference in the metadata")

