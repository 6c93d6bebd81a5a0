"""The explicit-ratings protocol (RMSE on a random split), for matrix factorisation and its baseline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from annrec.train.base import check_interactions

if TYPE_CHECKING:
    from annrec.data import Interactions

__all__ = ["evaluate_rmse", "rating_protocol", "model_params"]


def evaluate_rmse(model: Any, test: Interactions) -> float:
    """RMSE (rating units) of ``model.predict(user_idx, item_idx)`` on the ratings of ``test``.

    ``test`` must share the id space of the data the model was fitted on (the splits of
    :mod:`annrec.data.splits` guarantee it).

    Raises:
        InputError: ``test`` is not a non-empty Interactions; the model's own errors (not fitted, ids out of range).
    """
    from annrec.metrics import rmse

    test = check_interactions(test, "test", needs="at least one rating")
    return rmse(model.predict(test.user_idx, test.item_idx), test.rating)


def model_params(params: Mapping[str, Any], progress: bool) -> dict[str, Any]:
    """``params`` with ``show_progress=progress`` (an old ``progress`` key replaced, not doubled)."""
    return {**{k: v for k, v in params.items() if k != "progress"}, "show_progress": progress}


def rating_protocol(inter, params: Mapping[str, Any], *, test_fraction: float = 0.1, split_seed: int = 0,
                    baseline: bool = True, progress: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """The explicit-ratings protocol: ``random_split(inter, test_fraction, split_seed)``, fit MF on the
    training part, RMSE on the test part (and of the bias-only baseline).

    Args:
        inter: explicit ratings (:class:`~annrec.data.Interactions`).
        params: :class:`~annrec.train.mf.MatrixFactorization` constructor arguments.

    Returns:
        ``(model, train, figures)`` with figures ``rmse``, ``bias_baseline_rmse``, ``val_rmse``,
        ``best_epoch``, ``epochs_run``, ``fit_seconds``, ``protocol``, ``train_events``, ``test_events``.

    Raises:
        InputError: bad parameters or data (from the trainer).
    """
    from annrec.data import random_split
    from annrec.eval.baselines import BiasBaseline
    from annrec.train.mf import MatrixFactorization

    train, test = random_split(inter, test_fraction, seed=split_seed)
    mf = MatrixFactorization(**model_params(params, progress)).fit(train)
    figures: dict[str, Any] = {
        "protocol": f"random_split({test_fraction}, seed={split_seed}), RMSE on the test ratings",
        "rmse": round(evaluate_rmse(mf, test), 4),
        "val_rmse": None if mf.val_rmse_ is None else round(mf.val_rmse_, 4),
        "best_epoch": mf.best_epoch_, "epochs_run": mf.epochs_run_, "refitted_on_all_train": mf.refitted_,
        "fit_seconds": round(mf.fit_seconds_, 2), "train_events": train.n_events, "test_events": test.n_events,
    }
    if baseline:
        b = BiasBaseline().fit(train)
        figures["bias_baseline_rmse"] = round(evaluate_rmse(b, test), 4)
        figures["bias_baseline_params"] = b.get_params()
    return mf, train, figures
