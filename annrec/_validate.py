"""Input checks shared by the index layer, the recommenders and the service."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from annrec.errors import InputError

METRICS = ("ip", "cosine", "l2")


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is one of ``ip``, ``cosine``, ``l2``; raise :class:`InputError` otherwise."""
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    return metric


def as_matrix(x, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 matrix of shape ``(n, dim)``.

    A 1-d input of length ``dim`` is taken as one row.

    Raises:
        InputError: not numeric, not 1- or 2-d, empty, wrong dimension, or containing NaN/Inf.
    """
    if type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous \
            and x.shape[0] > 0 and (dim is None or x.shape[1] == dim):
        # fast path for the search hot loop: a finite sum means no NaN/Inf (an overflowing sum of finite
        # values falls through to the element-wise check below)
        if np.isfinite(np.add.reduce(x, axis=None)):
            return x
    try:
        a = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be numeric arrays of float32-compatible values ({e})") from None
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2-d array (n, dim); got shape {a.shape}")
    if a.shape[0] == 0:
        raise InputError(f"{name} is empty: pass at least one row")
    if dim is not None and a.shape[1] != dim:
        raise InputError(f"{name} have dimension {a.shape[1]} but the index expects {dim}: "
                         f"encode them with the same model the index was built from")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise InputError(f"{name} contain NaN or Inf (first at row {bad[0]}, column {bad[1]}): "
                         f"remove or repair those rows")
    return np.ascontiguousarray(a)


def check_int(value, name: str, minimum: int = 1, hint: str = "") -> int:
    """Return ``value`` as an int after checking that it is an integer (not a bool) ``>= minimum``.

    Args:
        value: the parameter; name: how the message names it ("hnswlib parameter M");
        minimum: smallest accepted value; hint: appended to the message (e.g. why the bound exists).

    Raises:
        InputError: "NAME must be a positive integer; got VALUE" (``minimum`` 1) or "NAME must be an
            integer >= MINIMUM; got VALUE", followed by ``hint``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InputError(f"{name} must be {want}; got {value!r}{hint}")
    return int(value)


def check_k(k, limit: int | None = None) -> int:
    """Return ``k`` as an int after checking ``1 <= k`` (and ``k <= limit`` when given)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputError(f"k must be an integer >= 1; got {k!r}")
    k = int(k)
    if k <= 0:
        raise InputError(f"k must be >= 1; got {k}")
    if limit is not None and k > limit:
        raise InputError(f"k={k} is larger than the {limit} items available: ask for at most {limit}")
    return k


def normalize_ids(ids: Sequence | np.ndarray, name: str = "ids") -> np.ndarray:
    """Return external ids as an ``int64`` array (all non-negative integers) or an object array of str.

    Raises:
        InputError: mixed types, negative integers, empty strings or duplicates.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a flat list; got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
        if arr.size and arr.min() < 0:
            raise InputError(f"integer {name} must be >= 0 (-1 marks a missing result); got {arr.min()}")
    elif arr.dtype.kind in "US" or arr.dtype == object:
        vals = arr.tolist()
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            return normalize_ids(np.asarray(vals, dtype=np.int64), name)
        if not all(isinstance(v, str) for v in vals):
            raise InputError(f"{name} must be all integers or all strings")
        if any(v == "" for v in vals):
            raise InputError(f"{name} contain an empty string")
        arr = np.asarray(vals, dtype=object)
    else:
        raise InputError(f"{name} must be integers or strings; got dtype {arr.dtype}")
    if len(set(arr.tolist())) != len(arr):
        raise InputError(f"{name} contain duplicates: every item needs a unique id")
    return arr
