"""The index files on disk, read back with every consistency check.

The files of one snapshot (:mod:`annrec.index.storage` keeps versioned snapshots and the write-ahead log
around them; a folder of these files alone is the earlier flat format, which still loads)::

    manifest.json   kind "annrec.index", format_version, backend, metric, dim, count, params, source, seq
    index.faiss | index.hnsw   the backend's own file (faiss.write_index / hnswlib save_index)
    ids.json        external id of every label (deleted ones included)
    deleted.npy     bool (n_labels,) deletion marks
    vectors.npy     float32 (n_labels, dim) the stored vectors (normalised for cosine)
    items.json      optional metadata per external id (e.g. titles)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from annrec._io import write_json
from annrec._validate import normalize_ids
from annrec.embeddings import read_manifest
from annrec.errors import ArtifactError

if TYPE_CHECKING:
    from annrec.index.base import Index

KIND = "annrec.index"


def write_folder(index: Index, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``index`` to the index folder ``path`` (:func:`annrec.index.storage.save`: a new folder is written
    whole and renamed into place; an existing index folder gets a new snapshot and a pointer switch); returns
    the path.

    Raises:
        InputError: ``path`` is a file or a folder that is not an index artifact (unless ``force``, which moves
            that folder aside; see :func:`annrec._io.check_output_dir`).
    """
    from annrec.index.storage import save

    return save(index, path, force=force)


def write_files(index: Index, folder: Path, *, seq: int = 0) -> None:
    """Write the files of the flat format (module docstring) into the existing ``folder``; the manifest records
    ``seq``, the last write-ahead-log entry the files hold. The caller holds ``index._write_lock`` (or works on a
    frozen copy of the process) and fsyncs."""
    index._backend_save(folder / index.file_name)
    write_json(folder / "ids.json", index._ext.tolist())
    np.save(folder / "deleted.npy", index._deleted)
    np.save(folder / "vectors.npy", index._vectors)
    if index.items:
        write_json(folder / "items.json", {str(k): v for k, v in index.items.items()})
    manifest = index.manifest()
    manifest["seq"] = int(seq)
    write_json(folder / "manifest.json", manifest)


def read_folder(cls: type[Index], path: str | os.PathLike) -> Index:
    """Read an index folder written by :func:`write_folder` into a new ``cls`` instance: its current snapshot (or
    the flat files of the earlier format), then the write-ahead-log entries after the snapshot's ``seq``.

    Raises:
        DataNotFoundError: no such folder.
        ArtifactError: not an index, another backend's folder, a newer format, missing/corrupt files, or a log
            trimmed past the snapshot.
    """
    import contextlib

    from annrec.index import storage, wal

    top = Path(path)
    with storage.reading(top) if (top / storage.CURRENT).exists() else contextlib.nullcontext():
        index = _read_files(cls, storage.snapshot_folder(top))
    index.applied_seq = wal.replay(index, top, index.snapshot_seq)
    return index


def _read_files(cls: type[Index], path: Path) -> Index:
    import json

    manifest = read_manifest(path, KIND)
    if manifest.get("backend") != cls.backend:
        raise ArtifactError(f"{path} holds a {manifest.get('backend')!r} index, not a {cls.backend!r} one: "
                            f"load it with annrec.index.load_index, which picks the backend")
    try:
        index = cls(manifest["dim"], manifest["metric"], **manifest.get("params", {}))
        ext = json.loads((path / "ids.json").read_text())
        index._deleted = np.load(path / "deleted.npy")
        index._n_deleted = int(index._deleted.sum())
        # ids.json keeps the ids of deleted labels too, so an upserted id appears twice: only the live
        # ids must be unique (checked by normalize_ids); the full array keeps the same id type.
        if len(index._deleted) != len(ext):
            raise ArtifactError(f"{path}: deleted.npy has {len(index._deleted)} marks for {len(ext)} ids in "
                                f"ids.json: rebuild the index with `annrec index build`")
        if not ext:
            index._ext = np.empty(0, dtype=np.int64)
        else:
            kinds = normalize_ids(list(dict.fromkeys(ext)))  # id type checks, repeats allowed
            live = [e for e, d in zip(ext, index._deleted.tolist()) if not d]
            if live:
                normalize_ids(live)  # live ids are unique
            index._ext = np.asarray(ext, dtype=np.int64 if kinds.dtype.kind in "iu" else object)
        # mapped read-only: the library holds the vectors it searches; these pages load only where exact search,
        # filter views or get_vector read them, and are shared by every worker (the first write copies them)
        index._vec_buf = np.asarray(np.load(path / "vectors.npy", mmap_mode="r"))
        _check_consistent(path, index, manifest)
        index._backend_load(path / index.file_name, len(index._ext))
        index._backend_verify(path / index.file_name)
    except FileNotFoundError as e:
        raise ArtifactError(f"index folder {path} is incomplete ({Path(e.filename).name} missing): "
                            f"rebuild it with `annrec index build`") from None
    except (KeyError, ValueError, RuntimeError) as e:
        if isinstance(e, ArtifactError):
            raise
        raise ArtifactError(f"index folder {path} is corrupt ({e}): rebuild it with `annrec index build`") from None
    int_ids = index._ext.dtype.kind in "iu"
    index._ext_padded = np.concatenate([index._ext, np.array([-1] if int_ids else [None],
                                                              dtype=index._ext.dtype if int_ids else object)])
    index._identity_ids = int_ids and bool((index._ext == np.arange(len(index._ext))).all())
    index._label = {e: i for i, (e, d) in enumerate(zip(index._ext.tolist(), index._deleted.tolist())) if not d}
    if (path / "items.json").exists():
        try:
            raw = json.loads((path / "items.json").read_text())
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object of id -> metadata")
        except (ValueError, OSError) as e:
            raise ArtifactError(f"{path / 'items.json'} is not valid item metadata ({e}): fix or delete the file, "
                                f"or rebuild the index") from None
        index.items = {(int(k) if int_ids else k): v for k, v in raw.items()}
    index.source = manifest.get("source", {})
    index.build_seconds = manifest.get("build_seconds")
    index.snapshot_seq = int(manifest.get("seq", 0))
    return index


def _check_consistent(path: Path, index: Index, manifest: dict) -> None:
    """Every file of the folder agrees on the number of labels, the dimension and the id type."""
    fix = "rebuild the index with `annrec index build`"
    n = len(index._ext)
    if index._deleted.ndim != 1 or len(index._deleted) != n:
        raise ArtifactError(f"{path}: deleted.npy has {len(index._deleted)} marks for {n} ids in ids.json: {fix}")
    vec = index._vec_buf
    if vec.ndim != 2 or vec.shape[1] != index.dim:
        raise ArtifactError(f"{path}: vectors.npy has shape {vec.shape} but the manifest says dim {index.dim}: {fix}")
    if len(vec) != n:
        raise ArtifactError(f"{path}: vectors.npy has {len(vec)} rows for {n} ids in ids.json: {fix}")
    count = manifest.get("count")
    if count is not None and int(count) != n - int(index._deleted.sum()):
        raise ArtifactError(f"{path}: the manifest counts {count} items but ids.json and deleted.npy hold "
                            f"{n - int(index._deleted.sum())}: {fix}")
