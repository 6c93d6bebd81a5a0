"""Shard builds on Ray Data: ``groupby(shard).map_groups`` builds each shard's index folder in a Ray task.

The vectors, ids and metadata go to Ray's object store once (``ray.put``); the data set itself holds only
row numbers and shard numbers, so each group task reads its rows of the vectors zero-copy. Every task
writes its folder under the build's temporary folder, which must be on storage every node can write (one
machine, or a shared file system on a cluster); :func:`annrec.index.sharded.build_sharded` then writes the
sharded manifest and moves the whole folder into place as the in-process build does.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np


def build_shards_on_ray(x: np.ndarray, ext: np.ndarray, owner: np.ndarray, metric: str, folder: Path,
                        backend: str, params: dict[str, Any], source: dict | None, items: dict | None,
                        address: str | None = None) -> list[tuple[str, int, dict[str, Any], str, int]]:
    """Build shard ``s`` over the rows with ``owner == s`` into ``folder/shard-<s:03d>``, one Ray Data group
    task per shard.

    Args:
        x: float32 ``(n, dim)`` vectors; ext: ``(n,)`` their external ids; owner: int ``(n,)`` shard numbers.
        address: the Ray cluster to join (``None``: a local Ray on 127.0.0.1, shut down afterwards).

    Returns:
        ``(folder name, item count, build parameters, metric, dim)`` per shard, in shard order.

    Raises:
        ImportError: Ray is not installed (``pip install -e ".[ray]"``).
        InputError: bad index parameters (raised by the first shard's task, with its message).
    """
    import pyarrow as pa

    from annrec.index.ray_shards import ray_session

    with ray_session(address) as ray:
        refs = (ray.put(x), ray.put(ext), ray.put(items or {}))
        task = functools.partial(_build_group, refs, metric, str(folder), backend, params, source)
        ds = ray.data.from_arrow(pa.table({"row": np.arange(len(ext), dtype=np.int64),
                                           "shard": np.asarray(owner, dtype=np.int64)}))
        rows = ds.groupby("shard").map_groups(task, batch_format="numpy").take_all()
    rows.sort(key=lambda r: int(r["shard"]))
    return [(str(r["name"]), int(r["count"]), json.loads(str(r["params"])), str(r["metric"]), int(r["dim"]))
            for r in rows]


def _build_group(refs, metric, folder, backend, params, source, group: dict[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
    """The group function: build and save one shard's index (its rows of the vectors in the object store)."""
    import ray

    from annrec.index import build_index

    x, ext, items = (ray.get(r) for r in refs)
    rows = np.sort(group["row"])
    s = int(group["shard"][0])
    index = build_index(x[rows], ext[rows], metric, backend=backend, **params)
    index.source = dict(source or {})
    if items:
        index.items = {i: items[i] for i in ext[rows].tolist() if i in items}
    name = f"shard-{s:03d}"
    index.save(Path(folder) / name)
    kept = {k: v for k, v in index.params.items() if k != "mips_max_norm"}
    return {"shard": np.array([s]), "name": np.array([name]), "count": np.array([len(index)]),
            "params": np.array([json.dumps(kept, default=str)]), "metric": np.array([index.metric]),
            "dim": np.array([index.dim])}
