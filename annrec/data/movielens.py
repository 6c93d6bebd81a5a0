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

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from annrec.data.download import download_file, expected_md5_from_server, file_digest, verify_sha256sums
from annrec.data.interactions import Interactions
from annrec.data.movielens_files import PARSERS
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

_HINT = "set ANNREC_DATA_DIR=/path/to/folder/containing/{name} or pass --data-dir"


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
            digests = download_file(url, tmp_zip, progress)
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
                expected = expected_md5_from_server(url)
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
        lines = [f"{file_digest(f)}  {f.name}" for f in sorted(src.iterdir())
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
    ratings, movies = PARSERS[spec["format"]](folder)
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
