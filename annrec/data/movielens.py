"""MovieLens loaders (GroupLens), from a local folder, a cache, or the official zip.

Source: F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context.
ACM Transactions on Interactive Intelligent Systems 5(4), 19:1-19:19. https://doi.org/10.1145/2827872
Data: https://grouplens.org/datasets/movielens/ (see each set's README.txt for its licence: use for
research, cite the paper above, no redistribution without permission).

Known sets (:data:`MOVIELENS`):

=================  ===================================================  ===============
name               files                                                format
=================  ===================================================  ===============
ml-latest-small    ratings.csv, movies.csv, tags.csv                    CSV, UTF-8
ml-25m, ml-32m     ratings.csv, movies.csv, tags.csv                    CSV, UTF-8
ml-100k            u.data (tab), u.item ('|', latin-1, 19 genre flags)  ML-100K
ml-1m              ratings.dat, movies.dat ('::', latin-1)              ML-1M
=================  ===================================================  ===============

Where a set is looked for, in order (:func:`load_movielens`):

1. the ``data_dir`` argument (CLI ``--data-dir``), then the ``ANNREC_DATA_DIR`` environment variable:
   each may be the folder that CONTAINS ``<name>/`` or the ``<name>/`` folder itself;
2. the cache ``cache_dir`` (argument, else ``ANNREC_CACHE_DIR``, else ``~/.cache/annrec/datasets``),
   where a previous download was unpacked to ``<cache_dir>/<name>/``;
3. a download of ``https://files.grouplens.org/datasets/movielens/<name>.zip`` (``download=True``),
   verified against its SHA-256 when :data:`MOVIELENS` knows it, else against a known MD5, else against
   the ``.md5`` file GroupLens publishes next to the zip (``<url>.md5``), then unpacked atomically into
   the cache (a ``SHA256SUMS`` file of the unpacked files is written there too).

A local folder with a ``SHA256SUMS`` file (``sha256sum`` format; the download cache gets one) is verified
against it before parsing: a modified or truncated file raises :class:`~annrec.errors.DataError`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annrec.data.interactions import Interactions
from annrec.errors import DataError, DataNotFoundError, InputError

__all__ = ["MOVIELENS", "load_movielens", "parse_movielens_folder", "default_cache_dir", "find_local_movielens",
           "verify_sha256sums"]

log = logging.getLogger(__name__)

_BASE_URL = "https://files.grouplens.org/datasets/movielens"

#: Known MovieLens sets: the official GroupLens zip (``url``), what the loader reads (``files``; those in
#: ``required`` must exist) and the published sizes (``counts``, from each set's README).
#:
#: Checksums of the zip: GroupLens publishes only an MD5 next to each zip (``<url>.md5``), no SHA-256.
#: ``sha256`` (and ``size`` in bytes) are the values recorded by TensorFlow Datasets
#: (``tensorflow_datasets/url_checksums/movielens.txt``) and reproduced by many independent downloads;
#: for ml-latest-small the per-file SHA-256 of its ratings.csv / movies.csv match those of
#: an unpacked official zip. ``md5`` is the GroupLens-published MD5 where annrec knows it. A download is verified with
#: ``sha256`` when set, else ``md5``, else the MD5 fetched from ``<url>.md5`` at download time.
MOVIELENS: dict[str, dict[str, Any]] = {
    "ml-latest-small": {
        "url": f"{_BASE_URL}/ml-latest-small.zip", "format": "csv", "size": 978202,
        "sha256": "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436", "md5": None,
        "files": ["ratings.csv", "movies.csv", "tags.csv"], "required": ["ratings.csv", "movies.csv"],
        "counts": {"ratings": 100836, "users": 610, "movies": 9742},
    },
    "ml-25m": {
        "url": f"{_BASE_URL}/ml-25m.zip", "format": "csv", "size": 261978986,
        "sha256": "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        "md5": "6b51fb2759a8657d3bfcbfc42b592ada",
        "files": ["ratings.csv", "movies.csv", "tags.csv"], "required": ["ratings.csv", "movies.csv"],
        "counts": {"ratings": 25000095, "users": 162541, "movies": 62423},
    },
    "ml-32m": {
        "url": f"{_BASE_URL}/ml-32m.zip", "format": "csv", "size": 238950008,
        "sha256": None, "md5": "d472be332d4daa821edc399621853b57",
        "files": ["ratings.csv", "movies.csv", "tags.csv"], "required": ["ratings.csv", "movies.csv"],
        "counts": {"ratings": 32000204, "users": 200948, "movies": 87585},
    },
    "ml-100k": {
        "url": f"{_BASE_URL}/ml-100k.zip", "format": "100k", "size": 4924029,
        "sha256": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "files": ["u.data", "u.item", "u.genre"], "required": ["u.data", "u.item"],
        "counts": {"ratings": 100000, "users": 943, "movies": 1682},
    },
    "ml-1m": {
        "url": f"{_BASE_URL}/ml-1m.zip", "format": "1m", "size": 5917549,
        "sha256": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        "md5": "c4d9eecfca2ab87c1945afe126590906",
        "files": ["ratings.dat", "movies.dat"], "required": ["ratings.dat", "movies.dat"],
        "counts": {"ratings": 1000209, "users": 6040, "movies": 3883},
    },
}

#: ml-100k's genre flags, in column order (``u.genre``); "unknown" maps to no genre.
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
                 "Sci-Fi", "Thriller", "War", "Western"]

_HINT = "set ANNREC_DATA_DIR=/path/to/folder/containing/{name} or pass --data-dir"
_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")


# ---------------------------------------------------------------------------------------------- paths
def default_cache_dir() -> Path:
    """``$ANNREC_CACHE_DIR`` if set, else ``~/.cache/annrec/datasets``."""
    env = os.environ.get("ANNREC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "annrec" / "datasets"


def _spec(name: str) -> dict[str, Any]:
    if name not in MOVIELENS:
        raise InputError(f"unknown MovieLens data set {name!r}: use one of {', '.join(MOVIELENS)}")
    return MOVIELENS[name]


def _candidate(root: Path, name: str) -> Path | None:
    """The ``<name>/`` folder for a root that is either its parent or the folder itself, or None."""
    spec = _spec(name)
    first = spec["required"][0]
    if (root / name).is_dir():
        return root / name
    if root.is_dir() and (root.name == name or (root / first).is_file()):
        return root
    return None


def find_local_movielens(name: str = "ml-latest-small", data_dir: str | os.PathLike | None = None,
                         cache_dir: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """Locate an unpacked copy of ``name`` (data_dir, then ``ANNREC_DATA_DIR``, then the cache).

    Returns:
        ``(folder or None, the places looked in)``.
    """
    looked: list[str] = []
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get("ANNREC_DATA_DIR")
    if env:
        roots.append(Path(env).expanduser())
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    for root in roots:
        looked.append(str(root))
        found = _candidate(root, name)
        if found is not None:
            return found, looked
    looked.append(str(cache / name))
    if (cache / name).is_dir():
        return cache / name, looked
    return None, looked


# ---------------------------------------------------------------------------------------------- checksums
def _file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256sums(folder: str | os.PathLike, required: list[str] | None = None) -> list[str]:
    """Check the files of ``folder`` against its ``SHA256SUMS`` (``sha256sum`` output format).

    Every listed file that is present is hashed (ml-latest-small: 3.3 MB, ~10 ms). A listed file that is
    absent is an error only when it is in ``required`` (the files the loader reads).

    Returns:
        The names that were verified (empty when there is no ``SHA256SUMS``).

    Raises:
        DataError: a digest differs, a required file is listed but missing, or SHA256SUMS is malformed.
    """
    folder = Path(folder)
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return []
    checked = []
    for lineno, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"\s*([0-9a-fA-F]{64})\s+\*?(.+?)\s*", line)
        if not m:
            raise DataError(f"{sums} line {lineno} is not '<sha256>  <file>': {line!r}; regenerate it "
                            f"with `sha256sum * > SHA256SUMS` in {folder}")
        expected, fname = m.group(1).lower(), m.group(2)
        path = folder / fname
        if not path.is_file():
            if required is not None and fname in required:
                raise DataError(f"{path} is listed in {sums} but missing: restore the file (re-download "
                                f"or re-unpack the data set)")
            continue
        actual = _file_digest(path)
        if actual != expected:
            raise DataError(f"checksum mismatch for {path}: SHA-256 is {actual} but {sums} says {expected}; "
                            f"the file is corrupt or was modified: restore it from the official zip "
                            f"(or delete the folder to download it again)")
        checked.append(fname)
    return checked


# ---------------------------------------------------------------------------------------------- download
def _open_url(url: str, timeout: float = 60.0):
    req = urllib.request.Request(url, headers={"User-Agent": "annrec (python urllib)"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (https/file URLs of MOVIELENS)


def _expected_md5_from_server(url: str) -> str:
    """Fetch ``<url>.md5`` (GroupLens publishes one next to every zip) and return the hex digest."""
    with _open_url(url + ".md5", timeout=30.0) as r:
        text = r.read(4096).decode("ascii", "replace")
    m = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    if not m:
        raise DataError(f"{url}.md5 does not contain an MD5 digest ({text[:80]!r}); cannot verify the "
                        f"download: download the zip yourself, unzip it and set ANNREC_DATA_DIR")
    return m.group(1).lower()


def _download_zip(url: str, dest: Path, progress: bool = True) -> dict[str, str]:
    """Stream ``url`` into ``dest``; return its ``sha256`` and ``md5`` hex digests."""
    sha, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 (md5 only to compare with GroupLens' .md5)
    with _open_url(url) as r, open(dest, "wb") as out:
        total = int(r.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}",
                           disable=None, leave=False)
            except ImportError:  # pragma: no cover
                bar = None
        try:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                out.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _fetch(name: str, cache: Path, progress: bool = True) -> Path:
    """Download, verify and unpack ``name`` into ``cache/<name>`` (atomically); return that folder."""
    spec = _spec(name)
    url = spec["url"]
    hint = _HINT.format(name=name)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_zip = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=cache)
    os.close(fd)
    tmp_zip = Path(tmp_zip)
    tmp_dir: Path | None = None
    try:
        log.info("downloading %s", url)
        try:
            digests = _download_zip(url, tmp_zip, progress)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise DataNotFoundError(f"MovieLens {name} is not available locally and could not be downloaded "
                                    f"from {url} ({reason}): {hint}") from None
        if spec.get("sha256"):
            algo, expected = "sha256", spec["sha256"].lower()
        elif spec.get("md5"):
            algo, expected = "md5", spec["md5"].lower()
        else:
            algo = "md5"
            try:
                expected = _expected_md5_from_server(url)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                raise DataError(f"downloaded {url} but could not fetch its checksum {url}.md5 "
                                f"({getattr(e, 'reason', e)}), so it cannot be verified: retry, or download "
                                f"and unzip it yourself and {hint}") from None
        if digests[algo] != expected:
            size = tmp_zip.stat().st_size
            size_note = (f" ({size} bytes, expected {spec['size']})" if spec.get("size") and size != spec["size"]
                         else f" ({size} bytes)")
            raise DataError(f"checksum mismatch for the download of {url}{size_note}: {algo.upper()} is "
                            f"{digests[algo]} but {expected} was expected; the download is corrupt or the file "
                            f"changed: retry later, or download and unzip it yourself and {hint}")
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=cache))
        try:
            with zipfile.ZipFile(tmp_zip) as zf:
                for member in zf.namelist():  # no absolute paths or '..' (zip-slip)
                    p = Path(member)
                    if p.is_absolute() or ".." in p.parts:
                        raise DataError(f"{url} contains an unsafe path {member!r}; refusing to unpack it")
                zf.extractall(tmp_dir)
        except zipfile.BadZipFile as e:
            raise DataError(f"{url} is not a valid zip file ({e}): retry, or {hint}") from None
        first = spec["required"][0]
        hits = sorted(tmp_dir.rglob(first), key=lambda p: len(p.parts))
        if not hits:
            raise DataError(f"{url} does not contain {first}: the archive layout changed; download and "
                            f"unzip it yourself and {hint}")
        src = hits[0].parent
        lines = [f"{_file_digest(f)}  {f.name}" for f in sorted(src.iterdir())
                 if f.is_file() and f.name != "SHA256SUMS"]
        (src / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")
        target = cache / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
        return target
    finally:
        tmp_zip.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


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


_PARSERS: dict[str, Callable[[Path], tuple[pd.DataFrame, pd.DataFrame]]] = {
    "csv": _load_csv_format, "100k": _load_100k, "1m": _load_1m,
}


def _check_required(folder: Path, name: str) -> None:
    spec = _spec(name)
    missing = [f for f in spec["required"] if not (folder / f).is_file()]
    if missing:
        raise DataNotFoundError(
            f"{folder} does not look like an unpacked {name}: missing {', '.join(missing)} "
            f"(found: {', '.join(sorted(p.name for p in folder.iterdir())) or 'nothing'}); unzip the official "
            f"{spec['url']} there, or delete the folder so that it is downloaded again")


def parse_movielens_folder(folder: str | os.PathLike, name: str = "ml-latest-small",
                           include_unrated_items: bool = False, verify: bool = True) -> Interactions:
    """Parse an unpacked MovieLens folder of format ``MOVIELENS[name]["format"]`` (no search, no download).

    See :func:`load_movielens` for the result and the errors.
    """
    folder = Path(folder)
    spec = _spec(name)
    _check_required(folder, name)
    if verify:
        verify_sha256sums(folder, required=spec["files"])
    ratings, movies = _PARSERS[spec["format"]](folder)
    if len(ratings) == 0:
        raise DataError(f"{folder} has no ratings: restore the files from the official zip")
    u_ids, u_idx = np.unique(ratings["userId"].to_numpy(np.int64), return_inverse=True)
    rated = ratings["movieId"].to_numpy(np.int64)
    if include_unrated_items:
        i_ids = np.union1d(movies.index.to_numpy(np.int64), rated)
    else:
        i_ids = np.unique(rated)
    i_idx = np.searchsorted(i_ids, rated)
    movies = movies[~movies.index.duplicated(keep="first")]
    return Interactions(user_idx=u_idx.reshape(-1).astype(np.int32), item_idx=i_idx.astype(np.int32),
                        rating=ratings["rating"].to_numpy(np.float32),
                        timestamp=ratings["timestamp"].to_numpy(np.int64),
                        user_ids=u_ids.astype(np.int64), item_ids=i_ids.astype(np.int64),
                        name=name, items=movies[["title", "genres", "tags", "year"]])


def load_movielens(name: str = "ml-latest-small", data_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None, download: bool = True, *,
                   include_unrated_items: bool = False, verify: bool = True,
                   progress: bool = True) -> Interactions:
    """Load a MovieLens data set (Harper & Konstan 2015) as explicit-feedback :class:`Interactions`.

    Args:
        name: a key of :data:`MOVIELENS`: ``ml-latest-small`` (100,836 ratings, 610 users, 9,742 movies
            of which 9,724 rated), ``ml-25m``, ``ml-32m``, ``ml-100k``, ``ml-1m``.
        data_dir: folder containing ``<name>/`` or ``<name>/`` itself (CLI ``--data-dir``); then
            ``$ANNREC_DATA_DIR`` is tried the same way.
        cache_dir: where downloads are unpacked (default ``$ANNREC_CACHE_DIR`` or
            ``~/.cache/annrec/datasets``).
        download: fetch the official GroupLens zip when no local copy is found.
        include_unrated_items: also give an index to movies of the movie list that nobody rated
            (default: items are exactly the rated movies, as trainers need).
        verify: check the files against a ``SHA256SUMS`` in the folder when there is one.

    Returns:
        Interactions with ``rating`` float32 (0.5-5 stars; 1-5 for ml-100k/ml-1m), ``timestamp`` int64
        Unix seconds, ``user_ids`` = the int64 ``userId`` values sorted, ``item_ids`` = the int64
        ``movieId`` values sorted, and ``items`` (indexed by movieId, every movie of the movie list):
        ``title`` str, ``genres`` list[str] ("(no genres listed)" -> []), ``tags`` list[str] (distinct
        lower-cased tags from tags.csv, most applied first; [] where the set has no tags), ``year``
        Int64 (from the title, <NA> when absent).

    Raises:
        InputError: unknown ``name``.
        DataNotFoundError: no local copy and the download is disabled or failed (offline); or a local
            folder lacks a required file. The message says how to point at a local copy.
        DataError: checksum mismatch (local SHA256SUMS or download), empty or malformed file.
    """
    spec = _spec(name)
    folder, looked = find_local_movielens(name, data_dir, cache_dir)
    if folder is None:
        hint = _HINT.format(name=name)
        if not download:
            raise DataNotFoundError(f"MovieLens {name} not found (looked in: {', '.join(looked)}) and "
                                    f"download=False: {hint}")
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        try:
            folder = _fetch(name, cache, progress=progress)
        except DataNotFoundError as e:
            raise DataNotFoundError(f"{e} (looked in: {', '.join(looked)})") from None
        except PermissionError as e:
            raise DataNotFoundError(f"cannot write the download cache {cache} ({e}): set ANNREC_CACHE_DIR "
                                    f"to a writable folder, or {hint}") from None
    log.debug("loading %s from %s (%s)", name, folder, spec["format"])
    return parse_movielens_folder(folder, name, include_unrated_items=include_unrated_items, verify=verify)
