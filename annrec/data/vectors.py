"""Users' own vectors, ids and item metadata from files (``annrec embeddings import``, ``--items``).

Vector formats: ``.npy`` (float ``(n, dim)``), ``.fvecs`` / ``.bvecs`` / ``.ivecs`` (the TEXMEX format of
the SIFT/GIST data sets), ANN-Benchmarks HDF5 (its ``train`` matrix and ``distance`` attribute), and
Parquet / CSV / TSV tables (an id column plus either one column holding a list per row or one numeric
column per dimension). The binary readers are :mod:`annrec.bench.datasets`'.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annrec.errors import DataError, DataNotFoundError, InputError

TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".txt")
HDF5_SUFFIXES = (".hdf5", ".h5")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A Parquet or CSV/TSV file (header line; separator sniffed) as a DataFrame.

    Raises:
        DataNotFoundError: no such file. DataError: empty or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no file at {path}: check the path")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep=None, engine="python")
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as e:
        raise DataError(f"{path} could not be read as a table ({e}): give a Parquet file or a CSV with a header "
                        f"line") from None
    if df.empty:
        raise DataError(f"{path} has no rows")
    return df


def _vectors_from_table(df: pd.DataFrame, path: Path, id_col: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    ids = None
    if id_col is not None:
        if id_col not in df.columns:
            raise InputError(f"{path} has no column {id_col!r} (columns: {', '.join(map(str, df.columns[:20]))})")
        ids = df[id_col].to_numpy()
        df = df.drop(columns=[id_col])
    if len(df.columns) == 1 and df[df.columns[0]].map(lambda v: isinstance(v, (list, np.ndarray))).all():
        rows = df[df.columns[0]].tolist()
        if len({len(r) for r in rows}) != 1:
            raise DataError(f"{path}: the vectors in column {df.columns[0]!r} have different lengths")
        return np.asarray(rows, dtype=np.float32), ids
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(f"{path}: column {bad[0]!r} is not numeric; every column but the id column (--id-col) "
                        f"must be one vector dimension")
    return df.to_numpy(dtype=np.float32), ids


def read_user_vectors(path: str | os.PathLike, *, id_col: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Read item vectors from a file.

    Args:
        path: ``.npy``, ``.fvecs`` / ``.bvecs`` / ``.ivecs``, ``.hdf5`` (ANN-Benchmarks), ``.parquet`` or
            ``.csv`` / ``.tsv``.
        id_col: for tables, the column holding the item ids (else ids come from ``--ids`` or are row numbers).

    Returns:
        ``(vectors float32 (n, dim), ids (n,) or None, metric or None)``; the metric comes from an HDF5
        file's ``distance`` attribute.

    Raises:
        DataNotFoundError: no such file. DataError: unreadable, ragged or non-numeric vectors.
        InputError: an unknown format or a missing id column.
    """
    from annrec.bench.datasets import read_hdf5
    from annrec.data.vector_files import read_vectors

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        ds = read_hdf5(path)
        return np.asarray(ds.train, dtype=np.float32), None, ds.metric
    if suffix in TABLE_SUFFIXES:
        vectors, ids = _vectors_from_table(read_table(path), path, id_col)
        return vectors, ids, None
    if suffix in (".npy", ".fvecs", ".bvecs", ".ivecs"):
        x = read_vectors(path)
        if x.ndim != 2:
            raise DataError(f"{path} holds an array of shape {x.shape}; expected (n_items, dim)")
        return np.asarray(x, dtype=np.float32), None, None
    if not path.exists():
        raise DataNotFoundError(f"no file at {path}: check the path")
    raise InputError(f"{path}: unknown vector format {suffix or '(no suffix)'!r}: use .npy, .fvecs, .bvecs, .hdf5 "
                     f"(ANN-Benchmarks), .parquet or .csv")


def read_ids(path: str | os.PathLike) -> np.ndarray:
    """Item ids, one per vector row: ``.npy``, ``.json`` (a list) or text (one id per line).

    Raises:
        DataNotFoundError: no such file. DataError: unreadable or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no file at {path}: check the path")
    try:
        if path.suffix.lower() == ".npy":
            ids = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".json":
            ids = np.asarray(json.loads(path.read_text()))
        else:
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            ids = np.asarray([int(v) if v.isdigit() else v for v in lines], dtype=object)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} could not be read as a list of ids ({e})") from None
    if ids.size == 0:
        raise DataError(f"{path} holds no ids")
    return ids.ravel()


def read_item_metadata(path: str | os.PathLike, id_col: str = "item_id") -> dict[Any, dict[str, Any]]:
    """Item metadata from a table: ``{item id: {column: value, ...}}`` (titles, genres, any columns).

    Missing values are left out; a column named ``genres`` holding ``a|b|c`` strings becomes a list, as
    in MovieLens.

    Raises:
        DataNotFoundError / DataError: as :func:`read_table`. InputError: no such id column, repeated ids.
    """
    path = Path(path)
    df = read_table(path)
    if id_col not in df.columns:
        raise InputError(f"{path} has no id column {id_col!r} (columns: {', '.join(map(str, df.columns[:20]))}): "
                         f"name it with the items id-column option")
    if df[id_col].duplicated().any():
        dup = df[id_col][df[id_col].duplicated()].iloc[0]
        raise InputError(f"{path}: item id {dup!r} appears more than once")
    out: dict[Any, dict[str, Any]] = {}
    cols = [c for c in df.columns if c != id_col]
    for rec in df.to_dict("records"):
        key = rec[id_col]
        key = int(key) if isinstance(key, (np.integer, int)) else str(key)
        meta = {}
        for c in cols:
            v = rec[c]
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            if c == "genres" and isinstance(v, str):
                v = [g for g in v.split("|") if g]
            meta[str(c)] = v.item() if isinstance(v, np.generic) else v
        out[key] = meta
    return out


def vectors_hash(vectors: np.ndarray, ids: np.ndarray) -> str:
    """SHA-256 of the vectors' bytes and the ids (the ``data_hash`` of an imported artifact)."""
    h = hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    h.update(json.dumps([str(i) for i in ids.tolist()]).encode())
    return h.hexdigest()
