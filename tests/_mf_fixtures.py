"""Shared helpers for tests/test_mf_*.py and tests/test_cli_*.py (matrix factorisation, CLI).

* :func:`make_ratings`: a small synthetic explicit-rating log with a known low-rank structure.
* :func:`quickstart_dir`: ONE ``annrec quickstart`` run on the real ml-latest-small (few epochs), cached for
  the whole pytest process, whose artifacts the CLI tests query.
* :func:`run_main`: the console-script entry point in-process (exit code + output), so error handling
  (one line, exit code 2) is tested as users see it.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from annrec.data import Interactions

DATA_DIR = Path(os.environ.get("ANNREC_DATA_DIR", "")).expanduser()  # the folder holding ml-latest-small/
REPO = Path(__file__).resolve().parents[1]


def have_movielens() -> bool:
    return (DATA_DIR / "ml-latest-small" / "ratings.csv").is_file()


def make_ratings(n_users: int = 120, n_items: int = 80, per_user: int = 30, rank: int = 3, noise: float = 0.3,
                 seed: int = 0, name: str = "synthetic") -> Interactions:
    """Ratings 0.5..5 (half stars) from ``mu + b_u + b_i + p_u . q_i`` plus noise; titles and genres.

    External ids are non-contiguous (users 1000+, items 7*i+3); timestamps increase per user.
    """
    rng = np.random.default_rng(seed)
    P = rng.normal(0, 0.8, (n_users, rank))
    Q = rng.normal(0, 0.8, (n_items, rank))
    bu = rng.normal(0, 0.3, n_users)
    bi = rng.normal(0, 0.4, n_items)
    users, items, ratings, ts = [], [], [], []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            r = 3.2 + bu[u] + bi[i] + P[u] @ Q[i] + rng.normal(0, noise)
            users.append(1000 + u)
            items.append(7 * int(i) + 3)
            ratings.append(float(np.clip(np.round(r * 2) / 2, 0.5, 5.0)))
            ts.append(1_000_000 + 1000 * u + t)
    ids = sorted(set(items))
    meta = pd.DataFrame({"title": [f"Movie {i} [{i % 5}]" for i in ids],
                         "genres": [["Drama"] if i % 2 else ["Comedy", "Drama"] for i in ids]},
                        index=pd.Index(ids, name="item_id"))
    return Interactions.from_arrays(users, items, ratings, ts, name=name, items_meta=meta)


def write_ratings_csv(inter: Interactions, path: Path) -> Path:
    df = pd.DataFrame({"user": inter.user_ids[inter.user_idx], "movie": inter.item_ids[inter.item_idx],
                       "stars": inter.rating, "ts": inter.timestamp})
    df.to_csv(path, index=False)
    return path


@functools.lru_cache(maxsize=1)
def quickstart_dir() -> Path:
    """Run ``annrec quickstart`` once (3 epochs, a short sweep) on ml-latest-small; returns its ``--out``.

    The JSON report is ``<out>/../quickstart.json``. Removed when the pytest process exits.
    """
    from typer.testing import CliRunner

    import annrec.cli  # noqa: F401  (registers every command)
    from annrec.cli.apps import app

    root = Path(tempfile.mkdtemp(prefix="annrec-quickstart-"))
    atexit.register(shutil.rmtree, root, True)
    out = root / "qs"
    res = CliRunner().invoke(app, ["quickstart", "--data-dir", str(DATA_DIR), "--out", str(out), "--epochs", "3",
                                   "--factors", "16", "--ef", "10,80", "--nprobe", "1,16", "--no-progress",
                                   "--json", str(root / "quickstart.json")])
    if res.exit_code != 0:
        raise RuntimeError(f"quickstart failed ({res.exit_code}): {res.output}\n{res.exception!r}")
    (root / "quickstart.out").write_text(res.output)
    return out


def run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run ``annrec ARGS`` through :func:`annrec.cli.main` in-process; returns ``(exit code, stdout+stderr)``
    with runs of white space (rich wraps at 80 columns when not on a terminal) collapsed to one space."""
    from annrec.cli import main

    monkeypatch.setattr(sys, "argv", ["annrec", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())
