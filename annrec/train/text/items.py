"""Item metadata to one deterministic text per item."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from annrec.errors import DataError, InputError


DEFAULT_FIELDS = ("title", "genres", "tags")
DEFAULT_MAX_LIST_VALUES = 20

# Placeholder values of list fields that carry no information (MovieLens writes "(no genres listed)").
_PLACEHOLDERS = frozenset({"(no genres listed)"})


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return v is pd.NA or v is pd.NaT


def _clean(s: Any) -> str:
    return " ".join(str(s).split())


def _list_values(v: Any, max_values: int | None) -> list[str]:
    """Distinct values (case-insensitive), most frequent first, ties in input order (first spelling kept)."""
    counts: dict[str, int] = {}
    shown: dict[str, str] = {}
    for x in v:
        if _is_missing(x):
            continue
        s = _clean(x)
        if not s or s.lower() in _PLACEHOLDERS:
            continue
        k = s.casefold()
        counts[k] = counts.get(k, 0) + 1
        shown.setdefault(k, s)
    order = sorted(counts, key=lambda k: -counts[k])  # stable: ties keep their first-appearance order
    if max_values is not None:
        order = order[:max_values]
    return [shown[k] for k in order]


def format_item_text(record: Mapping[str, Any], fields: Sequence[str] = DEFAULT_FIELDS,
                     max_list_values: int | None = DEFAULT_MAX_LIST_VALUES) -> str:
    """One item's text from its fields, deterministically.

    Rules: fields appear in the order given, joined by ``". "``; the ``title`` field is written bare and
    every other field as ``"<Field>: <value>"``; list values (genres, tags) are de-duplicated
    case-insensitively (first spelling kept), ordered by how often they occur with ties in input order
    (:func:`annrec.data.load_movielens` lists the most-applied tags first), capped at
    ``max_list_values`` and joined by ``", "``; whitespace is collapsed; missing
    values, empty strings and the MovieLens placeholder ``"(no genres listed)"`` are left out.
    Example: ``"Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun"``.

    Returns:
        The text, ``""`` when every field is empty.
    """
    parts = []
    for f in fields:
        v = record.get(f)
        if isinstance(v, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
            vals = _list_values(list(v), max_list_values)
            text = ", ".join(vals)
        elif _is_missing(v):
            text = ""
        else:
            text = _clean(v)
            if text.lower() in _PLACEHOLDERS:
                text = ""
        if not text:
            continue
        parts.append(text if f == "title" else f"{f.replace('_', ' ').capitalize()}: {text}")
    return ". ".join(parts)


def _parse_fields(fields: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str):
        fields = [f for f in (x.strip() for x in fields.split(",")) if f]
    fields = tuple(fields)
    if not fields or not all(isinstance(f, str) and f for f in fields):
        raise InputError(f"fields must name at least one item column, e.g. 'title,genres,tags'; got {fields!r}")
    if len(set(fields)) != len(fields):
        raise InputError(f"fields contain duplicates: {fields!r}")
    return fields


def build_item_texts(items: pd.DataFrame, fields: str | Sequence[str] = DEFAULT_FIELDS,
                     max_list_values: int | None = DEFAULT_MAX_LIST_VALUES) -> pd.Series:
    """The text of every item (see :func:`format_item_text`).

    Args:
        items: item metadata indexed by external item id (MovieLens: ``title`` str, ``genres`` and
            ``tags`` list[str]).
        fields: column names (or ``"title,genres,tags"``).

    Returns:
        A str Series indexed like ``items``; ``""`` for items whose chosen fields are all empty.

    Raises:
        InputError: no fields, duplicate fields, or a field that is not a column (the message lists them).
        DataError: no items.
    """
    fields = _parse_fields(fields)
    if not isinstance(items, pd.DataFrame):
        raise InputError(f"items must be a pandas DataFrame indexed by item id; got {type(items).__name__}")
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise InputError(f"field(s) {', '.join(missing)} are not item columns; available: "
                         f"{', '.join(map(str, items.columns))}: pick --fields among those")
    if len(items) == 0:
        raise DataError("there are no items to encode: the item table is empty")
    if max_list_values is not None and (not isinstance(max_list_values, (int, np.integer)) or max_list_values < 1):
        raise InputError(f"max_list_values must be an integer >= 1 or None; got {max_list_values!r}")
    cols = [items[f].tolist() for f in fields]
    texts = [format_item_text(dict(zip(fields, row)), fields, max_list_values) for row in zip(*cols)]
    return pd.Series(texts, index=items.index, dtype=object, name="text")


def _items_of(data: Any) -> tuple[pd.DataFrame, str]:
    """(item DataFrame, data set name) from Interactions, a DataFrame or a list of dict records."""
    if isinstance(data, pd.DataFrame):
        return data, str(data.attrs.get("name", ""))
    items = getattr(data, "items", None)
    if isinstance(items, pd.DataFrame):
        return items, str(getattr(data, "name", "") or "")
    if hasattr(data, "items") and items is None:
        raise DataError("these interactions carry no item metadata (items is None): load a data set with item "
                        "titles (e.g. MovieLens) or pass an item DataFrame to fit()")
    raise InputError(f"fit() takes Interactions with .items or a DataFrame of item metadata indexed by item id; "
                     f"got {type(data).__name__}")


def _texts_hash(ids: Sequence[Any], texts: Sequence[str]) -> str:
    h = hashlib.sha256(b"annrec.text.items.v1")
    for i, t in zip(ids, texts):
        b = f"{i}\0{t}".encode()
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ trainer
