"""The top-N protocol (per-user temporal split, Recall@k / NDCG@k...) as tables of models and baselines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from annrec.metrics import evaluate_topn
from annrec.train.base import RecommendFn

if TYPE_CHECKING:
    from annrec.data import Interactions

__all__ = ["evaluate_topn_table", "topn_protocol"]


def evaluate_topn_table(recommenders: Mapping[str, RecommendFn], train: Interactions, test: Interactions,
                        k: int = 10) -> dict[str, dict[str, float]]:
    """Run :func:`annrec.metrics.evaluate_topn` for each recommender on the same split.

    Returns:
        ``{name: {"recall@k", "ndcg@k", "mrr", "map@k", "precision@k", "coverage@k", "users"}}`` (floats,
        rounded to 4 decimals; users an int).
    """
    table = {}
    for name, fn in recommenders.items():
        m = evaluate_topn(fn, train, test, k)
        table[name] = {key: (int(v) if key == "users" else round(float(v), 4)) for key, v in m.items()}
    return table


def topn_protocol(inter, params: Mapping[str, Any], *, test_fraction: float = 0.2, k: int = 10,
                  progress: bool = True) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The top-N protocol for matrix factorisation: ``temporal_user_split(inter, test_fraction)``, fit MF on
    the training part, rank every item unseen in training by exact maximum inner product search, and score
    Recall@k etc. (with the bias-only and popularity baselines beside it).

    Args:
        inter: explicit ratings. params: :class:`~annrec.train.mf.MatrixFactorization` constructor arguments.

    Returns:
        ``(model, train, test, figures)``; ``figures["table"]`` maps ``mf`` / ``bias_only`` /
        ``popularity`` to the metrics of :func:`annrec.metrics.evaluate_topn` (floats rounded to 4 places).

    Raises:
        InputError: bad parameters or data (from the trainer).
    """
    from annrec.data import temporal_user_split
    from annrec.eval.baselines import bias_only_recommender, popularity_recommender
    from annrec.eval.rating import model_params
    from annrec.train.mf import MatrixFactorization

    train, test = temporal_user_split(inter, test_fraction)
    mf = MatrixFactorization(**model_params(params, progress)).fit(train)

    def fmt(m: dict[str, Any]) -> dict[str, Any]:
        return {key: (round(v, 4) if isinstance(v, float) else v) for key, v in m.items()}

    table = {"mf": fmt(evaluate_topn(mf.recommend_fn(), train, test, k)),
             "bias_only": fmt(evaluate_topn(bias_only_recommender(train), train, test, k)),
             "popularity": fmt(evaluate_topn(popularity_recommender(train), train, test, k))}
    figures = {"protocol": f"temporal_user_split({test_fraction}); items seen in training excluded; exact "
                           f"maximum inner product search", "k": k, "table": table,
               "fit_seconds": round(mf.fit_seconds_, 2), "train_events": train.n_events,
               "test_events": test.n_events}
    return mf, train, test, figures
