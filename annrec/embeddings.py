"""The Embeddings artifact: the hand-off between a trainer and the index layer.

Folder layout (``DESIGN.md``, "Artifacts")::

    vectors.npy      float32 (n_items, dim)  item vectors, row i belongs to ids[i]
    ids.json         external item ids in row order (ints or strings)
    queries.npy      optional float32 (n_users, dim): query-side vectors (users, for CF models)
    query_ids.json   optional external query ids in row order
    items.json       optional item metadata {id: {"title": ..., ...}} for display and serving
    seen.npz         optional scipy CSR (n_queries, n_items): the training interactions of each query
                     (user), so recommendations can exclude what a user has already seen
    extra/           optional trainer-specific files (e.g. weights of a sequence encoder)
    manifest.json    kind, format_version, trainer, params, dataset, data hash, metric, dim,
                     quality figures, library versions, creation time

The folder is written to a temporary sibling and renamed into place (:func:`annrec._io.atomic_dir`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annrec._io import atomic_dir, write_json
from annrec._validate import as_matrix, check_metric, normalize_ids
from annrec.errors import ArtifactError, DataNotFoundError, InputError, UnknownIdError

FORMAT_VERSION = 1
KIND = "annrec.embeddings"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact (for the manifest)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("annrec", "numpy", "torch", "faiss-cpu", "faiss-gpu", "hnswlib", "implicit", "gensim",
                 "sentence-transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class Embeddings:
    """Item vectors (and optionally query vectors) with their ids and provenance.

    Attributes:
        vectors: float32 ``(n_items, dim)``.
        ids: external item ids, ``(n_items,)``, int64 (non-negative) or object array of str.
        metric: ``"ip"`` (maximum inner product search), ``"cosine"`` or ``"l2"``.
        queries: optional float32 ``(n_queries, dim)`` query-side vectors (users for CF models).
        query_ids: external ids of ``queries`` rows.
        items: optional metadata per item id (e.g. ``{"title": ..., "genres": [...]}``).
        manifest: trainer, params, dataset, data hash, quality figures (free-form, JSON-serialisable).
        extra: trainer-specific files, ``{relative name: bytes}``, stored under ``extra/``.
        seen: optional ``scipy.sparse.csr_matrix`` ``(n_queries, n_items)``; non-zeros mark the items each
            query (user) interacted with in training (rows follow ``query_ids``, columns ``ids``).
        mapped: ``vectors`` is a read-only memory map of a saved artifact (:meth:`load` with ``mmap=True``):
            its shape and dtype are checked, its values were checked when it was written, so they are not
            read (pages load when used, and are shared with every process mapping the same file).

    Raises:
        InputError: on construction, when shapes, dtypes, ids or the metric are inconsistent.
    """

    vectors: np.ndarray
    ids: np.ndarray
    metric: str
    queries: np.ndarray | None = None
    query_ids: np.ndarray | None = None
    items: dict[Any, dict] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, bytes] = field(default_factory=dict)
    seen: Any = None
    mapped: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_metric(self.metric)
        v = self.vectors
        if not (self.mapped and isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim == 2
                and len(v) and v.flags.c_contiguous):
            self.vectors = as_matrix(v, name="item vectors")
        self.ids = normalize_ids(self.ids, "item ids")
        if len(self.ids) != len(self.vectors):
            raise InputError(f"{len(self.ids)} item ids for {len(self.vectors)} item vectors: "
                             f"give exactly one id per row")
        if (self.queries is None) != (self.query_ids is None):
            raise InputError("queries and query_ids go together: give both or neither")
        if self.queries is not None:
            self.queries = as_matrix(self.queries, dim=self.dim, name="query vectors")
            self.query_ids = normalize_ids(self.query_ids, "query ids")
            if len(self.query_ids) != len(self.queries):
                raise InputError(f"{len(self.query_ids)} query ids for {len(self.queries)} query vectors")
        if self.seen is not None:
            import scipy.sparse as sp

            self.seen = sp.csr_matrix(self.seen)
            expected = (0 if self.queries is None else len(self.queries), len(self))
            if self.seen.shape != expected:
                raise InputError(f"seen matrix has shape {self.seen.shape}; expected (n_queries, n_items) = {expected}")
        self._row: dict | None = None
        self._qrow: dict | None = None

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def row_of(self, item_id) -> int:
        """Row of an external item id; raises :class:`UnknownIdError` if unknown."""
        if self._row is None:
            self._row = {v: i for i, v in enumerate(self.ids.tolist())}
        try:
            return self._row[_coerce_id(item_id, self.ids)]
        except KeyError:
            raise UnknownIdError(f"unknown item id {item_id!r}: it is not among the {len(self)} items "
                                 f"of this model") from None

    def query_row_of(self, query_id) -> int:
        """Row of an external query (user) id; raises :class:`UnknownIdError` if unknown or absent."""
        if self.queries is None:
            raise UnknownIdError("this model has no user (query) vectors: use similar items instead")
        if self._qrow is None:
            self._qrow = {v: i for i, v in enumerate(self.query_ids.tolist())}
        try:
            return self._qrow[_coerce_id(query_id, self.query_ids)]
        except KeyError:
            raise UnknownIdError(f"unknown user id {query_id!r}: it is not among the "
                                 f"{len(self.query_ids)} users of this model") from None

    def seen_ids(self, query_id) -> np.ndarray:
        """External ids of the items a query (user) interacted with in training (empty if unknown)."""
        if self.seen is None:
            return self.ids[:0]
        r = self.query_row_of(query_id)
        return self.ids[self.seen.indices[self.seen.indptr[r]:self.seen.indptr[r + 1]]]

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the artifact folder atomically; returns its path.

        Raises:
            InputError: ``path`` is a file or a folder that is not an Embeddings artifact (unless ``force``,
                which moves that folder aside; see :func:`annrec._io.check_output_dir`).
        """
        path = Path(path)
        manifest = dict(self.manifest)
        manifest.update(kind=KIND, format_version=FORMAT_VERSION, metric=self.metric, dim=self.dim,
                        count=len(self), n_queries=0 if self.queries is None else len(self.queries))
        manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest.setdefault("versions", library_versions())
        with atomic_dir(path, KIND, force=force) as tmp:
            np.save(tmp / "vectors.npy", self.vectors)
            write_json(tmp / "ids.json", self.ids.tolist())
            if self.queries is not None:
                np.save(tmp / "queries.npy", self.queries)
                write_json(tmp / "query_ids.json", self.query_ids.tolist())
            if self.seen is not None:
                import scipy.sparse as sp

                sp.save_npz(tmp / "seen.npz", self.seen)
            if self.items is not None:
                write_json(tmp / "items.json", {str(k): v for k, v in self.items.items()})
            for name, blob in self.extra.items():
                target = (tmp / "extra" / name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)
            write_json(tmp / "manifest.json", manifest)
        self.manifest = manifest
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False) -> Embeddings:
        """Read an artifact folder written by :meth:`save`; ``mmap=True`` maps the item vectors read-only
        instead of reading them (:attr:`mapped`: what a server that searches an index, not the vectors, wants).

        Raises:
            DataNotFoundError: the folder or a required file is missing.
            ArtifactError: it is not an embeddings artifact, or of a newer format version.
        """
        path = Path(path)
        manifest = read_manifest(path, KIND)
        try:
            vectors = np.load(path / "vectors.npy", mmap_mode="r" if mmap else None)
            if mmap:
                vectors = np.asarray(vectors)  # a plain ndarray view of the map (the map stays open through it)
            ids = json.loads((path / "ids.json").read_text())
            queries = query_ids = None
            if (path / "queries.npy").exists():
                queries = np.load(path / "queries.npy")
                query_ids = json.loads((path / "query_ids.json").read_text())
            items = None
            if (path / "items.json").exists():
                raw = json.loads((path / "items.json").read_text())
                int_ids = np.asarray(ids).dtype.kind in "iu"
                items = {(int(k) if int_ids else k): v for k, v in raw.items()}
            seen = None
            if (path / "seen.npz").exists():
                import scipy.sparse as sp

                seen = sp.load_npz(path / "seen.npz")
            extra = {}
            if (path / "extra").is_dir():
                for f in sorted((path / "extra").rglob("*")):
                    if f.is_file():
                        extra[str(f.relative_to(path / "extra"))] = f.read_bytes()
        except FileNotFoundError as e:
            raise ArtifactError(f"embeddings folder {path} is incomplete ({e.filename} missing): "
                                f"re-run the trainer to write it again") from None
        except (ValueError, json.JSONDecodeError) as e:
            raise ArtifactError(f"embeddings folder {path} is corrupt ({e}): re-run the trainer") from None
        return cls(vectors=vectors, ids=ids, metric=manifest["metric"], queries=queries, query_ids=query_ids,
                   items=items, manifest=manifest, extra=extra, seen=seen, mapped=mmap and vectors.dtype == np.float32)


def read_manifest(path: str | os.PathLike, kind: str, max_version: int | None = None) -> dict[str, Any]:
    """Read ``manifest.json`` from an artifact folder and check its kind and format version.

    Raises:
        DataNotFoundError: no folder or no manifest.
        ArtifactError: malformed manifest, another kind of artifact, or a newer format version.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataNotFoundError(f"no artifact folder at {path}: check the path (train or build it first)")
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise ArtifactError(f"{path} has no manifest.json: it is not an annrec artifact or was not "
                            f"completely written; build it again")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mpath} is not valid JSON ({e}): build the artifact again") from None
    if manifest.get("kind") != kind:
        raise ArtifactError(f"{path} holds a {manifest.get('kind')!r} artifact, not {kind!r}: "
                            f"pass the right folder")
    top = FORMAT_VERSION if max_version is None else max_version
    if int(manifest.get("format_version", 0)) > top:
        raise ArtifactError(f"{path} was written in format version {manifest['format_version']}, newer than "
                            f"this annrec understands ({top}): upgrade annrec")
    return manifest


def _coerce_id(value, ids: np.ndarray):
    """Map a user-supplied id (often a string from a CLI or URL) onto the id type of ``ids``."""
    if ids.dtype.kind in "iu":
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return value
    return str(value)
