"""How the MF defaults were chosen without looking at the test ratings (ml-latest-small).

Protocol: the explicit-ratings split of DESIGN.md (``random_split(data, 0.1, seed=0)``) gives TRAIN and TEST.
TRAIN is split again (``random_split(train, 0.1, seed=1)``) into FIT and VALIDATION. Every candidate is
fitted on FIT with a fixed number of epochs (no early stopping: ``val_fraction=0``) and scored on VALIDATION;
the best candidate is then fitted with early stopping + refit on all of TRAIN (what ``annrec train mf`` does)
and scored once on TEST. The bias-only baseline's two regularisation weights are chosen the same way.

    ANNREC_DATA_DIR=/path/to/datasets python bench/mf_tune.py --json bench/results/mf_tune.json
"""

from __future__ import annotations

import argparse
import itertools
import time

from annrec._io import write_json
from annrec.data import load_movielens, random_split
from annrec.eval.baselines import BiasBaseline
from annrec.eval.rating import evaluate_rmse
from annrec.train.mf import MatrixFactorization

CANDIDATES = {
    # fastai lesson / book: EmbeddingDotBias, y_range (0, 5.5), AdamW wd=0.1, 5 epochs one-cycle lr 5e-3
    # (fastai uses batches of 64; 1024 here to keep the sweep short)
    "fastai-like wd=0.1": dict(dim=50, epochs=5, lr=5e-3, reg=0.0, bias_reg=0.0, weight_decay=0.1, batch_size=1024,
                               y_range=(0.0, 5.5)),
    "reg=0.05": dict(reg=0.05),
    "reg=0.08": dict(reg=0.08),
    "reg=0.12 (default)": dict(reg=0.12),
    "reg=0.16": dict(reg=0.16),
    "reg=0.12 dim=32": dict(reg=0.12, dim=32),
    "reg=0.12 dim=128": dict(reg=0.12, dim=128),
    "reg=0.12 no y_range": dict(reg=0.12, y_range=None),
    "reg=0.12 sgd lr=0.5": dict(reg=0.12, optimizer="sgd", lr=0.5, epochs=30),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", default=None, help="comma-separated candidate names (default: all)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    ml = load_movielens("ml-latest-small", data_dir=args.data_dir)
    train, test = random_split(ml, 0.1, seed=0)
    fit, val = random_split(train, 0.1, seed=1)
    rows = {}
    names = list(CANDIDATES) if not args.only else [n.strip() for n in args.only.split(",")]
    for name in names:
        params = {**CANDIDATES[name], "val_fraction": 0.0, "progress": False}
        t0 = time.perf_counter()
        mf = MatrixFactorization(**params).fit(fit)
        rows[name] = {"val_rmse": round(evaluate_rmse(mf, val), 4), "seconds": round(time.perf_counter() - t0, 1),
                      "params": {k: v for k, v in mf.get_params().items() if k in CANDIDATES[name]}}
        print(f"{name:28s} validation RMSE {rows[name]['val_rmse']:.4f}  ({rows[name]['seconds']} s)", flush=True)
    best = min(rows, key=lambda n: rows[n]["val_rmse"])
    ties = [n for n in rows if rows[n]["val_rmse"] <= rows[best]["val_rmse"] + 0.001]
    print(f"best on validation: {best!r}; within 0.001 of it: {ties}")
    tested = {}
    for name in dict.fromkeys([best, "reg=0.12 (default)"]):
        if name not in CANDIDATES:
            continue
        t0 = time.perf_counter()
        final = MatrixFactorization(**{**CANDIDATES[name], "progress": False}).fit(train)
        tested[name] = {"test_rmse": round(evaluate_rmse(final, test), 4), "best_epoch": final.best_epoch_,
                        "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name!r} with early stopping + refit on all of TRAIN: test RMSE {tested[name]['test_rmse']:.4f} "
              f"(best epoch {final.best_epoch_}, {tested[name]['seconds']} s)", flush=True)

    bias_rows = {}
    for ri, ru in itertools.product((1, 2, 3, 5, 10, 25), (2, 5, 10)):
        b = BiasBaseline(reg_item=ri, reg_user=ru).fit(fit)
        bias_rows[f"{ri},{ru}"] = round(evaluate_rmse(b, val), 4)
    bbest = min(bias_rows, key=bias_rows.get)
    ri, ru = (float(x) for x in bbest.split(","))
    bias_test = evaluate_rmse(BiasBaseline(reg_item=ri, reg_user=ru).fit(train), test)
    koren = evaluate_rmse(BiasBaseline(reg_item=25, reg_user=10, iterations=1).fit(train), test)
    print(f"bias-only: chosen reg_item={ri:g}, reg_user={ru:g} (validation {bias_rows[bbest]:.4f}); test RMSE "
          f"{bias_test:.4f}; Koren 2010's one pass with 25/10: {koren:.4f}")
    if args.json:
        write_json(args.json, {"protocol": __doc__.strip().splitlines()[2:6], "candidates": rows, "best": best,
                               "within_0.001_of_best": ties, "test": tested,
                               "bias_only": {"validation": bias_rows, "chosen": bbest,
                                             "test_rmse": round(bias_test, 4),
                                             "koren_25_10_one_pass_test_rmse": round(koren, 4)}})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
