"""Checksums and downloads of data-set archives: ``SHA256SUMS`` verification (``sha256sum`` format), a
streamed download that hashes as it writes, and the ``<url>.md5`` convention of GroupLens.

Used by :mod:`annrec.data.movielens`; the standard library only (``hashlib``, ``urllib``).
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from pathlib import Path

from annrec.errors import DataError

__all__ = ["file_digest", "verify_sha256sums", "open_url", "expected_md5_from_server", "download_file"]


# ---------------------------------------------------------------------------------------------- checksums
def file_digest(path: Path, algo: str = "sha256") -> str:
    """The hex digest of a file, read in 1 MiB chunks (``algo``: a :func:`hashlib.new` name)."""
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
        actual = file_digest(path)
        if actual != expected:
            raise DataError(f"checksum mismatch for {path}: SHA-256 is {actual} but {sums} says {expected}; "
                            f"the file is corrupt or was modified: restore it from the official zip "
                            f"(or delete the folder to download it again)")
        checked.append(fname)
    return checked


# ---------------------------------------------------------------------------------------------- download
def open_url(url: str, timeout: float = 60.0):
    """``urllib.request.urlopen`` with annrec's User-Agent; ``timeout`` in seconds."""
    req = urllib.request.Request(url, headers={"User-Agent": "annrec (python urllib)"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (https/file URLs of known data sets)


def expected_md5_from_server(url: str) -> str:
    """Fetch ``<url>.md5`` (GroupLens publishes one next to every zip) and return the hex digest."""
    with open_url(url + ".md5", timeout=30.0) as r:
        text = r.read(4096).decode("ascii", "replace")
    m = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    if not m:
        raise DataError(f"{url}.md5 does not contain an MD5 digest ({text[:80]!r}); cannot verify the "
                        f"download: download the zip yourself, unzip it and set ANNREC_DATA_DIR")
    return m.group(1).lower()


def download_file(url: str, dest: Path, progress: bool = True) -> dict[str, str]:
    """Stream ``url`` into ``dest`` (a progress bar with ``progress`` where tqdm is installed); return its
    ``sha256`` and ``md5`` hex digests.

    Raises:
        urllib.error.URLError, OSError, TimeoutError: the download failed (the caller says what to do).
    """
    sha, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 (md5 only to compare with GroupLens' .md5)
    with open_url(url) as r, open(dest, "wb") as out:
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
