"""Quality and speed of biased MF (annrec.train.mf) on ml-latest-small, with the bias-only baseline.

* RMSE, explicit-ratings protocol of DESIGN.md: ``random_split(data, 0.1, seed=0)``, fit on the 90% (default
  hyper-parameters: early stopping on 5% of it, then a refit on all of it), RMSE on the 10%; for several model
  seeds (the split stays seed 0). Beside it the regularised bias-only baseline (closed form).
* Top-N, per-user temporal split (last 20% of each user's ratings): Recall@10, NDCG@10, MRR, MAP@10, coverage
  of the MF vectors ranked by exact maximum inner product search (items seen in training excluded), with the
  bias-only and popularity rankings beside it.
* Training time with 1 and 2 torch threads, measured side by side (the machine is shared: read the ratio).

    ANNREC_DATA_DIR=/path/to/datasets python bench/mf_quality.py --seeds 3 --json bench/results/mf_quality.json
"""

from __future__ import annotations

import argparse
import statistics
import time

from annrec._io import write_json
from annrec.cli.train_mf import rating_protocol, topn_protocol
from annrec.data import load_movielens, random_split
from annrec.train.mf import MatrixFactorization


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    ml = load_movielens("ml-latest-small", data_dir=args.data_dir)
    params = MatrixFactorization().get_params()
    runs = []
    for seed in range(args.seeds):
        _, _, fig = rating_protocol(ml, {**params, "seed": seed}, progress=False)
        runs.append(fig)
        print(f"seed {seed}: RMSE {fig['rmse']:.4f} (bias-only {fig['bias_baseline_rmse']:.4f}), best epoch "
              f"{fig['best_epoch']}, fit {fig['fit_seconds']} s", flush=True)
    rmses = [r["rmse"] for r in runs]
    print(f"RMSE mean {statistics.mean(rmses):.4f}, min {min(rmses):.4f}, max {max(rmses):.4f} over {len(rmses)} "
          f"seeds; bias-only {runs[0]['bias_baseline_rmse']:.4f}")

    _, _, _, topn = topn_protocol(ml, params, progress=False)
    for name, m in topn["table"].items():
        print(f"top-N {name:10s} recall@10 {m['recall@10']:.4f}  ndcg@10 {m['ndcg@10']:.4f}  mrr {m['mrr']:.4f}  "
              f"coverage@10 {m['coverage@10']:.4f}")

    train, _ = random_split(ml, 0.1, seed=0)
    speed = {}
    for rep in range(2):  # interleaved, to share the machine's noise
        for threads in (1, 2):
            mf = MatrixFactorization(threads=threads, val_fraction=0.0, epochs=10, progress=False).fit(train)
            speed.setdefault(threads, []).append(mf.fit_seconds_ / 10)
    sec = {t: round(min(v), 4) for t, v in speed.items()}
    print(f"seconds per epoch (90,752 ratings, batches of 4096): 1 thread {sec[1]}, 2 threads {sec[2]} "
          f"(ratio 2/1 = {sec[2] / sec[1]:.2f})")
    if args.json:
        write_json(args.json, {"params": params, "rating": {"runs": runs, "rmse_mean": round(statistics.mean(rmses), 4),
                                                              "rmse_min": min(rmses), "rmse_max": max(rmses)},
                               "topn": topn, "seconds_per_epoch": sec,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
