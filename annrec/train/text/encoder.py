"""The text encoder (sentence-transformers ``encode``) over the vector cache, and the query encoder of an
artifact."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from annrec.embeddings import KIND as EMBEDDINGS_KIND
from annrec.embeddings import Embeddings, read_manifest
from annrec.errors import ArtifactError, InputError
from annrec.train.text import cache as _cache_module
from annrec.train.text.cache import TextVectorCache
from annrec.train.text.model import (DEFAULT_MODEL, _default_device, _load_sentence_transformer, model_fingerprint,
                                     resolve_model)


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
        step = max(self.batch_size, _cache_module.CACHE_CHUNK)
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
