"""Payload filters on item metadata, in the style of Qdrant's filters.

A filter is a JSON object with any of ``must`` (all conditions hold), ``should`` (at least one holds)
and ``must_not`` (none holds); each holds a list of conditions, and a condition is either a nested
filter or one of::

    {"key": "genres", "match": {"value": "Comedy"}}          equal (or, on a list field, contains)
    {"key": "genres", "match": {"any": ["Comedy", "Drama"]}} any of (on a list field: shares one)
    {"key": "year",   "range": {"gte": 2000, "lt": 2010}}    gt / gte / lt / lte on numbers
    {"key": "rating", "is_null": true}                        the key is missing or null

:func:`allowed_ids` evaluates a filter over ``{item id: metadata}`` into the allow-list of a filtered
search (``Index.search(..., allowed_ids=...)``, exact below the small-set threshold).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from annrec.errors import InputError

CLAUSES = ("must", "should", "must_not")
RANGE_OPS = ("gt", "gte", "lt", "lte")

Predicate = Callable[[Mapping[str, Any]], bool]


def parse_filter(spec: Any) -> dict[str, Any]:
    """A filter from a dict or its JSON text (``--filter '{"must": [...]}'``).

    Raises:
        InputError: not JSON, not an object, or an unknown clause.
    """
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError as e:
            raise InputError(f"the filter is not valid JSON ({e}): e.g. "
                             f"'{{\"must\": [{{\"key\": \"genres\", \"match\": {{\"value\": \"Comedy\"}}}}]}}'") from None
    if not isinstance(spec, Mapping) or not spec:
        raise InputError("a filter is a JSON object with 'must', 'should' and/or 'must_not' lists of conditions")
    unknown = sorted(set(spec) - set(CLAUSES))
    if unknown:
        raise InputError(f"unknown filter clause(s) {unknown}: use {', '.join(CLAUSES)}")
    return dict(spec)


def compile_filter(spec: Any, known_keys: set[str] | None = None) -> Predicate:
    """A predicate ``metadata -> bool`` for a filter.

    Args:
        known_keys: metadata keys that exist; a condition on another key is an error (a typo would
            otherwise silently match nothing).

    Raises:
        InputError: unknown clause, operator or key, or a malformed condition; the message names it.
    """
    spec = parse_filter(spec)
    parts: list[tuple[str, list[Predicate]]] = []
    for clause in CLAUSES:
        conds = spec.get(clause)
        if conds is None:
            continue
        if not isinstance(conds, list) or not conds:
            raise InputError(f"filter clause {clause!r} must be a non-empty list of conditions")
        parts.append((clause, [_condition(c, known_keys) for c in conds]))

    def predicate(meta: Mapping[str, Any]) -> bool:
        for clause, preds in parts:
            if clause == "must" and not all(p(meta) for p in preds):
                return False
            if clause == "should" and not any(p(meta) for p in preds):
                return False
            if clause == "must_not" and any(p(meta) for p in preds):
                return False
        return True

    return predicate


def _condition(cond: Any, known_keys: set[str] | None) -> Predicate:
    if not isinstance(cond, Mapping):
        raise InputError(f"a filter condition must be an object; got {cond!r}")
    if set(cond) & set(CLAUSES):
        return compile_filter(cond, known_keys)
    key = cond.get("key")
    if not isinstance(key, str) or not key:
        raise InputError(f"a filter condition needs a 'key' naming a metadata field; got {dict(cond)!r}")
    if known_keys is not None and key not in known_keys:
        raise InputError(f"unknown metadata key {key!r} in the filter: the items have {', '.join(sorted(known_keys))}")
    ops = sorted(set(cond) - {"key"})
    if len(ops) != 1 or ops[0] not in ("match", "range", "is_null"):
        raise InputError(f"condition on {key!r} must have exactly one of 'match', 'range', 'is_null'; got {ops}")
    op = ops[0]
    if op == "match":
        return _match(key, cond["match"])
    if op == "range":
        return _range(key, cond["range"])
    if not isinstance(cond["is_null"], bool):
        raise InputError(f"is_null on {key!r} must be true or false")
    want = cond["is_null"]
    return lambda meta: (meta.get(key) is None) == want


def _match(key: str, m: Any) -> Predicate:
    if not isinstance(m, Mapping) or len(m) != 1 or next(iter(m)) not in ("value", "any"):
        raise InputError(f"match on {key!r} must be {{\"value\": v}} or {{\"any\": [v, ...]}}; got {m!r}")
    if "value" in m:
        v = m["value"]

        def eq(meta):
            x = meta.get(key)
            return v in x if isinstance(x, list) else x == v
        return eq
    values = m["any"]
    if not isinstance(values, list) or not values:
        raise InputError(f"match.any on {key!r} must be a non-empty list")
    wanted = set(values)

    def any_of(meta):
        x = meta.get(key)
        return bool(wanted & set(x)) if isinstance(x, list) else x in wanted
    return any_of


def _range(key: str, r: Any) -> Predicate:
    if not isinstance(r, Mapping) or not r:
        raise InputError(f"range on {key!r} must be an object with gt/gte/lt/lte")
    bad = sorted(set(r) - set(RANGE_OPS))
    if bad:
        raise InputError(f"unknown range operator(s) {bad} on {key!r}: use {', '.join(RANGE_OPS)}")
    for op, v in r.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"range.{op} on {key!r} must be a number; got {v!r}")
    gt, gte, lt, lte = (r.get(o) for o in RANGE_OPS)

    def in_range(meta):
        x = meta.get(key)
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return False
        return ((gt is None or x > gt) and (gte is None or x >= gte) and (lt is None or x < lt)
                and (lte is None or x <= lte))
    return in_range


def allowed_ids(spec: Any, items: Mapping[Any, Mapping[str, Any]]) -> list:
    """The ids of ``items`` (``{id: metadata}``) whose metadata satisfies the filter, in ``items`` order.

    Raises:
        InputError: as :func:`compile_filter` (keys are checked against those present in ``items``).
    """
    keys: set[str] = set()
    for meta in items.values():
        if meta:
            keys.update(meta)
    pred = compile_filter(spec, keys)
    return [i for i, meta in items.items() if pred(meta or {})]
