"""Algorithm definitions in YAML, in the spirit of ANN-Benchmarks' ``config.yml``.

::

    algorithms:
      hnsw(annrec):                 # label: the name in results, plots and tables
        algorithm: annrec-hnswlib   # adapter (see annrec.bench.algorithms.ADAPTERS); default: the label
        build:                      # build arguments; lists are swept (Cartesian product)
          M: [12, 24]
          ef_construction: 200
        query:                      # query arguments, swept the same way for every build
          ef: [10, 20, 40, 80]
        modes: [single, batch]      # optional: restrict the modes of this entry
        runs: 1                     # optional: timed passes (best of N) for this entry
        disabled: false             # optional

``build`` and ``query`` may also be lists of mappings (each expanded the same way), like
ANN-Benchmarks' ``arg_groups``. Unknown algorithms, parameters or keys raise an
:class:`~annrec.errors.InputError` that names the valid ones.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from annrec._validate import check_int
from annrec.bench.algorithms import get_adapter
from annrec.errors import InputError

MODES = ("single", "batch")
_ENTRY_KEYS = ("algorithm", "build", "query", "modes", "runs", "disabled", "description")


@dataclass
class Definition:
    """One build configuration of one algorithm entry and the query arguments to sweep on it.

    Attributes:
        label: the entry's name (results, plots, tables group by it).
        algorithm: adapter name.
        build_args: one point of the build grid.
        query_args: the query-argument points to run on the built index (``[{}]`` when none).
        modes: modes to run (``single`` and/or ``batch``).
        runs: timed passes (best of N) for this entry, overriding the run's default (``None``).
    """

    label: str
    algorithm: str
    build_args: dict[str, Any]
    query_args: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    modes: tuple[str, ...] = MODES
    runs: int | None = None


def _grid(spec: Any, where: str) -> list[dict[str, Any]]:
    """Expand a mapping of name -> value|list (or a list of such mappings) into parameter points."""
    if spec is None:
        return [{}]
    groups = spec if isinstance(spec, list) else [spec]
    points: list[dict[str, Any]] = []
    for g in groups:
        if not isinstance(g, dict):
            raise InputError(f"{where} must be a mapping of parameter: value or [values] (or a list of such "
                             f"mappings); got {g!r}")
        names = list(g)
        values = [v if isinstance(v, list) else [v] for v in g.values()]
        for name, vals in zip(names, values):
            if not vals:
                raise InputError(f"{where}: parameter {name} has an empty list of values")
        points.extend(dict(zip(names, combo)) for combo in itertools.product(*values))
    return points or [{}]


def _check_params(points: list[dict[str, Any]], specs: dict, algorithm: str, kind: str, label: str) -> None:
    for p in points:
        for name, value in p.items():
            if name not in specs:
                valid = ", ".join(specs) if specs else "none"
                raise InputError(f"{label}: unknown {kind} parameter {name!r} for algorithm {algorithm!r}: "
                                 f"valid {kind} parameters are {valid}")
            specs[name].check(f"{label} ({algorithm})", name, value)


def parse_definitions(doc: Any, source: str = "<definitions>", *, only: list[str] | None = None,
                      include_disabled: bool = False) -> list[Definition]:
    """Validate and expand a parsed YAML document into :class:`Definition` objects.

    Args:
        doc: the parsed YAML (a mapping with an ``algorithms`` mapping).
        only: keep just these labels or algorithm names (``None``: all).

    Raises:
        InputError: a malformed document, unknown keys, algorithms or parameters, bad modes, or
            ``only`` naming nothing in the file.
    """
    if not isinstance(doc, dict) or "algorithms" not in doc:
        raise InputError(f"{source}: expected a mapping with a top-level 'algorithms:' key (see bench/README.md)")
    extra = set(doc) - {"algorithms", "description"}
    if extra:
        raise InputError(f"{source}: unknown top-level key(s) {sorted(extra)}: use 'algorithms' (and 'description')")
    entries = doc["algorithms"]
    if not isinstance(entries, dict) or not entries:
        raise InputError(f"{source}: 'algorithms' must be a non-empty mapping of label -> definition")
    out: list[Definition] = []
    seen: set[str] = set()
    for label, entry in entries.items():
        label = str(label)
        entry = entry or {}
        if not isinstance(entry, dict):
            raise InputError(f"{source}: definition of {label!r} must be a mapping with keys {', '.join(_ENTRY_KEYS)}")
        bad = set(entry) - set(_ENTRY_KEYS)
        if bad:
            raise InputError(f"{source}: {label}: unknown key(s) {sorted(bad)}: valid keys are {', '.join(_ENTRY_KEYS)}")
        algorithm = str(entry.get("algorithm", label))
        cls = get_adapter(algorithm)  # raises with the valid names
        modes = entry.get("modes", list(MODES))
        modes = [modes] if isinstance(modes, str) else modes
        if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
            raise InputError(f"{source}: {label}: modes must be a list drawn from {', '.join(MODES)}; got {modes!r}")
        runs = entry.get("runs")
        if runs is not None:
            check_int(runs, f"{source}: {label}: runs")
        builds = _grid(entry.get("build"), f"{source}: {label}: build")
        queries = _grid(entry.get("query"), f"{source}: {label}: query")
        _check_params(builds, cls.build_params, algorithm, "build", label)
        _check_params(queries, cls.query_params, algorithm, "query", label)
        if entry.get("disabled") and not include_disabled:
            continue
        seen.update((label, algorithm))
        if only and label not in only and algorithm not in only:
            continue
        out.extend(Definition(label, algorithm, b, queries, tuple(m for m in MODES if m in modes), runs)
                   for b in builds)
    if only:
        missing = [o for o in only if o not in seen]
        if missing:
            raise InputError(f"{source}: no algorithm labelled or named {', '.join(missing)}; the file defines "
                             f"{', '.join(map(str, entries))}")
    return out


def load_definitions(path: str | os.PathLike, *, only: list[str] | None = None,
                     include_disabled: bool = False) -> list[Definition]:
    """Read and validate a YAML definitions file (see the module docstring for the format).

    Raises:
        DataNotFoundError: no such file. InputError: invalid YAML or definitions.
    """
    from annrec.index.spec import read_yaml

    doc = read_yaml(path, "definitions file", "see bench/*.yaml for examples")
    return parse_definitions(doc, str(path), only=only, include_disabled=include_disabled)
