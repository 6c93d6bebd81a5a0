"""``TextTrainer``: the trainer contract over the text encoder."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from annrec.embeddings import Embeddings
from annrec.errors import DataError, InputError
from annrec.train.base import RecommendFn, Trainer, check_num_threads, renamed_params, torch_threads
from annrec.train.text.encoder import TextEncoder
from annrec.train.text.items import (DEFAULT_FIELDS, DEFAULT_MAX_LIST_VALUES, _is_missing, _items_of, _parse_fields,
                                     _texts_hash,
                                     build_item_texts)
from annrec.train.text.model import DEFAULT_MODEL

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
        executor: ``"local"`` (default) encodes in this process; ``"ray"`` encodes on Ray Data, one model per
            actor (:func:`annrec.train.text.ray_encode.encode_on_ray`; ``num_threads`` torch threads each), on a
            local Ray or the cluster at ``ray_address``. The vectors are the same either way.

    Attributes:
        encoder_: the :class:`TextEncoder` used by the last fit.
        texts_: the item texts of the last fit (Series indexed by item id, skipped items excluded).
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, fields: str | Sequence[str] = DEFAULT_FIELDS,
                 batch_size: int = 64, device: str | None = None, normalize: bool = True,
                 cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                 max_seq_length: int | None = None, max_list_values: int | None = DEFAULT_MAX_LIST_VALUES,
                 on_empty: str = "error", num_threads: int | None = None, show_progress: bool | None = None,
                 executor: str = "local", ray_address: str | None = None, **deprecated: Any) -> None:
        show_progress = renamed_params("TextTrainer", deprecated, {"show_progress_bar": "show_progress"},
                                       {"show_progress": show_progress})["show_progress"]
        if on_empty not in ("error", "skip"):
            raise InputError(f"on_empty must be 'error' or 'skip'; got {on_empty!r}")
        if executor not in ("local", "ray"):
            raise InputError(f"executor must be 'local' or 'ray'; got {executor!r}")
        self.executor = executor
        self.ray_address = ray_address
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

    def _encoder_kwargs(self) -> dict[str, Any]:
        return dict(model=self.model, batch_size=self.batch_size, device=self.device, normalize=self.normalize,
                    cache_dir=self.cache_dir, use_cache=self.use_cache, max_seq_length=self.max_seq_length)

    def _encoder(self, fresh: bool = False) -> TextEncoder:
        if self.encoder_ is None or fresh:  # the loaded model itself is shared per process and device
            self.encoder_ = TextEncoder(**self._encoder_kwargs(), show_progress_bar=self.show_progress)
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
        vectors, stats = self._encode(enc, texts.tolist())
        seconds = time.perf_counter() - t0
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

    def _encode(self, enc: TextEncoder, texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
        """``(vectors, counts)`` of ``texts``: in this process with ``enc``, or on Ray Data (``executor``)."""
        if self.executor == "ray":
            from annrec.train.text.ray_encode import encode_on_ray

            threads = self.num_threads if self.num_threads is not None else 1
            return encode_on_ray(texts, self._encoder_kwargs(), num_threads=threads, address=self.ray_address)
        with torch_threads(self.num_threads):
            vectors = enc.encode(texts)
        return vectors, dict(enc.last_stats)

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
