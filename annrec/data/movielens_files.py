"""The file formats of the MovieLens sets: ``ratings.csv`` / ``movies.csv`` / ``tags.csv`` (ml-latest-small,
ml-25m, ml-32m), ``u.data`` / ``u.item`` (ml-100k) and ``ratings.dat`` / ``movies.dat`` (ml-1m), each read into
the same ratings and movies tables, with a clear :class:`~annrec.errors.DataError` naming the file and line
of anything malformed. Used by :mod:`annrec.data.movielens`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annrec.errors import DataError, DataNotFoundError

#: ml-100k's genre flags, in column order (``u.genre``); "unknown" maps to no genre.
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
                 "Sci-Fi", "Thriller", "War", "Western"]

_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")


# ---------------------------------------------------------------------------------------------- parsing
def _year_from_title(titles: pd.Series) -> pd.Series:
    years = titles.astype(str).str.extract(_YEAR, expand=False)
    return pd.to_numeric(years, errors="coerce").astype("Int64")


def _read_table(path: Path, what: str, source: Any = None, **kwargs: Any) -> pd.DataFrame:
    """pandas.read_csv of ``source`` (default ``path``) with errors turned into DataErrors naming ``path``."""
    try:
        df = pd.read_csv(path if source is None else source, **kwargs)
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} is missing: restore it from the official zip") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: restore it from the official zip") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path} ({what}) is malformed: {e}; repair it or restore it from the official zip"
                        ) from None
    return df


def _check_numeric(df: pd.DataFrame, path: Path, cols: dict[str, Any], line_offset: int) -> None:
    """Raise DataError naming the first line whose value in ``cols`` is missing or not numeric."""
    for col, kind in cols.items():
        s = df[col]
        if s.dtype.kind in "iuf" and not s.isna().any():
            continue
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna().to_numpy()
        if kind == "int" and not bad.any():
            f = num.to_numpy(dtype=np.float64)
            bad = f != np.round(f)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path} line {row + line_offset}: {col} value {s.iloc[row]!r} is not a "
                            f"{'number' if kind == 'float' else 'integer'}; repair or delete that line, or "
                            f"restore the file from the official zip")


def _read_csv_numeric(path: Path, names: list[str], dtypes: dict[str, Any], what: str, *, header: bool,
                      sep: str = ",", text: str | None = None) -> pd.DataFrame:
    """Read a numeric table fast (``text``: already-decoded content); on a bad value re-read it as text
    to name the offending line."""
    def source() -> Any:
        return io.StringIO(text) if text is not None else path

    kw: dict[str, Any] = dict(sep=sep, engine="c")
    if header:  # no usecols: with it pandas silently drops extra fields of malformed lines
        kw.update(header=0)
    else:
        kw.update(header=None, names=names)
    first_line = 2 if header else 1
    try:
        df = _read_table(path, what, source(), dtype=dtypes, **kw)[names]
    except DataError:
        df = _read_table(path, what, source(), dtype=str, keep_default_na=False, na_values=[""], **kw)[names]
        _check_numeric(df, path, {c: ("float" if np.dtype(t).kind == "f" else "int")
                                  for c, t in dtypes.items()}, first_line)
        raise
    if df.isna().any().any():
        col = df.columns[df.isna().any().to_numpy()][0]
        row = int(np.flatnonzero(df[col].isna().to_numpy())[0])
        raise DataError(f"{path} line {row + first_line}: {col} is empty; repair or delete that "
                        f"line, or restore the file from the official zip")
    return df


def _check_columns(df: pd.DataFrame, path: Path, needed: list[str]) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"{path} has no column(s) {', '.join(missing)} (columns: {', '.join(map(str, df.columns))}): "
                        f"this is not a MovieLens file of the expected format; restore it from the official zip")


def _ratings_csv(folder: Path) -> pd.DataFrame:
    path = folder / "ratings.csv"
    head = _read_table(path, "ratings", nrows=0)
    _check_columns(head, path, ["userId", "movieId", "rating", "timestamp"])
    return _read_csv_numeric(path, ["userId", "movieId", "rating", "timestamp"],
                             {"userId": np.int64, "movieId": np.int64, "rating": np.float32,
                              "timestamp": np.int64}, "ratings", header=True)


def _movies_csv(folder: Path) -> pd.DataFrame:
    path = folder / "movies.csv"
    df = _read_table(path, "movies", dtype={"title": str, "genres": str}, keep_default_na=False)
    _check_columns(df, path, ["movieId", "title", "genres"])
    _check_numeric(df, path, {"movieId": "int"}, 2)
    ids = pd.to_numeric(df["movieId"]).astype(np.int64)
    genres = [[] if g in ("", "(no genres listed)") else g.split("|") for g in df["genres"].tolist()]
    out = pd.DataFrame({"title": df["title"].astype(str).tolist(), "genres": genres},
                       index=pd.Index(ids.to_numpy(), name="item_id"))
    out["year"] = _year_from_title(out["title"])
    return out


def _tags_csv(folder: Path) -> pd.DataFrame | None:
    path = folder / "tags.csv"
    if not path.is_file():
        return None
    df = _read_table(path, "tags", dtype={"tag": str}, usecols=lambda c: c in ("movieId", "tag"))
    _check_columns(df, path, ["movieId", "tag"])
    _check_numeric(df, path, {"movieId": "int"}, 2)
    return pd.DataFrame({"movieId": pd.to_numeric(df["movieId"]).astype(np.int64), "tag": df["tag"]})


def _tag_lists(tags: pd.DataFrame | None, index: pd.Index) -> list[list[str]]:
    """Per movie of ``index``: its distinct lower-cased tags, most applied first, then alphabetical."""
    if tags is None or tags.empty:
        return [[] for _ in range(len(index))]
    t = tags.dropna(subset=["tag"]).copy()
    t["tag"] = t["tag"].astype(str).str.strip().str.lower()
    t = t[t["tag"] != ""]
    counts = t.groupby(["movieId", "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values(["movieId", "n", "tag"], ascending=[True, False, True])
    per_movie = counts.groupby("movieId")["tag"].agg(list)
    return [list(per_movie.get(m, [])) for m in index.tolist()]


def _load_csv_format(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = _ratings_csv(folder)
    movies = _movies_csv(folder)
    movies["tags"] = _tag_lists(_tags_csv(folder), movies.index)
    return ratings, movies


def _read_latin1(path: Path) -> str:
    try:
        return path.read_bytes().decode("latin-1")
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} is missing: restore it from the official zip") from None


def _load_100k(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = folder / "u.data"
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path} is empty: restore it from the official zip")
    ratings = _read_csv_numeric(path, ["userId", "movieId", "rating", "timestamp"],
                                {"userId": np.int64, "movieId": np.int64, "rating": np.float32,
                                 "timestamp": np.int64}, "ratings", header=False, sep="\t")
    genres_names = list(ML100K_GENRES)
    gpath = folder / "u.genre"
    if gpath.is_file():
        pairs = [ln.rsplit("|", 1) for ln in _read_latin1(gpath).splitlines() if "|" in ln]
        try:
            ordered = sorted((int(i), g) for g, i in pairs)
            if len(ordered) == 19:
                genres_names = [g for _, g in ordered]
        except ValueError:
            pass
    ipath = folder / "u.item"
    text = _read_latin1(ipath)
    if not text.strip():
        raise DataError(f"{ipath} is empty: restore it from the official zip")
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 24:
            raise DataError(f"{ipath} line {lineno}: expected 24 '|'-separated fields (id, title, release "
                            f"date, video date, IMDb URL, 19 genre flags), found {len(parts)}; repair that "
                            f"line or restore the file from the official zip")
        try:
            mid = int(parts[0])
            flags = [int(f or 0) for f in parts[5:24]]
        except ValueError:
            raise DataError(f"{ipath} line {lineno}: movie id or genre flags are not integers ({line[:60]!r}); "
                            f"repair that line or restore the file from the official zip") from None
        genres = [g for g, f in zip(genres_names, flags) if f and g != "unknown"]
        rows.append((mid, parts[1], genres, parts[2]))
    movies = pd.DataFrame({"title": [r[1] for r in rows], "genres": [r[2] for r in rows]},
                          index=pd.Index(np.asarray([r[0] for r in rows], np.int64), name="item_id"))
    year = _year_from_title(movies["title"])
    release = pd.to_numeric(pd.Series([r[3][-4:] for r in rows], index=movies.index), errors="coerce")
    movies["year"] = year.fillna(release.astype("Int64"))
    movies["tags"] = [[] for _ in range(len(movies))]
    return ratings, movies


def _load_1m(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rpath = folder / "ratings.dat"
    text = _read_latin1(rpath)
    if not text.strip():
        raise DataError(f"{rpath} is empty: restore it from the official zip")
    ratings = _read_csv_numeric(rpath, ["userId", "movieId", "rating", "timestamp"],
                                {"userId": np.int64, "movieId": np.int64, "rating": np.float32,
                                 "timestamp": np.int64}, "ratings", header=False, sep="\t",
                                text=text.replace("::", "\t"))
    mpath = folder / "movies.dat"
    mtext = _read_latin1(mpath)
    if not mtext.strip():
        raise DataError(f"{mpath} is empty: restore it from the official zip")
    ids, titles, genres = [], [], []
    for lineno, line in enumerate(mtext.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 3:
            raise DataError(f"{mpath} line {lineno}: expected 'MovieID::Title::Genres', found {len(parts)} "
                            f"'::'-separated fields; repair that line or restore the file from the official zip")
        try:
            ids.append(int(parts[0]))
        except ValueError:
            raise DataError(f"{mpath} line {lineno}: movie id {parts[0]!r} is not an integer; repair that "
                            f"line or restore the file from the official zip") from None
        titles.append(parts[1])
        g = parts[2].strip()
        genres.append([] if g in ("", "(no genres listed)") else g.split("|"))
    movies = pd.DataFrame({"title": titles, "genres": genres},
                          index=pd.Index(np.asarray(ids, np.int64), name="item_id"))
    movies["year"] = _year_from_title(movies["title"])
    movies["tags"] = [[] for _ in range(len(movies))]  # ml-1m has no tags
    return ratings, movies


#: format name (:data:`annrec.data.movielens.MOVIELENS` ``format``) -> reader of an unpacked folder: (ratings, movies)
PARSERS: dict[str, Callable[[Path], tuple[pd.DataFrame, pd.DataFrame]]] = {
    "csv": _load_csv_format, "100k": _load_100k, "1m": _load_1m,
}
