"""The baselines every trainer is compared with on the same split.

* :class:`BiasBaseline` - regularised ``mu + b_u + b_i`` for the explicit-ratings protocol (RMSE), and
  :func:`bias_only_recommender`, its item-bias ranking for the top-N protocol;
* most-popular (:func:`annrec.metrics.popularity_recommender`);
* :class:`ItemKNN` - item-kNN, cosine on the interaction matrix (``implicit``'s ``CosineRecommender``).

Each top-N baseline is a ``recommend_fn``: ``fn(user_rows, k, seen) -> (b, k)`` item rows, the scorer of
:func:`annrec.metrics.evaluate_topn` (as :meth:`annrec.train.base.Trainer.recommend_fn`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from annrec.errors import InputError
from annrec.metrics import popularity_recommender, top_k_excluding
from annrec.train.als import check_als_interactions
from annrec.train.base import RecommendFn, blas_single_thread, check_idx, check_interactions, float_param, int_param

if TYPE_CHECKING:
    from annrec.data import Interactions

__all__ = ["BiasBaseline", "ItemKNN", "bias_only_recommender", "baseline_recommenders", "popularity_recommender"]


class BiasBaseline:
    """Regularised bias-only baseline ``r ~ mu + b_u + b_i`` (no factors), fitted in closed form.

    The "baseline predictors" of Koren (2010, "Factor in the Neighbors", TKDD 4(1), section 2.1):
    alternating ridge regressions ``b_i = sum_u (r_ui - mu - b_u) / (reg_item + n_i)`` and
    ``b_u = sum_i (r_ui - mu - b_i) / (reg_user + n_u)``, ``iterations`` times (Koren does one pass with
    ``reg_item=25, reg_user=10``; the defaults here were selected on a validation split of
    ml-latest-small's training part by ``bench/mf_tune.py``).

    Raises:
        InputError: negative regularisation or ``iterations`` < 1.
    """

    def __init__(self, reg_item: float = 3.0, reg_user: float = 5.0, iterations: int = 10, clip: bool = True) -> None:
        self.reg_item = float_param("reg_item", reg_item)
        self.reg_user = float_param("reg_user", reg_user)
        self.iterations = int_param("iterations", iterations)
        self.clip = bool(clip)
        self._fitted = False

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {"reg_item": self.reg_item, "reg_user": self.reg_user, "iterations": self.iterations,
                "clip": self.clip}

    def fit(self, train: Interactions) -> BiasBaseline:
        """Fit ``global_bias_``, ``user_bias_`` ``(n_users,)`` and ``item_bias_`` ``(n_items,)`` (float64)."""
        train = check_interactions(train, needs="at least one rating")
        u, i = train.user_idx, train.item_idx
        r = train.rating.astype(np.float64)
        nu, ni = train.n_users, train.n_items
        mu = float(r.mean())
        n_u = np.bincount(u, minlength=nu)
        n_i = np.bincount(i, minlength=ni)
        bu = np.zeros(nu)
        bi = np.zeros(ni)
        with np.errstate(invalid="ignore", divide="ignore"):
            for _ in range(self.iterations):
                bi = np.nan_to_num(np.bincount(i, r - mu - bu[u], ni) / (self.reg_item + n_i))
                bu = np.nan_to_num(np.bincount(u, r - mu - bi[i], nu) / (self.reg_user + n_u))
        self.global_bias_, self.user_bias_, self.item_bias_ = mu, bu, bi
        self.n_users_, self.n_items_ = nu, ni
        self.rating_range_ = (float(r.min()), float(r.max()))
        self._fitted = True
        return self

    def predict(self, user_idx, item_idx) -> np.ndarray:
        """Predicted ratings (float32) for pairs of contiguous indices, clipped to the training range."""
        if not self._fitted:
            raise InputError("this BiasBaseline is not fitted yet: call fit(train) first")
        u = check_idx(user_idx, self.n_users_, "user")
        i = check_idx(item_idx, self.n_items_, "item")
        x = self.global_bias_ + self.user_bias_[u] + self.item_bias_[i]
        if self.clip:
            x = np.clip(x, *self.rating_range_)
        return x.astype(np.float32)


def bias_only_recommender(train: Interactions, bias: BiasBaseline | None = None) -> RecommendFn:
    """Top-N by the item bias ``b_i`` of a :class:`BiasBaseline` fitted on ``train`` (items without training
    events never recommended): the bias-only row of ``annrec train mf --topn``."""
    bias = bias or BiasBaseline().fit(train)
    trained = np.bincount(train.item_idx, minlength=train.n_items) > 0
    scores = np.where(trained, bias.item_bias_, -np.inf).astype(np.float32)

    def recommend(users: np.ndarray, k: int, seen: list[np.ndarray]) -> np.ndarray:
        return top_k_excluding(np.broadcast_to(scores, (len(users), len(scores))), k, seen)

    return recommend


class ItemKNN:
    """Item-kNN baseline: cosine similarity of item columns of the binary interaction matrix.

    Wraps ``implicit.nearest_neighbours.CosineRecommender`` (each item keeps its ``K`` most similar items;
    a user's score for an item is the sum of its similarities to the user's training items; Sarwar et al.,
    "Item-based collaborative filtering recommendation algorithms", WWW 2001).

    Args:
        K: neighbours kept per item (implicit's default 20).
        num_threads: OpenMP threads of implicit (default 0 = all cores).
        fill: ``"popularity"`` (default) fills slots the neighbourhoods cannot fill (users without
            history, or fewer than k candidate items) with the most popular unseen items; ``"none"``
            leaves them ``-1``.

    Raises:
        InputError: ``K`` < 1, bad ``fill``.
    """

    def __init__(self, K: int = 20, num_threads: int = 0, fill: str = "popularity") -> None:
        self.K = int_param("K", K)
        self.num_threads = int_param("num_threads", num_threads, minimum=0)
        if fill not in ("popularity", "none"):
            raise InputError(f"fill must be 'popularity' or 'none'; got {fill!r}")
        self.fill = fill
        self.model_ = None

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments."""
        return dict(K=self.K, num_threads=self.num_threads, fill=self.fill)

    def fit(self, train: Interactions) -> ItemKNN:
        """Compute the item-item cosine neighbourhoods of ``train.to_csr(binary=True)``; returns ``self``."""
        from implicit.nearest_neighbours import CosineRecommender

        train = check_als_interactions(train)
        self._X = train.to_csr(binary=True)
        with blas_single_thread(), warnings.catch_warnings():
            # CosineRecommender.fit hands its own normalised COO matrix to a CSR method (implicit 0.7)
            warnings.filterwarnings("ignore", message="Method expects CSR input", category=Warning)
            model = CosineRecommender(K=self.K, num_threads=self.num_threads)
            model.fit(self._X, show_progress=False)
        self.model_ = model
        self._popularity = np.bincount(train.item_idx, minlength=train.n_items).astype(np.float32)
        return self

    def recommend_fn(self) -> RecommendFn:
        """A recommender for :func:`annrec.metrics.evaluate_topn` (training items excluded)."""
        if self.model_ is None:
            raise InputError("this ItemKNN is not fitted yet: call .fit(train) first")
        X, model, pop = self._X, self.model_, self._popularity

        def recommend(users: np.ndarray, k: int, seen: list[np.ndarray]) -> np.ndarray:
            users = np.asarray(users)
            ids, scores = model.recommend(users, X[users], N=k, filter_already_liked_items=True)
            ids = np.asarray(ids, dtype=np.int64)
            # implicit pads short lists with id -1 or with zero-score placeholders
            ids[~np.isfinite(scores) | (scores <= 0)] = -1
            if self.fill == "popularity" and (ids < 0).any():
                rows = np.flatnonzero((ids < 0).any(axis=1))
                exclude = [np.concatenate([seen[r], ids[r][ids[r] >= 0]]) for r in rows]
                filler = top_k_excluding(np.broadcast_to(pop, (len(rows), len(pop))), k, exclude)
                for j, r in enumerate(rows):
                    got = ids[r][ids[r] >= 0]
                    ids[r] = np.concatenate([got, filler[j][: k - len(got)]])
            return ids

        return recommend


def baseline_recommenders(train: Interactions, names: Sequence[str] = ("popularity", "item_knn"),
                          num_threads: int = 0) -> dict[str, RecommendFn]:
    """Baseline ``recommend_fn`` s fitted on ``train``: ``"popularity"`` and/or ``"item_knn"``.

    Raises:
        InputError: an unknown name.
    """
    out: dict[str, RecommendFn] = {}
    for name in names:
        if name == "popularity":
            out[name] = popularity_recommender(train)
        elif name in ("item_knn", "item-knn"):
            out["item_knn"] = ItemKNN(num_threads=num_threads).fit(train).recommend_fn()
        else:
            raise InputError(f"unknown baseline {name!r}: use popularity or item_knn")
    return out
