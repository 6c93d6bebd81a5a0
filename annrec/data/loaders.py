"""Generic interaction logs from CSV / TSV or Parquet files with named columns."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annrec.data.interactions import Interactions, factorize_ids
from annrec.errors import DataError, DataNotFoundError

__all__ = ["load_interactions", "interactions_from_frame"]

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_FLAGS = {"user_col": "--user-col", "item_col": "--item-col", "rating_col": "--rating-col",
          "timestamp_col": "--timestamp-col"}


def _line(row: int, first_line: int | None) -> str:
    return f"line {row + first_line}" if first_line is not None else f"row {row}"


def _ratings(s: pd.Series, where: str, first_line: int | None, col: str) -> np.ndarray:
    num = pd.to_numeric(s, errors="coerce") if s.dtype.kind not in "iuf" else s
    bad = num.isna().to_numpy() | ~np.isfinite(num.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where} {_line(row, first_line)}: rating column {col!r} has value {s.iloc[row]!r}, "
                        f"which is not a finite number; fix or delete that line, or choose another column "
                        f"with --rating-col")
    return num.to_numpy(dtype=np.float32)


def _timestamps(s: pd.Series, where: str, first_line: int | None, col: str) -> np.ndarray:
    epoch = pd.Timestamp(0, tz="UTC")
    if s.dtype.kind == "M":  # datetime64 (Parquet timestamps), naive = UTC
        dt = s if getattr(s.dt, "tz", None) is not None else s.dt.tz_localize("UTC")
        bad = dt.isna().to_numpy()
    elif s.dtype.kind in "iu":
        return s.to_numpy(dtype=np.int64)
    else:
        num = pd.to_numeric(s, errors="coerce") if s.dtype.kind != "f" else s
        if num.notna().any():  # numbers (seconds since the epoch); a value that is not one is an error
            bad = num.isna().to_numpy()
            if not bad.any():
                return np.floor(num.to_numpy(dtype=np.float64)).astype(np.int64)
        else:  # date/time strings
            try:
                dt = pd.to_datetime(s.astype(str), errors="coerce", utc=True, format="ISO8601")
            except (ValueError, TypeError):
                dt = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
            bad = dt.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where} {_line(row, first_line)}: timestamp column {col!r} has value "
                        f"{s.iloc[row]!r}, which is neither a number (seconds since the epoch) nor an "
                        f"ISO-8601 date/time; fix or delete that line, or leave out --timestamp-col")
    return ((dt - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _check_ids(s: pd.Series, where: str, first_line: int | None, col: str, what: str) -> None:
    bad = s.isna().to_numpy()
    if s.dtype == object or str(s.dtype) in ("str", "string"):
        bad = bad | (s.astype(str).str.strip() == "").to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where} {_line(row, first_line)}: {what} id column {col!r} is empty; every event "
                        f"needs a {what} id: fix or delete that line")


def interactions_from_frame(df: pd.DataFrame, user_col: str = "user_id", item_col: str = "item_id",
                            rating_col: str | None = None, timestamp_col: str | None = None, *,
                            name: str = "", source: str = "the table", first_line: int | None = None
                            ) -> Interactions:
    """Build :class:`Interactions` from a DataFrame with one row per event.

    Ids may be ints or strings (see :func:`~annrec.data.as_external_ids`). Ratings must be finite numbers;
    timestamps numbers (seconds since the epoch) or ISO-8601 date/times (converted to UTC seconds).

    Raises:
        DataError: a named column is missing, no rows, an empty id, an unparsable rating or timestamp
            (the message names the line when ``first_line`` tells where row 0 is).
    """
    given = {"user_col": user_col, "item_col": item_col, "rating_col": rating_col,
             "timestamp_col": timestamp_col}
    present = [str(c) for c in df.columns]
    for arg, col in given.items():
        if col is not None and col not in df.columns:
            what = arg.removesuffix("_col")
            guess = _guess_column(present, what)
            hint = f" (perhaps {guess!r}?)" if guess else ""
            headerless = ""
            if present and all(_looks_like_value(c) for c in present):
                headerless = "; the first line looks like data, not a header: add a header line"
            raise DataError(f"{source} has no column {col!r} for the {what}; its columns are: "
                            f"{', '.join(present) or '(none)'}{headerless}. Name the {what} column with "
                            f"{_FLAGS[arg]} NAME ({arg}=NAME in Python){hint}")
    if len(df) == 0:
        raise DataError(f"{source} has no rows (only a header): it needs one line per interaction")
    _check_ids(df[user_col], source, first_line, user_col, "user")
    _check_ids(df[item_col], source, first_line, item_col, "item")
    u_idx, u_ids = factorize_ids(df[user_col].to_numpy(), "user ids")
    i_idx, i_ids = factorize_ids(df[item_col].to_numpy(), "item ids")
    rating = None if rating_col is None else _ratings(df[rating_col], source, first_line, rating_col)
    ts = None if timestamp_col is None else _timestamps(df[timestamp_col], source, first_line, timestamp_col)
    return Interactions(u_idx, i_idx, rating, ts, u_ids, i_ids, name=name)


def _guess_column(present: list[str], what: str) -> str | None:
    keys = {"user": ("user", "uid", "customer", "visitor", "session"),
            "item": ("item", "movie", "product", "iid", "song", "track", "artist", "book", "article"),
            "rating": ("rating", "score", "stars", "value", "weight"),
            "timestamp": ("timestamp", "time", "date", "ts", "created")}[what]
    for c in present:
        if any(k in c.lower() for k in keys):
            return c
    return None


def _looks_like_value(c: str) -> bool:
    try:
        float(c)
        return True
    except ValueError:
        return False


def _sniff_sep(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
            sample = fh.read(65536)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not sample.strip():
        raise DataError(f"{path} is empty: it needs a header line and one line per interaction")
    lines = sample.splitlines()
    if len(sample) == 65536 and len(lines) > 1:
        sample = "\n".join(lines[:-1])  # drop a possibly cut last line
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;| ").delimiter
    except csv.Error:
        first = lines[0] if lines else ""
        for d in ("\t", ",", ";", "|"):
            if d in first:
                return d
        return ","


def load_interactions(path: str | os.PathLike, user_col: str = "user_id", item_col: str = "item_id",
                      rating_col: str | None = None, timestamp_col: str | None = None,
                      sep: str | None = None, *, name: str | None = None) -> Interactions:
    """Load an interaction log from a CSV/TSV (header line required) or Parquet file with named columns.

    Args:
        path: ``.csv`` / ``.tsv`` / ``.txt`` (optionally ``.gz``) or ``.parquet`` / ``.pq``.
        user_col, item_col: the id columns (ints or strings; ints are kept as int64 when every id is a
            canonical integer, else all ids are strings).
        rating_col: explicit rating column (float32); ``None``: implicit feedback, every rating 1.0.
        timestamp_col: seconds since the epoch, or ISO-8601 date/times (UTC); ``None``: all 0.
        sep: CSV field separator; ``None`` sniffs it from the first 64 KiB (``, \\t ; |`` or space).
        name: data set name (default: the file name without suffixes).

    Returns:
        :class:`Interactions` with ids sorted and numbered from 0, events in file order.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: empty file, a named column missing (the message lists the columns present and the
            flag to use), zero rows, empty ids, unparsable ratings or timestamps (the message names the
            line), an unreadable Parquet file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataNotFoundError(f"interactions file {p} does not exist: check the path")
    if p.is_dir():
        raise DataError(f"{p} is a folder; pass the CSV or Parquet file itself")
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty: it needs a header line and one line per interaction")
    ds_name = name if name is not None else p.name.split(".")[0]
    wanted = [c for c in (user_col, item_col, rating_col, timestamp_col) if c is not None]
    if p.suffix.lower() in _PARQUET_SUFFIXES:
        try:
            import pyarrow.parquet as pq

            present = pq.read_schema(p).names
            cols = [c for c in dict.fromkeys(wanted) if c in present]
            df = pd.read_parquet(p, columns=cols)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses
            raise DataError(f"{p} is not a readable Parquet file ({type(e).__name__}: {e}); check the file "
                            f"or convert it with pandas.DataFrame.to_parquet") from None
        missing = [c for c in wanted if c not in df.columns]
        if missing:  # report with the full list of columns
            df = pd.DataFrame(columns=present)
        return interactions_from_frame(df, user_col, item_col, rating_col, timestamp_col, name=ds_name,
                                       source=str(p))
    if sep is None:
        sep = _sniff_sep(p)
    read_kw: dict[str, Any] = dict(sep=sep, engine="c" if len(sep) == 1 else "python")
    try:
        header = pd.read_csv(p, nrows=0, **read_kw)
    except pd.errors.EmptyDataError:
        raise DataError(f"{p} is empty: it needs a header line and one line per interaction") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{p} is not a readable CSV file ({e}); check the file and --sep") from None
    present = [str(c) for c in header.columns]
    if any(c not in present for c in wanted):
        return interactions_from_frame(pd.DataFrame(columns=present), user_col, item_col, rating_col,
                                       timestamp_col, name=ds_name, source=str(p))
    cols = list(dict.fromkeys(wanted))
    dtypes = {user_col: str, item_col: str}
    try:
        # all columns are read (no usecols): with usecols pandas silently drops the extra fields of a
        # malformed line instead of reporting it
        df = pd.read_csv(p, dtype=dtypes, keep_default_na=False, na_values={c: [""] for c in cols},
                         skip_blank_lines=True, **read_kw)[cols]
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{p} is malformed ({e}); fix the line it names, or check --sep "
                        f"(used {sep!r})") from None
    return interactions_from_frame(df, user_col, item_col, rating_col, timestamp_col, name=ds_name,
                                   source=str(p), first_line=2)
