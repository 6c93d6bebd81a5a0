"""Batch text embedding on Ray Data: ``map_batches`` over a pool of actors that each load the
sentence-transformers model once (Ray Data's pattern for batch inference with a stateful model).

The texts are a data set of ``(row, text)``; every actor runs :class:`~annrec.train.text.encoder.TextEncoder`
with the trainer's settings (the same vector cache, which several processes may share) and returns the
vectors with their row numbers, so the result is in the input's order whatever order the batches finish in.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class _EncodeBatches:
    """The actor's callable: one :class:`TextEncoder` per actor, reused for every batch."""

    def __init__(self, encoder_kwargs: dict[str, Any], num_threads: int | None) -> None:
        from annrec.train.text.encoder import TextEncoder

        self.encoder = TextEncoder(**encoder_kwargs)
        self.num_threads = num_threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from annrec.train.base import torch_threads

        with torch_threads(self.num_threads):
            vectors = self.encoder.encode([str(t) for t in batch["text"]])
        stats = self.encoder.last_stats
        n = len(vectors)
        cached = np.zeros(n, dtype=np.int64)
        encoded = np.zeros(n, dtype=np.int64)
        if n:  # the batch's counts ride on its first row
            cached[0], encoded[0] = int(stats.get("n_cached", 0)), int(stats.get("n_encoded", 0))
        return {"row": batch["row"], "vector": np.asarray(vectors, dtype=np.float32), "n_cached": cached,
                "n_encoded": encoded}


def encode_on_ray(texts: list[str], encoder_kwargs: dict[str, Any], *, num_threads: int | None = 1,
                  batch_size: int = 512, concurrency: int | None = None, address: str | None = None
                  ) -> tuple[np.ndarray, dict[str, int]]:
    """Encode ``texts`` with ``concurrency`` Ray actors (default: one per CPU of the cluster, at most 8).

    Args:
        encoder_kwargs: :class:`~annrec.train.text.encoder.TextEncoder` arguments (model, batch_size, device,
            normalize, cache_dir, use_cache, max_seq_length).
        num_threads: torch CPU threads per actor (each actor reserves one Ray CPU).
        batch_size: texts per Ray Data batch (each is encoded in the model's own mini-batches).
        address: the Ray cluster to join (``None``: a local Ray on 127.0.0.1, shut down afterwards).

    Returns:
        ``(vectors float32 (len(texts), dim) in the order of texts, {"n_cached", "n_encoded"})``.

    Raises:
        ImportError: Ray is not installed (``pip install -e ".[ray]"``).
        DataNotFoundError: the model cannot be found (raised by the first actor, with its message).
    """
    import pyarrow as pa

    from annrec.index.ray_shards import ray_session

    vectors: np.ndarray | None = None
    stats = {"n_cached": 0, "n_encoded": 0}
    with ray_session(address) as ray:
        if concurrency is None:
            concurrency = max(1, min(8, int(ray.available_resources().get("CPU", 1))))
        ds = ray.data.from_arrow(pa.table({"row": np.arange(len(texts), dtype=np.int64), "text": texts}))
        out = ds.map_batches(_EncodeBatches, fn_constructor_args=(encoder_kwargs, num_threads),
                             batch_size=batch_size, batch_format="numpy", concurrency=concurrency, num_cpus=1)
        for batch in out.iter_batches(batch_format="numpy", batch_size=None):
            v = np.stack(batch["vector"]) if batch["vector"].dtype == object else batch["vector"]
            if vectors is None:
                vectors = np.empty((len(texts), v.shape[1]), dtype=np.float32)
            vectors[batch["row"]] = v
            stats["n_cached"] += int(batch["n_cached"].sum())
            stats["n_encoded"] += int(batch["n_encoded"].sum())
    if vectors is None:
        vectors = np.empty((0, 0), dtype=np.float32)
    return vectors, stats
