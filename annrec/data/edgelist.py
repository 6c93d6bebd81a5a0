"""Edge-list files (CSV / TSV / whitespace) -> :class:`~annrec.data.graph.Graph`.

:func:`read_edge_list` is a pipeline of small steps: find the first data line, pick the separator and
whether there is a header, read the table, pick the source / target / weight columns, parse the weights,
turn the endpoints into ints where they all are, and build the graph (:meth:`Graph.from_edges`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from annrec.data.graph import Graph, _all_int, _is_number, _missing
from annrec.errors import DataError, DataNotFoundError

__all__ = ["read_edge_list", "SOURCE_COLUMNS", "TARGET_COLUMNS", "WEIGHT_COLUMNS"]

# Column names recognised in an edge list header (case-insensitive), in order of preference.
SOURCE_COLUMNS = ("source", "src", "from", "u", "node1", "head", "user", "userid")
TARGET_COLUMNS = ("target", "dst", "to", "v", "node2", "tail", "item", "itemid", "movieid")
WEIGHT_COLUMNS = ("weight", "w", "count", "rating", "value")


def read_edge_list(path: str | os.PathLike, *, source: str | int | None = None, target: str | int | None = None,
                   weight: str | int | None = None, directed: bool = False, sep: str | None = None,
                   header: bool | None = None, nodes=None, self_loops: bool = False) -> Graph:
    """Read an edge list file (CSV or TSV) into a :class:`Graph`.

    The separator is a tab for ``.tsv``/``.tab``/``.txt``-with-tabs files, a comma for ``.csv``, otherwise
    sniffed from the first line (tab, comma, semicolon or whitespace). A header is detected when the
    first line's first two fields are not both numbers (override with ``header``). Columns:

    * with a header: ``source``/``target``/``weight`` as named, or found among the usual names
      (source: ``source, src, from, u, node1, ...``; target: ``target, dst, to, v, node2, ...``; weight:
      ``weight, w, count, rating, value``), else the third column when there are exactly three; otherwise
      the graph is unweighted;
    * without a header: column 0 = source, 1 = target, 2 (if present) = weight; ints select columns.

    Lines starting with ``#`` are comments. Empty endpoints are dangling edges (dropped, counted).

    Raises:
        DataNotFoundError: no such file.
        DataError: missing columns (says which columns were found), non-numeric weights (says the first
            bad line), an empty file, or no edges left.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no edge list file at {path}: check the path")
    first = _first_line(path)
    if sep is None:
        sep = _sniff_sep(path, first)
    if header is None:
        header = _has_header(first, sep, source, target, weight)
    df = _read_table(path, sep, header)
    scol = _pick_column(df, source, SOURCE_COLUMNS, 0, "source", path, header)
    tcol = _pick_column(df, target, TARGET_COLUMNS, 1, "target", path, header)
    wcol = _weight_column(df, weight, scol, tcol, path, header)
    if len(df) == 0:
        raise DataError(f"edge list {path} has a header but no edges: add lines 'source{sep}target'")
    s, t = _endpoints(df[scol]), _endpoints(df[tcol])
    w = _weights(df[wcol], wcol, path, header) if wcol is not None and wcol not in (scol, tcol) else None
    s, t = _as_int_ids(s, t)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = Graph.from_edges(s, t, w, directed=directed, nodes=nodes, self_loops=self_loops, kind="edgelist",
                             meta={"dataset": str(path), "weighted": w is not None})
    for c in caught:
        warnings.warn(f"{path}: {c.message}", stacklevel=2)
    g.meta["fingerprint"] = g.fingerprint()
    g.check_has_edges()
    return g


def _first_line(path: Path) -> str:
    """The first line that is neither blank nor a ``#`` comment. Raises DataError for an empty file."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip() and not line.lstrip().startswith("#"):
                return line.rstrip("\n\r")
    raise DataError(f"edge list {path} is empty: it needs one edge per line (source, target[, weight])")


def _has_header(first: str, sep: str, source, target, weight) -> bool:
    """A header is a first line whose first two fields are not both numbers and that looks like names."""
    fields = first.split(sep) if sep != r"\s+" else first.split()
    fields = [f.strip().strip('"').strip("'") for f in fields]
    header = not (len(fields) >= 2 and _is_number(fields[0]) and _is_number(fields[1]))
    # ids can be strings: a header row is one whose names match the usual column names
    return header and _looks_like_header(fields, source, target, weight)


def _read_table(path: Path, sep: str, header: bool):
    """The file as a str DataFrame (comments and blank lines skipped). Raises DataError when unparsable."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep=sep, header=0 if header else None, comment="#", dtype=str,
                         skipinitialspace=True, engine="python" if sep == r"\s+" else "c",
                         keep_default_na=False, skip_blank_lines=True)
    except pd.errors.ParserError as e:
        raise DataError(f"could not parse edge list {path} ({e}): use one edge per line with the same "
                        f"number of columns, separated by {sep!r}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"edge list {path} is empty: it needs one edge per line (source, target[, weight])") \
            from None
    if header:
        df.columns = [str(c).strip() for c in df.columns]
    return df


def _weight_column(df, weight, scol, tcol, path: Path, header: bool):
    """The weight column: as asked, else a usual weight name, else the third of exactly three columns
    (with a header) or column 2 (without); ``None`` for an unweighted graph."""
    if weight is not None:
        return _pick_column(df, weight, WEIGHT_COLUMNS, 2, "weight", path, header)
    if not header:
        return df.columns[2] if df.shape[1] >= 3 else None
    lower = {str(c).lower(): c for c in df.columns}
    wcol = next((lower[c] for c in WEIGHT_COLUMNS if c in lower), None)
    if wcol is None and df.shape[1] == 3:
        wcol = next(c for c in df.columns if c not in (scol, tcol))  # the one other column
    return wcol


def _endpoints(col) -> np.ndarray:
    """Stripped endpoint strings as an object array, ``None`` for empty cells (dangling edges)."""
    a = col.str.strip().to_numpy(dtype=object)
    a[a == ""] = None
    return a


def _weights(raw_col, wcol, path: Path, header: bool) -> np.ndarray:
    """float64 weights; raises DataError naming the first non-numeric or negative value and its line."""
    import pandas as pd

    raw = raw_col.str.strip()
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() | ~np.isfinite(num.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        lineno = row + (2 if header else 1)
        raise DataError(f"edge list {path}: weight column {wcol!r} has a non-numeric value "
                        f"{raw.iloc[row]!r} (data row {row + 1}, about line {lineno}): weights must "
                        f"be numbers; fix the value or drop the weight column for an unweighted graph")
    w = num.to_numpy(dtype=np.float64)
    if (w < 0).any():
        row = int(np.flatnonzero(w < 0)[0])
        raise DataError(f"edge list {path}: negative weight {w[row]} at data row {row + 1}: weights "
                        f"must be >= 0")
    return w


def _as_int_ids(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 endpoints when every one is an integer and none is missing, else the (object) values."""
    s = np.asarray([_maybe_int(v) for v in s], dtype=object)
    t = np.asarray([_maybe_int(v) for v in t], dtype=object)
    ms, mt = _missing(s), _missing(t)
    if _all_int(s[~ms]) and _all_int(t[~mt]) and not ms.any() and not mt.any():
        return s.astype(np.int64), t.astype(np.int64)
    return s, t


def _maybe_int(v):
    if v is None:
        return None
    s = str(v).strip()
    if s.lstrip("-").isdigit():
        return int(s)
    return s



def _sniff_sep(path: Path, first: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    for cand in ("\t", ",", ";"):
        if cand in first:
            return cand
    return r"\s+"


def _looks_like_header(fields, source, target, weight) -> bool:
    names = {str(f).lower() for f in fields}
    known = set(SOURCE_COLUMNS) | set(TARGET_COLUMNS) | set(WEIGHT_COLUMNS)
    known |= {str(x).lower() for x in (source, target, weight) if isinstance(x, str)}
    return bool(names & known) or not any(_is_number(f) for f in fields)


def _pick_column(df, wanted, candidates, position, role, path, header):
    cols = list(df.columns)
    if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool):
        if 0 <= wanted < len(cols):
            return cols[wanted]
        raise DataError(f"edge list {path} has {len(cols)} column(s); the {role} column {wanted} does "
                        f"not exist: pass a column index below {len(cols)}")
    if wanted is not None:
        lower = {str(c).lower(): c for c in cols}
        if str(wanted).lower() in lower:
            return lower[str(wanted).lower()]
        raise DataError(f"edge list {path} has no {role} column {wanted!r} (columns found: {cols}): "
                        f"name the right column")
    if header:
        lower = {str(c).lower(): c for c in cols}
        for c in candidates:
            if c in lower:
                return lower[c]
        if role in ("source", "target") and len(cols) >= 2:
            # unnamed columns: fall back to position when the other role's name is not claiming it
            other = TARGET_COLUMNS if role == "source" else SOURCE_COLUMNS
            col = cols[position]
            if str(col).lower() not in other and str(col).lower() not in WEIGHT_COLUMNS:
                return col
        raise DataError(f"edge list {path} has no {role} column (columns found: {cols}): name the columns "
                        f"'source,target[,weight]' in the header, or pass the column name")
    if position < len(cols):
        return cols[position]
    raise DataError(f"edge list {path} has {len(cols)} column(s) per line but needs at least 2 "
                    f"(source, target[, weight]): check the separator and that every line names both "
                    f"ends of an edge")
