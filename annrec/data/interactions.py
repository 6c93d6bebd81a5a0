"""The :class:`Interactions` type: an event log of (user, item, rating, timestamp) with contiguous ids.

Every loader of :mod:`annrec.data` returns one; every trainer of :mod:`annrec.train` takes one. The
user and item ids of the source ("external ids": MovieLens ``userId`` / ``movieId`` ints, or any
strings) are mapped to contiguous row/column numbers ``0..n_users-1`` / ``0..n_items-1`` ("indexes"),
so that :meth:`Interactions.to_csr` gives the ``(n_users, n_items)`` sparse matrix that
``implicit``-style models consume, and ``user_ids[u]`` / ``item_ids[i]`` map back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from annrec.errors import DataError, InputError, UnknownIdError

__all__ = ["Interactions", "as_external_ids", "factorize_ids"]


def as_external_ids(values: Any, name: str = "ids") -> np.ndarray:
    """Return external ids as ``int64`` when every value is an integer, else an ``object`` array of ``str``.

    Strings that are canonical integers (``"42"``, not ``"042"`` or ``"4.0"``) count as integers, so a
    CSV read as text gets the same id type as one read as numbers.

    Raises:
        DataError: a value is missing (None/NaN).
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise DataError(f"{name} contain a missing value (NaN): every event needs an id")
        if (arr == np.round(arr)).all():
            return arr.astype(np.int64)
        return np.asarray([repr(float(v)) for v in arr], dtype=object)
    s = pd.Series(arr, dtype=object)
    if s.isna().any():
        pos = int(np.flatnonzero(s.isna().to_numpy())[0])
        raise DataError(f"{name} contain a missing value (at position {pos}): every event needs an id")
    s = s.map(lambda v: v if isinstance(v, str) else str(v))
    as_num = pd.to_numeric(s, errors="coerce")
    if not as_num.isna().any() and len(s):
        f = as_num.to_numpy(dtype=np.float64)
        if (f == np.round(f)).all() and np.abs(f).max() < 2**53:
            ints = f.astype(np.int64)
            if (pd.Series(ints).astype(str).to_numpy() == s.to_numpy()).all():
                return ints
    return s.to_numpy(dtype=object)


def factorize_ids(values: Any, name: str = "ids") -> tuple[np.ndarray, np.ndarray]:
    """Map external ids to contiguous indexes.

    Returns:
        ``(idx, uniques)``: ``idx`` int32 of the input's length, ``uniques`` the sorted distinct external
        ids (int64 or object/str, see :func:`as_external_ids`) so that ``uniques[idx] == values``.
    """
    ext = as_external_ids(values, name)
    if ext.dtype == object:
        codes, uniques = pd.factorize(pd.Series(ext, dtype=object), sort=True)
        return codes.astype(np.int32), np.asarray(uniques, dtype=object)
    uniques, idx = np.unique(ext, return_inverse=True)
    return idx.astype(np.int32).reshape(-1), uniques.astype(np.int64)


def _lookup_table(ids: np.ndarray) -> dict:
    return {v: i for i, v in enumerate(ids.tolist())}


@dataclass(frozen=True, eq=False, repr=False)
class Interactions:
    """An interaction log with contiguous integer ids (implicit or explicit feedback).

    Attributes:
        user_idx: int32 ``(n_events,)``, values in ``0..n_users-1``.
        item_idx: int32 ``(n_events,)``, values in ``0..n_items-1``.
        rating: float32 ``(n_events,)``; ``1.0`` when the source has no rating (implicit feedback).
        timestamp: int64 ``(n_events,)``, seconds since the Unix epoch; ``0`` when unknown.
        user_ids: external user ids ``(n_users,)``, int64 or object (str); ``user_ids[u]`` is user ``u``.
        item_ids: external item ids ``(n_items,)``, int64 or object (str).
        name: data set name, e.g. ``"ml-latest-small"``.
        items: optional item metadata indexed by external item id. For MovieLens: ``title`` (str),
            ``genres`` (list[str]), ``tags`` (list[str]), ``year`` (nullable Int64). It may describe
            more items than ``item_ids`` (e.g. movies nobody rated).

    Events keep the order of the source. Several events of the same (user, item) pair are allowed
    (:meth:`to_csr` sums them). Instances are immutable in the sense that every method returns a new
    object; do not write into the arrays.

    Raises:
        DataError: (on construction) arrays of different lengths, indexes out of range, NaN/Inf ratings,
            duplicate external ids.
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    name: str = ""
    items: pd.DataFrame | None = None

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        def put(field: str, value: Any) -> None:
            object.__setattr__(self, field, value)

        put("user_idx", np.ascontiguousarray(np.asarray(self.user_idx).reshape(-1), dtype=np.int32))
        put("item_idx", np.ascontiguousarray(np.asarray(self.item_idx).reshape(-1), dtype=np.int32))
        n = self.user_idx.shape[0]
        put("rating", np.ascontiguousarray(
            np.ones(n, np.float32) if self.rating is None else np.asarray(self.rating).reshape(-1),
            dtype=np.float32))
        put("timestamp", np.ascontiguousarray(
            np.zeros(n, np.int64) if self.timestamp is None else np.asarray(self.timestamp).reshape(-1),
            dtype=np.int64))
        for field in ("user_ids", "item_ids"):
            ids = np.asarray(getattr(self, field))
            if ids.dtype.kind in "iu":
                ids = ids.astype(np.int64, copy=False)
            elif ids.dtype != object:
                ids = ids.astype(object)
            put(field, ids.reshape(-1))
        for field in ("user_idx", "item_idx", "rating", "timestamp", "user_ids", "item_ids"):
            a = getattr(self, field)
            if not a.flags.writeable:  # pandas (copy-on-write) hands out read-only views; torch warns on them
                put(field, a.copy())
        lengths = {k: getattr(self, k).shape[0] for k in ("user_idx", "item_idx", "rating", "timestamp")}
        if len(set(lengths.values())) != 1:
            raise DataError(f"Interactions arrays must all have n_events entries; got lengths {lengths}")
        for idx, ids, what in ((self.user_idx, self.user_ids, "user"), (self.item_idx, self.item_ids, "item")):
            if n and (idx.min() < 0 or idx.max() >= ids.shape[0]):
                raise DataError(f"{what}_idx must lie in 0..{ids.shape[0] - 1} (one entry of {what}_ids "
                                f"per {what}); got values {idx.min()}..{idx.max()}")
            if len(pd.unique(pd.Series(ids, dtype=ids.dtype))) != ids.shape[0]:
                raise DataError(f"{what}_ids contain duplicates: every {what} needs a unique external id")
        if n and not np.isfinite(self.rating).all():
            bad = int(np.flatnonzero(~np.isfinite(self.rating))[0])
            raise DataError(f"rating contains NaN or Inf (first at event {bad}): repair or drop those events")

    @classmethod
    def from_arrays(cls, users: Any, items: Any, rating: Any = None, timestamp: Any = None, *,
                    name: str = "", items_meta: pd.DataFrame | None = None) -> Interactions:
        """Build from per-event external ids (any ints or strings); ids are sorted and numbered from 0.

        Args:
            users, items: external ids, one per event.
            rating: float ratings (default ``1.0``: implicit feedback).
            timestamp: int seconds since the epoch (default ``0``).
        """
        u_idx, u_ids = factorize_ids(users, "user ids")
        i_idx, i_ids = factorize_ids(items, "item ids")
        if u_idx.shape != i_idx.shape:
            raise DataError(f"users and items must have one entry per event; got {u_idx.shape[0]} "
                            f"and {i_idx.shape[0]}")
        return cls(u_idx, i_idx, rating, timestamp, u_ids, i_ids, name=name, items=items_meta)

    def _replace(self, **changes: Any) -> Interactions:
        fields = dict(user_idx=self.user_idx, item_idx=self.item_idx, rating=self.rating,
                      timestamp=self.timestamp, user_ids=self.user_ids, item_ids=self.item_ids,
                      name=self.name, items=self.items)
        fields.update(changes)
        return Interactions(**fields)

    # ------------------------------------------------------------------ sizes
    @property
    def n_users(self) -> int:
        """Number of users (length of ``user_ids``; some may have no events after :meth:`subset`)."""
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        """Number of items (length of ``item_ids``)."""
        return int(self.item_ids.shape[0])

    @property
    def n_events(self) -> int:
        """Number of events (rows of the log)."""
        return int(self.user_idx.shape[0])

    def __len__(self) -> int:
        return self.n_events

    def __repr__(self) -> str:
        return (f"Interactions(name={self.name!r}, n_users={self.n_users}, n_items={self.n_items}, "
                f"n_events={self.n_events})")

    # ------------------------------------------------------------------ views
    def to_csr(self, binary: bool = False) -> sp.csr_matrix:
        """The user × item matrix.

        Returns:
            ``scipy.sparse.csr_matrix`` float32 of shape ``(n_users, n_items)`` with sorted indices.
            Repeated (user, item) events are summed; with ``binary=True`` every stored entry is ``1.0``
            (implicit feedback, as ``implicit`` models expect).
        """
        m = sp.csr_matrix((self.rating.astype(np.float32), (self.user_idx, self.item_idx)),
                          shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        m.sort_indices()
        if binary:
            m.data[:] = 1.0
        return m

    def subset(self, mask: np.ndarray) -> Interactions:
        """Keep some events, in their original order, in THE SAME id space (n_users/n_items unchanged).

        Args:
            mask: bool ``(n_events,)`` or integer event positions.

        Raises:
            InputError: a bool mask of the wrong length.
        """
        mask = np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (self.n_events,):
                raise InputError(f"subset mask must be bool of shape ({self.n_events},); got {mask.shape}")
        elif mask.dtype.kind not in "iu" and mask.size:
            raise InputError(f"subset takes a bool mask or integer event positions; got dtype {mask.dtype}")
        else:
            mask = mask.astype(np.int64)
        return self._replace(user_idx=self.user_idx[mask], item_idx=self.item_idx[mask],
                             rating=self.rating[mask], timestamp=self.timestamp[mask])

    @cached_property
    def _user_lookup(self) -> dict:
        return _lookup_table(self.user_ids)

    @cached_property
    def _item_lookup(self) -> dict:
        return _lookup_table(self.item_ids)

    def _index(self, external_id: Any, ids: np.ndarray, lookup: dict, what: str) -> int:
        key = external_id
        if isinstance(key, np.generic):
            key = key.item()
        if ids.dtype.kind == "i":
            if isinstance(key, str):
                s = key.strip()
                try:
                    key = int(s)
                except ValueError:
                    key = None
            elif isinstance(key, bool) or not isinstance(key, int):
                if isinstance(key, float) and key.is_integer():
                    key = int(key)
                else:
                    key = None
        elif not isinstance(key, str):
            key = str(key)
        if key is not None and key in lookup:
            return int(lookup[key])
        if ids.shape[0] == 0:
            hint = "the data set has none"
        else:
            kind = "integers" if ids.dtype.kind == "i" else "strings"
            hint = f"ids are {kind}, e.g. {', '.join(repr(v) for v in ids[:3].tolist())}"
            if ids.dtype.kind == "i":
                hint += f"; range {ids.min()}..{ids.max()}"
        label = f" {self.name}" if self.name else ""
        raise UnknownIdError(f"unknown {what} id {external_id!r}: not among the {ids.shape[0]} {what}s of "
                             f"data set{label} ({hint}); use an id from the training data")

    def user_index(self, external_id: Any) -> int:
        """Row number of an external user id (``"42"`` is accepted for integer ids).

        Raises:
            UnknownIdError: the id is not in ``user_ids``.
        """
        return self._index(external_id, self.user_ids, self._user_lookup, "user")

    def item_index(self, external_id: Any) -> int:
        """Column number of an external item id (``"42"`` is accepted for integer ids).

        Raises:
            UnknownIdError: the id is not in ``item_ids``.
        """
        return self._index(external_id, self.item_ids, self._item_lookup, "item")

    def _order(self) -> np.ndarray:
        """Event positions sorted by (user_idx, timestamp, original position)."""
        return np.lexsort((np.arange(self.n_events), self.timestamp, self.user_idx))

    def sequences(self) -> list[np.ndarray]:
        """Per user (list position = user_idx) the int32 item_idx array in time order.

        Ties in timestamp keep the original event order. Users without events get an empty array.
        """
        order = self._order()
        counts = np.bincount(self.user_idx, minlength=self.n_users)
        items = self.item_idx[order]
        return np.split(items, np.cumsum(counts)[:-1]) if self.n_users else []

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the event arrays and the external ids (stable across runs and machines).

        Two Interactions with equal fingerprints have the same events in the same order and the same id
        mapping; ``name`` and ``items`` metadata are not included.
        """
        h = hashlib.sha256()
        h.update(b"annrec.interactions.v1")
        for a in (self.user_idx, self.item_idx, self.rating, self.timestamp):
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            h.update(f"{a.dtype.str}:{a.shape[0]};".encode())
            h.update(a.tobytes())
        for ids in (self.user_ids, self.item_ids):
            if ids.dtype == object:
                h.update(f"str:{ids.shape[0]};".encode())
                for v in ids.tolist():
                    b = str(v).encode("utf-8")
                    h.update(len(b).to_bytes(8, "little") + b)
            else:
                a = np.ascontiguousarray(ids, dtype="<i8")
                h.update(f"int64:{a.shape[0]};".encode())
                h.update(a.tobytes())
        return h.hexdigest()

    def item_titles(self) -> dict:
        """External item id -> title, from ``items`` (empty dict when there is no title metadata)."""
        if self.items is None or "title" not in self.items.columns:
            return {}
        titles = self.items["title"]
        keys = self.items.index.tolist()
        return {k: (str(t) if t is not None and t == t else "") for k, t in zip(keys, titles.tolist())}

    def filter(self, min_user_events: int = 1, min_item_events: int = 1) -> Interactions:
        """Drop users and items with too few events, repeatedly until both minimums hold (a k-core).

        The result is re-indexed: only users/items with events remain, numbered ``0..n-1`` in the order
        of the original indexes.

        Raises:
            InputError: a minimum below 1.
            DataError: nothing is left.
        """
        for v, nm in ((min_user_events, "min_user_events"), (min_item_events, "min_item_events")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{nm} must be an integer >= 1; got {v!r}")
        keep = np.ones(self.n_events, dtype=bool)
        while True:
            uc = np.bincount(self.user_idx[keep], minlength=self.n_users)
            ic = np.bincount(self.item_idx[keep], minlength=self.n_items)
            new = keep & (uc[self.user_idx] >= min_user_events) & (ic[self.item_idx] >= min_item_events)
            if new.sum() == keep.sum():
                break
            keep = new
        if not keep.any():
            raise DataError(f"filter(min_user_events={min_user_events}, min_item_events={min_item_events}) "
                            f"leaves no events of {self.name or 'the data'} ({self.n_events} events): "
                            f"lower the minimums")
        u_used = np.unique(self.user_idx[keep])
        i_used = np.unique(self.item_idx[keep])
        u_map = np.full(self.n_users, -1, np.int64)
        u_map[u_used] = np.arange(u_used.size)
        i_map = np.full(self.n_items, -1, np.int64)
        i_map[i_used] = np.arange(i_used.size)
        return self._replace(user_idx=u_map[self.user_idx[keep]], item_idx=i_map[self.item_idx[keep]],
                             rating=self.rating[keep], timestamp=self.timestamp[keep],
                             user_ids=self.user_ids[u_used], item_ids=self.item_ids[i_used])
