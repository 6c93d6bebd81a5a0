"""Training speed of the sequence recommender on ml-latest-small: seconds per epoch, side by side.

Each configuration trains ``--epochs`` epochs on the training half of the top-N split (no validation, no
refit) and the script reports seconds per epoch; configurations are interleaved over ``--rounds`` rounds and
the best round is kept, so a noisy, shared machine affects all of them alike.

    python bench/sequence_speed.py '{}' '{"threads": 2}' '{"stride": 5, "train_last": 5}' \\
        --rounds 2 --json bench/results/sequence_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

from annrec._io import write_json
from annrec.data import load_movielens, temporal_user_split
from annrec.train.sequence import SequenceTrainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="JSON objects of SequenceConfig overrides")
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    train, _ = temporal_user_split(load_movielens(args.dataset), 0.2)
    load_start = os.getloadavg()
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for c in args.configs:
            p = {"epochs": args.epochs, "val_fraction": 0.0, "refit": False, "show_progress": False, **json.loads(c)}
            t0 = time.perf_counter()
            SequenceTrainer(**p).fit(train)
            s = (time.perf_counter() - t0) / args.epochs
            best[c] = min(best.get(c, float("inf")), s)
            print(f"round {r}: {c}: {s:.1f} s/epoch (load average {os.getloadavg()[0]:.2f})", flush=True)
    base = best[args.configs[0]]
    rows = [{"config": json.loads(c), "seconds_per_epoch": round(s, 1), "speedup_vs_first": round(base / s, 2)}
            for c, s in best.items()]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        write_json(args.json, {"dataset": args.dataset, "epochs": args.epochs, "rounds": args.rounds, "rows": rows,
                               "load_average_start": load_start, "load_average_end": os.getloadavg()})


if __name__ == "__main__":
    main()
