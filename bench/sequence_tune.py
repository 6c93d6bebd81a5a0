"""Hyper-parameter search of the sequence recommender on the VALIDATION split only.

The validation split is carved from the training half of the top-N protocol's split (per-user temporal
split of the training events, 20% held out), so the test events are never looked at. Each line of output is
one configuration and its best validation Recall@10 (early stopping).

    python bench/sequence_tune.py '{"horizon": 1}' '{"horizon": 20}' --json bench/results/sequence_tune.json
"""

from __future__ import annotations

import argparse
import json
import time

from annrec._io import write_json
from annrec.data import load_movielens, temporal_user_split
from annrec.train.sequence import SequenceTrainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="JSON objects of SequenceConfig overrides")
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--json", default=None)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    ml = load_movielens(args.dataset)
    train, _test = temporal_user_split(ml, 0.2)      # the test half is never used here
    rows = []
    for c in args.configs:
        params = dict(refit=False, show_progress=args.progress)
        params.update(json.loads(c))
        t0 = time.perf_counter()
        tr = SequenceTrainer(**params)
        tr.fit(train)
        row = {"config": json.loads(c), "val_recall@10": tr.result.best_val_recall,
               "best_epoch": tr.result.best_epoch, "seconds": round(time.perf_counter() - t0, 1),
               "curve": [round(h.get("val_recall@10", 0), 4) for h in tr.result.history],
               "epoch_seconds": [h.get("seconds") for h in tr.result.history]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # after every configuration, so a long sweep keeps what it measured
            write_json(args.json, rows)


if __name__ == "__main__":
    main()
