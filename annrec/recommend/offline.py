"""Offline top-k for every user (``annrec recommend-all``), in this process or on Ray Data.

The output is a Parquet dataset folder (readable by pandas, pyarrow, Spark, DuckDB and Ray Data alike)::

    <out>/manifest.json      kind "annrec.recommendations", k, users, exclude_seen, filter, the embeddings and
                             index folders, the backend, seconds
    <out>/part-*.parquet     one row per (user, rank): user_id, rank (1 = best), item_id, score (float32)

Every user's list is :meth:`annrec.recommend.Recommender.recommend_batch` — the served code path — so the
offline lists are the lists the HTTP API answers. ``backend="ray"`` runs the same batches with
``ray.data.Dataset.map_batches`` over actors that each load the Recommender once (Ray Data's pattern for
batch inference; the folders must be readable at the same path on every node).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from annrec.errors import InputError

KIND = "annrec.recommendations"


class _Batches:
    """Loads the Recommender once (a Ray Data actor, or this process) and answers batches of user ids."""

    def __init__(self, embeddings: str, index: str | None, k: int, exclude_seen: bool, filter: Any,
                 params: dict | None) -> None:
        from annrec.embeddings import Embeddings
        from annrec.index import load_index
        from annrec.recommend import Recommender

        emb = Embeddings.load(embeddings)
        self.rec = Recommender(emb, load_index(index) if index else None)
        self.k, self.exclude_seen, self.filter, self.params = k, exclude_seen, filter, params

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        users = batch["user_id"].tolist()
        lists = self.rec.recommend_batch(users, self.k, exclude_seen=self.exclude_seen, filter=self.filter,
                                         params=self.params, include_metadata=False)
        n = [len(r) for r in lists]
        return {"user_id": np.repeat(np.asarray(users, dtype=batch["user_id"].dtype), n),
                "rank": np.concatenate([np.arange(1, m + 1, dtype=np.int32) for m in n]) if n else
                np.empty(0, dtype=np.int32),
                "item_id": np.asarray([r.item_id for rl in lists for r in rl]),
                "score": np.asarray([r.score for rl in lists for r in rl], dtype=np.float32)}


def recommend_all(embeddings: str | os.PathLike, out: str | os.PathLike, *, index: str | os.PathLike | None = None,
                  k: int = 10, exclude_seen: bool = True, filter: Any = None, params: dict | None = None,
                  batch_size: int = 512, backend: str = "local", ray_address: str | None = None,
                  force: bool = False) -> dict[str, Any]:
    """Write the top-``k`` of every user of ``embeddings`` (its ``query_ids``) to the Parquet folder ``out``.

    Args:
        embeddings / index: the folders (no index: exact search, as ``annrec recommend``).
        k: items per user (fewer where a filter or the exclusions leave fewer).
        exclude_seen: leave out each user's training items. filter: a payload filter on item metadata.
        batch_size: users per batch. backend: ``"local"`` or ``"ray"`` (Ray Data ``map_batches``).
        ray_address: the Ray cluster to join (``None``: a local Ray on 127.0.0.1).
        force: let ``out`` name a folder that is not a recommendations folder (moved aside, never deleted).

    Returns:
        The manifest written (users, rows, seconds, …).

    Raises:
        InputError: no user vectors, ``k`` <= 0, an unknown backend, ``out`` not writable; as
            :meth:`~annrec.recommend.Recommender.recommend` for a filter or parameters.
    """
    from annrec._io import atomic_dir, check_output_dir, write_json
    from annrec.embeddings import Embeddings

    if backend not in ("local", "ray"):
        raise InputError(f"unknown backend {backend!r}: use 'local' or 'ray'")
    if not isinstance(k, int) or k <= 0:
        raise InputError(f"k must be a positive integer; got {k!r}")
    check_output_dir(out, KIND, force=force)
    emb = Embeddings.load(embeddings)
    if emb.queries is None or emb.query_ids is None or not len(emb.query_ids):
        raise InputError(f"{embeddings} has no user vectors: recommend-all needs a collaborative-filtering model "
                         f"(`annrec train mf` / `als`)")
    users = np.asarray(emb.query_ids)
    args = (str(Path(embeddings).resolve()), str(Path(index).resolve()) if index else None, k, exclude_seen,
            filter, params)
    t0 = time.perf_counter()
    with atomic_dir(out, KIND, force=force) as tmp:
        if backend == "local":
            rows = _local(args, users, batch_size, tmp)
        else:
            rows = _ray(args, users, batch_size, tmp, ray_address)
        manifest = {"kind": KIND, "format_version": 1, "k": k, "users": int(len(users)), "rows": int(rows),
                    "exclude_seen": exclude_seen, "filter": filter, "params": params or {},
                    "embeddings": args[0], "index": args[1], "backend": backend,
                    "columns": ["user_id", "rank", "item_id", "score"],
                    "seconds": round(time.perf_counter() - t0, 2),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _local(args: tuple, users: np.ndarray, batch_size: int, folder: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fn = _Batches(*args)
    writer = None
    rows = 0
    try:
        for start in range(0, len(users), batch_size):
            table = pa.table(fn({"user_id": users[start:start + batch_size]}))
            if writer is None:
                writer = pq.ParquetWriter(folder / "part-00000.parquet", table.schema)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def _ray(args: tuple, users: np.ndarray, batch_size: int, folder: Path, address: str | None) -> int:
    import pyarrow.parquet as pq

    from annrec.index.ray_shards import ray_session

    with ray_session(address) as ray:
        ds = ray.data.from_items([{"user_id": u} for u in users.tolist()])
        ds = ds.map_batches(_Batches, fn_constructor_args=args, batch_size=batch_size, batch_format="numpy",
                            concurrency=max(1, min(4, int(ray.available_resources().get("CPU", 1)))))
        ds.write_parquet(str(folder))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*.parquet"))


def read_recommendations(folder: str | os.PathLike):
    """The rows of a recommendations folder as a pandas DataFrame sorted by user and rank.

    Raises:
        DataNotFoundError / ArtifactError: not a recommendations folder.
    """
    import pyarrow.parquet as pq

    from annrec.embeddings import read_manifest

    read_manifest(folder, KIND)
    df = pq.read_table(sorted(str(p) for p in Path(folder).glob("*.parquet"))).to_pandas() \
        if any(Path(folder).glob("*.parquet")) else None
    if df is None:
        import pandas as pd

        return pd.DataFrame(columns=["user_id", "rank", "item_id", "score"])
    return df.sort_values(["user_id", "rank"], kind="stable").reset_index(drop=True)
