"""Small graphs and interaction logs shared by the DeepWalk tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annrec.data import Interactions
from annrec.data.graph import Graph

REPO = Path(__file__).resolve().parents[1]


def two_cliques(n: int = 8, bridge: bool = True) -> Graph:
    """Two cliques of ``n`` nodes (ids 0..n-1 and 100..100+n-1) joined by one edge (0 - 100)."""
    a = list(range(n))
    b = list(range(100, 100 + n))
    src, dst = [], []
    for group in (a, b):
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                src.append(group[i])
                dst.append(group[j])
    if bridge:
        src.append(0)
        dst.append(100)
    return Graph.from_edges(np.asarray(src), np.asarray(dst))


def tiny_interactions() -> Interactions:
    """3 users, 5 items; user 10's history is out of file order (timestamps decide)."""
    users = [10, 10, 10, 20, 20, 20, 30]
    items = [1, 2, 3, 2, 4, 3, 5]
    ts = [300, 100, 200, 1, 2, 3, 5]
    meta = pd.DataFrame({"title": ["A", "B", "C", "D", "E"],
                         "genres": [["x"], ["y"], ["x", "y"], ["z"], []]},
                        index=pd.Index([1, 2, 3, 4, 5], name="item_id"))
    return Interactions.from_arrays(users, items, None, ts, name="tiny", items_meta=meta)


def real_data_root() -> Path | None:
    for cand in (os.environ.get("ANNREC_DATA_DIR"),):
        if cand and (Path(cand) / "ml-latest-small" / "ratings.csv").is_file():
            return Path(cand)
    return None


def require_real_data() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("ml-latest-small not found: set ANNREC_DATA_DIR=/path/to/folder/containing/ml-latest-small")
    return root
