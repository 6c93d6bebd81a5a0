"""Shared helpers of the data tests: tiny hand-made MovieLens folders in the official formats."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from annrec.data import Interactions

REPO = Path(__file__).resolve().parents[1]
_DATA_DIR_AT_START = os.environ.get("ANNREC_DATA_DIR")


def real_data_root() -> Path | None:
    """Folder containing ml-latest-small: ``$ANNREC_DATA_DIR`` as it was when the tests started (tests may
    unset the variable), None when unset or without the data set."""
    cand = _DATA_DIR_AT_START
    if cand and (Path(cand) / "ml-latest-small" / "ratings.csv").is_file():
        return Path(cand)
    return None


def require_real_data() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("ml-latest-small not found: set ANNREC_DATA_DIR=/path/to/folder/containing/ml-latest-small")
    return root


RATINGS_CSV = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,3,4.5,964981247
2,1,3.0,964982224
2,50,5.0,964982931
3,3,0.5,1445714994
3,50,2.0,1445714900
"""

MOVIES_CSV = '''movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
3,"American President, The (1995)",Comedy|Drama|Romance
50,Usual Suspects (1995),Crime|Mystery|Thriller
99,No Genre Film,(no genres listed)
'''

TAGS_CSV = """userId,movieId,tag,timestamp
2,1,Pixar,1445714994
3,1,pixar,1445714995
3,1,fun,1445714996
2,50,twist ending,1445714997
"""


def write_csv_set(folder: Path, sums: bool = True) -> Path:
    """ml-latest-small-format folder with 3 users, 3 rated movies (+1 unrated), tags and SHA256SUMS."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(RATINGS_CSV)
    (folder / "movies.csv").write_text(MOVIES_CSV)
    (folder / "tags.csv").write_text(TAGS_CSV)
    if sums:
        write_sums(folder)
    return folder


def write_sums(folder: Path) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != "SHA256SUMS"]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def toy(n_users: int = 5, n_items: int = 7, n_events: int = 60, seed: int = 0,
        str_ids: bool = False) -> Interactions:
    """Random explicit-feedback log with ties in timestamps and repeated (user, item) pairs."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    items = rng.integers(0, n_items, n_events)
    users[:n_users] = np.arange(n_users)  # every user and item appears
    items[:n_items] = np.arange(n_items)
    rating = rng.integers(1, 11, n_events) / 2.0
    ts = rng.integers(1_000, 1_020, n_events)  # many ties
    if str_ids:
        return Interactions.from_arrays([f"u{u}" for u in users], [f"i{i}" for i in items], rating, ts,
                                        name="toy")
    return Interactions.from_arrays(users * 10 + 3, items * 100 + 7, rating, ts, name="toy")
