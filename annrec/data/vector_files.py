"""Vector files: TEXMEX ``.fvecs`` / ``.ivecs`` / ``.bvecs`` (the SIFT/GIST format of
http://corpus-texmex.irisa.fr/), IDX (MNIST / Fashion-MNIST, optionally gzipped) and ``.npy``. Each reader checks the
file against its format and raises :class:`~annrec.errors.DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from annrec.errors import DataError, DataNotFoundError, InputError

_VECS = {".fvecs": np.dtype("<f4"), ".ivecs": np.dtype("<i4"), ".bvecs": np.dtype("u1")}


def read_vecs(path: str | os.PathLike) -> np.ndarray:
    """Read a TEXMEX ``.fvecs`` (float32), ``.ivecs`` (int32) or ``.bvecs`` (uint8) file.

    Each record is a little-endian int32 dimension ``d`` followed by ``d`` values
    (http://corpus-texmex.irisa.fr/, the SIFT1M / GIST1M format).

    Returns:
        ``(n, d)`` array of float32 / int32 / uint8.

    Raises:
        DataNotFoundError: no such file. DataError: empty, truncated, or records of differing dimension.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no file at {path}: check the path")
    dtype = _VECS.get(path.suffix.lower())
    if dtype is None:
        raise DataError(f"{path}: unknown vector file format {path.suffix!r}: use .fvecs, .ivecs or .bvecs")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size < 4:
        raise DataError(f"{path} is empty or truncated (fewer than 4 bytes): download it again")
    d = int(raw[:4].view("<i4")[0])
    if d <= 0 or d > 1_000_000:
        raise DataError(f"{path} does not start with a plausible dimension ({d}): it is not a "
                        f"{path.suffix} file")
    rec = 4 + d * dtype.itemsize
    if raw.size % rec:
        raise DataError(f"{path} is truncated or corrupt: {raw.size} bytes is not a multiple of the "
                        f"{rec}-byte record of dimension {d}; download it again")
    n = raw.size // rec
    recs = raw.reshape(n, rec)
    dims = recs[:, :4].copy().view("<i4")[:, 0]
    if (dims != d).any():
        bad = int(np.argmax(dims != d))
        raise DataError(f"{path}: record {bad} has dimension {dims[bad]}, not {d}: the file is corrupt")
    return np.ascontiguousarray(recs[:, 4:]).view(dtype).reshape(n, d).astype(dtype.newbyteorder("="))


def write_vecs(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` ``(n, d)`` as ``.fvecs`` / ``.ivecs`` / ``.bvecs`` (chosen by the suffix), atomically."""
    path = Path(path)
    dtype = _VECS.get(path.suffix.lower())
    if dtype is None:
        raise InputError(f"{path}: unknown vector file format {path.suffix!r}: use .fvecs, .ivecs or .bvecs")
    a = np.asarray(array)
    if a.ndim != 2:
        raise InputError(f"expected a 2-d array (n, d); got shape {a.shape}")
    n, d = a.shape
    rec = np.empty((n, 4 + d * dtype.itemsize), dtype=np.uint8)
    rec[:, :4] = np.frombuffer(struct.pack("<i", d), dtype=np.uint8)
    rec[:, 4:] = np.ascontiguousarray(a.astype(dtype)).view(np.uint8).reshape(n, -1)
    _atomic_bytes(path, rec.tobytes())
    return path


def _atomic_bytes(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- IDX (MNIST / Fashion-MNIST)
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format, optionally gzip-compressed) into an array.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then big-endian int32 sizes.

    Raises:
        DataNotFoundError: no such file. DataError: bad magic number or truncated data.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no IDX file at {path}: install the Debian package dataset-fashion-mnist "
                                f"or download the file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            blob = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} cannot be decompressed ({e}): the file is truncated or corrupt") from None
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in types:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = blob[3]
    shape = struct.unpack(f">{ndim}i", blob[4:4 + 4 * ndim])
    dtype = np.dtype(types[blob[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    data = blob[4 + 4 * ndim:]
    if len(data) != need:
        raise DataError(f"{path} is truncated or corrupt: {len(data)} data bytes for shape {shape} "
                        f"(expected {need})")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataNotFoundError(f"no file at {path}: check the path")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .npy file ({e}): it is truncated or of another format") from None


def read_vectors(path: str | os.PathLike) -> np.ndarray:
    """Read a matrix from ``.npy``, ``.fvecs``, ``.ivecs`` or ``.bvecs``.

    Raises:
        DataNotFoundError: no such file. DataError: unknown suffix, truncated or unreadable file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path)
    if suffix in _VECS:
        return read_vecs(path)
    if not path.exists():
        raise DataNotFoundError(f"no file at {path}: check the path")
    raise DataError(f"{path}: unknown vector file format {suffix or '(no suffix)'!r}: use .npy, .fvecs, .ivecs "
                    f"or .bvecs")
