"""Data: interaction logs (:class:`Interactions`), MovieLens and generic CSV/Parquet loaders, splits, graphs.

Graphs (:class:`annrec.data.graph.Graph`, co-occurrence / bipartite builders, edge-list files) live in
:mod:`annrec.data.graph` and :mod:`annrec.data.edgelist` (imported on their own: they need scipy only).

>>> from annrec.data import load_movielens, random_split, temporal_user_split
>>> ml = load_movielens("ml-latest-small")          # ANNREC_DATA_DIR, cache, or download
>>> train, test = random_split(ml, 0.1, seed=0)     # explicit-ratings protocol (RMSE)
>>> train, test = temporal_user_split(ml, 0.2)      # top-N protocol (Recall@10, NDCG@10)
>>> X = train.to_csr(binary=True)                   # (n_users, n_items) float32 CSR
"""

from annrec.data.interactions import Interactions, as_external_ids, factorize_ids
from annrec.data.loaders import interactions_from_frame, load_interactions
from annrec.data.movielens import (
    MOVIELENS,
    default_cache_dir,
    find_local_movielens,
    load_movielens,
    parse_movielens_folder,
    verify_sha256sums,
)
from annrec.data.splits import leave_last_one, random_split, temporal_user_split

__all__ = [
    "Interactions", "as_external_ids", "factorize_ids",
    "MOVIELENS", "load_movielens", "parse_movielens_folder", "find_local_movielens", "default_cache_dir",
    "verify_sha256sums",
    "load_interactions", "interactions_from_frame",
    "random_split", "temporal_user_split", "leave_last_one",
]
