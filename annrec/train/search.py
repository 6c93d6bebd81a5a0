"""Hyper-parameter search for :class:`~annrec.train.als.ImplicitALS` on training data only.

Coordinate-wise search (one stage at a time, each on top of the best setting so far), scored with the top-N
protocol (:func:`annrec.metrics.evaluate_topn`, Recall@k, ties broken by NDCG@k) on a per-user temporal
validation split carved from the training part (:func:`annrec.data.temporal_user_split`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from annrec.errors import DataError
from annrec.metrics import evaluate_topn
from annrec.train.als import ImplicitALS, check_als_interactions
from annrec.train.base import int_param

if TYPE_CHECKING:
    from annrec.data import Interactions

__all__ = ["search_als", "ALSSearchResult", "DEFAULT_SEARCH_STAGES"]

#: Parameters that do not change the model (left out of the "tried before" key).
_NOT_MODEL = ("num_threads", "device", "on_empty", "show_progress")


#: Coordinate-wise search stages: each stage tries its settings on top of the best so far.
DEFAULT_SEARCH_STAGES: tuple[tuple[dict[str, Any], ...], ...] = (
    # confidence: weighting x alpha (weighted values are ~1-8, so their alphas are smaller)
    tuple([{"weighting": "none", "alpha": a} for a in (0.0, 0.5, 1.0, 2.0)]
          + [{"weighting": w, "alpha": a} for w in ("bm25", "tfidf") for a in (0.25, 0.5, 1.0)]),
    # capacity: factors x regularization
    tuple({"factors": f, "regularization": r} for f in (32, 64, 128) for r in (0.01, 1.0, 10.0, 30.0)),
    # iterations
    tuple({"iterations": i} for i in (10, 15, 30)),
)


@dataclass
class ALSSearchResult:
    """What :func:`search_als` found.

    Attributes:
        best_params: ImplicitALS constructor arguments of the best setting.
        best_score: its validation ``metric``.
        metric: the selection figure (``"recall@10"``).
        trials: every setting tried, in order, with its validation figures.
        n_fits: number of models fitted.
        seconds: wall time.
        split: how the validation split was made (sizes, fraction; the data it came from).
    """

    best_params: dict[str, Any]
    best_score: float
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    n_fits: int = 0
    seconds: float = 0.0
    split: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(best_params=self.best_params, best_score=self.best_score, metric=self.metric,
                    n_fits=self.n_fits, seconds=round(self.seconds, 2), split=self.split, trials=self.trials)


class _Trials:
    """Fits and scores settings on one split, each at most once, at most ``max_fits`` fits."""

    def __init__(self, fit_part: Interactions, val_part: Interactions, k: int, max_fits: int) -> None:
        self.fit_part, self.val_part, self.k, self.max_fits = fit_part, val_part, k, max_fits
        self.metric = f"recall@{k}"
        self.tried: dict[tuple, dict[str, Any]] = {}
        self.trials: list[dict[str, Any]] = []

    def score(self, p: dict[str, Any]) -> dict[str, Any] | None:
        key = tuple(sorted((n, v) for n, v in p.items() if n not in _NOT_MODEL))
        if key in self.tried:
            return self.tried[key]
        if len(self.tried) >= self.max_fits:
            return None
        model = ImplicitALS(**p).fit(self.fit_part)
        k = self.k
        m = evaluate_topn(model.recommend_fn(), self.fit_part, self.val_part, k)
        rec = {"params": {n: p[n] for n in ("factors", "regularization", "iterations", "alpha", "weighting")},
               self.metric: round(float(m[self.metric]), 5), f"ndcg@{k}": round(float(m[f"ndcg@{k}"]), 5),
               "fit_seconds": model.stats_["fit_seconds"]}
        self.tried[key] = rec
        self.trials.append(rec)
        return rec

    def better(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        nd = f"ndcg@{self.k}"
        return (a[self.metric], a[nd]) > (b[self.metric], b[nd])


def search_als(train: Interactions, base_params: Mapping[str, Any] | None = None,
               stages: Sequence[Sequence[Mapping[str, Any]]] = DEFAULT_SEARCH_STAGES, val_fraction: float = 0.2,
               k: int = 10, max_fits: int = 40, progress: bool = False) -> ALSSearchResult:
    """Small coordinate-wise hyper-parameter search for :class:`ImplicitALS` on TRAINING data only.

    The validation split is carved from ``train`` with the same protocol as the test split
    (:func:`annrec.data.temporal_user_split`, each user's last ``val_fraction`` of training events);
    every candidate is fitted on the earlier part and scored by Recall@k on the later part (ties: NDCG@k).
    Stages run in order; each tries its settings on top of the best setting so far and keeps the best
    (:data:`DEFAULT_SEARCH_STAGES`: weighting × alpha, then factors × regularization, then iterations;
    about two dozen fits). Settings already tried are not refitted. Never pass the test split here:
    retrain ``ImplicitALS(**result.best_params)`` on the full training split, then evaluate on test.

    Args:
        train: the training part of the evaluation split (the only data the search sees).
        base_params: ImplicitALS arguments to start from (default: the constructor defaults).
        stages: list of stages, each a list of partial parameter dicts.
        val_fraction: validation fraction per user, in (0, 1).
        k: cut-off of the selection metric.
        max_fits: stop after this many fits.
        progress: show a tqdm bar over the trials.

    Returns:
        :class:`ALSSearchResult` (``best_params`` are ImplicitALS constructor arguments).

    Raises:
        InputError: bad arguments or parameter values (raised by ImplicitALS before any fit).
        DataError: ``train`` too small to carve a validation split (no user with 2+ events).
    """
    from annrec.data import temporal_user_split

    train = check_als_interactions(train)
    k = int_param("k", k)
    max_fits = int_param("max_fits", max_fits)
    current = ImplicitALS(**dict(base_params or {})).get_params()
    for stage in stages:  # every setting is checked before anything is fitted
        for change in stage:
            ImplicitALS(**{**current, **dict(change)})
    fit_part, val_part = temporal_user_split(train, val_fraction)
    if val_part.n_events == 0:
        raise DataError("no user has 2 or more training events, so no validation split can be carved from "
                        "the training data: search needs more data (or train with fixed parameters)")
    trials = _Trials(fit_part, val_part, k, max_fits)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(s) for s in stages) + 1, desc="ALS search", unit="setting")
    try:
        best_params = dict(current)
        best = trials.score(best_params)
        if bar is not None:
            bar.update(1)
        for stage in stages:
            stage_base = dict(best_params)
            for change in stage:
                cand = {**stage_base, **dict(change)}
                rec = trials.score(cand)
                if bar is not None:
                    bar.update(1)
                if rec is None:  # max_fits reached
                    break
                if trials.better(rec, best):
                    best, best_params = rec, cand
    finally:
        if bar is not None:
            bar.close()
    best["selected"] = True
    split = {"protocol": f"temporal_user_split(train, {val_fraction})", "fit_events": fit_part.n_events,
             "validation_events": val_part.n_events, "train_fingerprint": train.fingerprint()}
    return ALSSearchResult(best_params=best_params, best_score=best[trials.metric], metric=trials.metric,
                           trials=trials.trials, n_fits=len(trials.tried), seconds=time.perf_counter() - t0,
                           split=split)
