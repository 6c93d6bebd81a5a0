"""Implicit-feedback ALS (``implicit``), the top-N baselines it is compared with, and a small search.

Model: weighted matrix factorisation for implicit feedback (Hu, Koren & Volinsky, "Collaborative
Filtering for Implicit Feedback Datasets", ICDM 2008), fitted by the ``implicit`` library
(``implicit.als.AlternatingLeastSquares``: conjugate-gradient ALS of Takács, Pilászy & Tikk, RecSys
2011, on the CPU with OpenMP, or ``implicit.gpu`` when it was built with CUDA and a device is visible).

Confidence: every stored (user, item) pair gets ``p_ui = 1`` and confidence ``c_ui = 1 + alpha * r_ui``
(Hu et al., eq. 2), where ``r_ui`` is

* ``1`` with ``binarize=True`` (default; implicit feedback: "the user rated / watched it"), else the
  summed rating of the pair;
* optionally re-weighted with ``implicit.nearest_neighbours.bm25_weight`` (K1=100, B=0.8, the values of
  implicit's last.fm example) or ``tfidf_weight``, applied the way implicit's own examples and
  item-item recommenders do: to the item × user matrix (items are the "documents", users the "terms").

Unobserved pairs have ``p = 0, c = 1``. ``implicit`` itself uses ``c = alpha * value`` for a stored value,
so this wrapper hands it ``1 + alpha * r`` with implicit's own ``alpha`` fixed at 1: ``alpha=0`` here is
exactly implicit's default usage (binary matrix, implicit ``alpha=1``).

Serving: item vectors ``y_i`` and user vectors ``x_u`` with score ``x_u · y_i``, i.e. maximum inner
product search (metric ``ip``) over the :class:`~annrec.embeddings.Embeddings` artifact.

Baselines on the same split (top-N protocol of ``DESIGN.md``): most-popular
(:func:`annrec.metrics.popularity_recommender`) and item-kNN (:class:`ItemKNN`, cosine on the
interaction matrix, ``implicit.nearest_neighbours.CosineRecommender``).

Threads: ``implicit`` runs its own OpenMP pool (``num_threads``, default 0: all cores, implicit's own
default); BLAS is limited to 1 thread around fitting (``threadpoolctl.threadpool_limits(1, "blas")``),
as implicit recommends, which also silences its oversubscription warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from annrec.errors import DataError, InputError
from annrec.metrics import evaluate_topn, popularity_recommender, top_k_excluding

if TYPE_CHECKING:
    from annrec.data import Interactions
    from annrec.embeddings import Embeddings

__all__ = [
    "ImplicitALS", "ItemKNN", "WEIGHTINGS", "BM25_K1", "BM25_B", "confidence_matrix", "search_als",
    "ALSSearchResult", "DEFAULT_SEARCH_STAGES", "evaluate_topn_table", "baseline_recommenders",
    "blas_single_thread",
]

log = logging.getLogger(__name__)

#: Weightings of the interaction matrix before the confidence transform.
WEIGHTINGS = ("none", "bm25", "tfidf")
#: BM25 parameters of ``bm25_weight`` (implicit's defaults, used in its last.fm ALS example).
BM25_K1 = 100.0
BM25_B = 0.8
#: What to do with users/items whose every event the ``min_rating`` filter removed.
ON_EMPTY = ("drop", "error")


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """Limit BLAS (OpenBLAS/MKL) to 1 thread inside the block (implicit's recommendation for ALS)."""
    import threadpoolctl

    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


# ----------------------------------------------------------------------------------------------- validation
def _int_param(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _float_param(name: str, value: Any, minimum: float = 0.0, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number >= {minimum}; got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < minimum:
        raise InputError(f"{name} must be a finite number >= {minimum}; got {value!r}")
    return v


def _check_interactions(data: Any, what: str = "train") -> Interactions:
    from annrec.data import Interactions

    if not isinstance(data, Interactions):
        raise InputError(f"{what} must be an annrec.data.Interactions (e.g. from load_movielens or "
                         f"load_interactions); got {type(data).__name__}")
    if data.n_events == 0:
        raise DataError(f"{what} has no events ({data!r}): ALS needs at least one interaction")
    return data


# ----------------------------------------------------------------------------------------------- confidence
def confidence_matrix(train: Interactions, alpha: float = 1.0, weighting: str = "none", binarize: bool = True,
                      min_rating: float | None = None) -> sp.csr_matrix:
    """The confidence matrix ``C`` (users × items) that ALS factorises: ``c_ui = 1 + alpha * r_ui``.

    Args:
        train: the interactions.
        alpha: confidence slope (Hu et al. 2008), >= 0.
        weighting: ``"none"``, ``"bm25"`` (``bm25_weight(X.T, K1=100, B=0.8).T``) or ``"tfidf"``
            (``tfidf_weight(X.T).T``), from ``implicit.nearest_neighbours``; negative weights are clipped to 0.
        binarize: ``r_ui = 1`` for every observed pair (else the summed rating).
        min_rating: keep only events with ``rating >= min_rating`` (e.g. 4.0: "liked"); ``None`` keeps all.

    Returns:
        float32 CSR ``(n_users, n_items)`` with sorted indices; stored entries are the observed pairs.
        Rows/columns of users/items without (kept) events are empty.

    Raises:
        InputError: bad ``alpha``/``weighting``/``min_rating``.
        DataError: no event is left after the ``min_rating`` filter.
    """
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    alpha = _float_param("alpha", alpha)
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
    min_rating = _float_param("min_rating", min_rating, minimum=-math.inf, allow_none=True)
    data = train
    if min_rating is not None:
        keep = train.rating >= min_rating
        if not keep.any():
            raise DataError(f"min_rating={min_rating} removes every one of the {train.n_events} events of "
                            f"{train.name or 'the data'} (ratings {train.rating.min():g}..{train.rating.max():g}): "
                            f"lower --min-rating or leave it out")
        data = train.subset(keep)
    X = data.to_csr(binary=binarize)
    if weighting != "none":
        fn = (lambda m: bm25_weight(m, K1=BM25_K1, B=BM25_B)) if weighting == "bm25" else tfidf_weight
        W = sp.csr_matrix(fn(X.T.tocsr()).T, dtype=np.float32)
        W.sort_indices()
        X = W
    X.data = (1.0 + alpha * np.maximum(X.data, 0.0)).astype(np.float32)
    return X


# ----------------------------------------------------------------------------------------------- ALS
class ImplicitALS:
    """Implicit-feedback ALS over an :class:`~annrec.data.Interactions` log, exported for MIPS.

    Hyper-parameters live in the constructor (implicit / scikit-learn style); :meth:`fit` learns
    ``user_factors_`` float32 ``(n_users, factors)`` and ``item_factors_`` float32 ``(n_items, factors)``
    aligned with ``train``'s contiguous user/item indexes.

    Args:
        factors: latent dimension (default 32).
        regularization: L2 weight ``lambda`` of implicit's ALS (absolute, not scaled by counts), >= 0.
        iterations: ALS sweeps (each solves all users, then all items), >= 1.
        alpha: confidence slope, ``c = 1 + alpha * r`` (Hu et al. 2008), >= 0.
        weighting: ``"none"`` | ``"bm25"`` | ``"tfidf"`` (see :func:`confidence_matrix`).
        binarize: ``r = 1`` for each observed pair (implicit feedback); ``False`` uses the rating.
        min_rating: drop events rated below this before fitting (``None``: keep all).
        seed: seeds implicit's factor initialisation (``random_state``).
        use_gpu: ``None`` = ``implicit.gpu.HAS_CUDA`` (GPU when implicit was built with CUDA and a
            device is visible), ``True`` requires it, ``False`` forces the CPU.
        num_threads: OpenMP threads of implicit's CPU solver (default 0 = all cores, as in implicit).
        on_empty: users/items that had events but lost all of them to ``min_rating``: ``"drop"``
            (default: left out of the artifact, counted in ``stats_`` and the manifest, a warning logged)
            or ``"error"`` (:class:`~annrec.errors.DataError`). Users/items with no events at all in
            ``train`` (e.g. items that only occur in the test part of a split) are always left out of
            the artifact and counted.
        show_progress: implicit's tqdm progress bar during fitting.

    Raises:
        InputError: non-positive ``factors``/``iterations``, negative ``alpha``/``regularization``, unknown
            ``weighting``/``on_empty``, NaN/Inf values, ``use_gpu=True`` without CUDA support.
    """

    def __init__(self, factors: int = 32, regularization: float = 0.01, iterations: int = 15, alpha: float = 1.0,
                 weighting: str = "none", binarize: bool = True, min_rating: float | None = None, seed: int = 0,
                 use_gpu: bool | None = None, num_threads: int = 0, on_empty: str = "drop",
                 show_progress: bool = False) -> None:
        self.factors = _int_param("factors", factors)
        self.regularization = _float_param("regularization", regularization)
        self.iterations = _int_param("iterations", iterations)
        self.alpha = _float_param("alpha", alpha)
        if weighting not in WEIGHTINGS:
            raise InputError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
        self.weighting = weighting
        if not isinstance(binarize, (bool, np.bool_)):
            raise InputError(f"binarize must be True or False; got {binarize!r}")
        self.binarize = bool(binarize)
        self.min_rating = _float_param("min_rating", min_rating, minimum=-math.inf, allow_none=True)
        self.seed = _int_param("seed", seed, minimum=0)
        if use_gpu is not None and not isinstance(use_gpu, (bool, np.bool_)):
            raise InputError(f"use_gpu must be None (auto), True or False; got {use_gpu!r}")
        self.use_gpu = use_gpu
        self.num_threads = _int_param("num_threads", num_threads, minimum=0)
        if on_empty not in ON_EMPTY:
            raise InputError(f"on_empty must be one of {', '.join(ON_EMPTY)}; got {on_empty!r}")
        self.on_empty = on_empty
        self.show_progress = bool(show_progress)
        self.model_ = None
        self.user_factors_: np.ndarray | None = None
        self.item_factors_: np.ndarray | None = None
        self.stats_: dict[str, Any] = {}

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable), as scikit-learn's ``get_params``."""
        return dict(factors=self.factors, regularization=self.regularization, iterations=self.iterations,
                    alpha=self.alpha, weighting=self.weighting, binarize=self.binarize, min_rating=self.min_rating,
                    seed=self.seed, use_gpu=self.use_gpu, num_threads=self.num_threads, on_empty=self.on_empty)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"ImplicitALS({inner})"

    def _resolve_gpu(self) -> bool:
        import implicit.gpu

        has = bool(implicit.gpu.HAS_CUDA)
        if self.use_gpu is None:
            return has
        if self.use_gpu and not has:
            raise InputError("use_gpu=True but this implicit build has no CUDA support (implicit.gpu.HAS_CUDA "
                             "is False): install a CUDA build of implicit (e.g. conda install -c conda-forge "
                             "implicit implicit-proc=*=gpu) or pass use_gpu=False / --no-gpu")
        return bool(self.use_gpu)

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Interactions) -> ImplicitALS:
        """Factorise the confidence matrix of ``train`` (see :func:`confidence_matrix`).

        Returns:
            ``self``, with ``user_factors_`` ``(train.n_users, factors)`` and ``item_factors_``
            ``(train.n_items, factors)`` float32, ``model_`` (the fitted implicit model, on the CPU) and
            ``stats_`` (counts of users/items with and without events, fit seconds, device).

        Raises:
            InputError: ``train`` is not an Interactions.
            DataError: no events, none left after ``min_rating``, or (``on_empty="error"``) users/items
                emptied by ``min_rating``.
        """
        import implicit.als

        train = _check_interactions(train)
        C = confidence_matrix(train, self.alpha, self.weighting, self.binarize, self.min_rating)
        had_user = np.bincount(train.user_idx, minlength=train.n_users) > 0
        had_item = np.bincount(train.item_idx, minlength=train.n_items) > 0
        has_user = np.diff(C.indptr) > 0
        has_item = np.bincount(C.indices, minlength=train.n_items) > 0
        emptied_users = int((had_user & ~has_user).sum())
        emptied_items = int((had_item & ~has_item).sum())
        if emptied_users or emptied_items:
            msg = (f"min_rating={self.min_rating:g} leaves {emptied_users} user(s) and {emptied_items} item(s) of "
                   f"{train.name or 'the data'} without any event")
            if self.on_empty == "error":
                raise DataError(f"{msg}: lower min_rating, remove them first (Interactions.filter / a "
                                f"pre-filtered file), or pass on_empty='drop' (--on-empty drop) to leave them "
                                f"out of the model")
            log.warning("%s; they are left out of the artifact (on_empty='drop')", msg)
        gpu = self._resolve_gpu()
        t0 = time.perf_counter()
        with blas_single_thread():
            model = implicit.als.AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=1.0, iterations=self.iterations,
                random_state=self.seed, use_gpu=gpu, num_threads=self.num_threads, dtype=np.float32)
            model.fit(C, show_progress=self.show_progress)
        seconds = time.perf_counter() - t0
        if gpu:
            model = model.to_cpu()
        self.model_ = model
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._user_mask = has_user
        self._item_mask = has_item
        self._popularity = np.bincount(C.indices, minlength=train.n_items).astype(np.float32)
        self._fingerprint = train.fingerprint()
        self.stats_ = {
            "n_users": train.n_users, "n_items": train.n_items, "n_events": train.n_events,
            "n_pairs": int(C.nnz), "n_users_with_events": int(has_user.sum()),
            "n_items_with_events": int(has_item.sum()),
            "n_users_without_events": int((~had_user).sum()), "n_items_without_events": int((~had_item).sum()),
            "n_users_emptied_by_min_rating": emptied_users, "n_items_emptied_by_min_rating": emptied_items,
            "fit_seconds": round(seconds, 3), "device": "cuda" if gpu else "cpu",
        }
        return self

    def _check_fitted(self) -> None:
        if self.user_factors_ is None:
            raise InputError("this ImplicitALS is not fitted yet: call .fit(train) first")

    # ------------------------------------------------------------------ recommending (evaluation)
    def recommend_fn(self) -> Callable[[np.ndarray, int, list[np.ndarray]], np.ndarray]:
        """A recommender for :func:`annrec.metrics.evaluate_topn` (contiguous user/item indexes).

        Scores are ``x_u · y_i`` over the items that had training events (the items the artifact
        holds); ``seen`` items are excluded. A user without training events (left empty by
        ``min_rating``) gets the most-popular ranking of the fitted matrix instead of a zero vector's
        arbitrary one.
        """
        self._check_fitted()
        U, V = self.user_factors_, self.item_factors_
        unknown_items = ~self._item_mask
        pop = np.where(self._item_mask, self._popularity, -np.inf).astype(np.float32)

        def recommend(users: np.ndarray, k: int, seen: list[np.ndarray]) -> np.ndarray:
            users = np.asarray(users)
            scores = U[users] @ V.T
            scores[:, unknown_items] = -np.inf
            cold = ~self._user_mask[users]
            if cold.any():
                scores[cold] = pop
            return top_k_excluding(scores, k, seen)

        return recommend

    # ------------------------------------------------------------------ export
    def to_embeddings(self, train: Interactions, figures: Mapping[str, Any] | None = None) -> Embeddings:
        """The Embeddings artifact: item factors as ``vectors``, user factors as ``queries``, metric ``ip``.

        Only users and items with (kept) training events are exported; the manifest counts the others.

        Args:
            train: the SAME interactions :meth:`fit` saw (checked by fingerprint).
            figures: quality figures to store in ``manifest["figures"]`` (e.g. the top-N table).

        Returns:
            :class:`~annrec.embeddings.Embeddings` with ``vectors`` float32 ``(n_items_with_events, factors)``,
            ``ids`` their external item ids, ``queries`` float32 ``(n_users_with_events, factors)``,
            ``query_ids``, ``seen`` = the binary training matrix (all of the user's training events,
            whatever ``min_rating``) restricted to those rows/columns, ``items`` = ``{id: {"title", "genres"}}``
            when ``train.items`` has them, and a manifest (trainer ``"als"``, params, dataset, data hash,
            counts, figures, serving note).

        Raises:
            InputError: not fitted, or ``train`` is not the data it was fitted on.
        """
        from annrec.embeddings import Embeddings

        self._check_fitted()
        train = _check_interactions(train)
        if train.fingerprint() != self._fingerprint:
            raise InputError("to_embeddings got other interactions than fit saw (fingerprints differ): pass "
                             "the same Interactions object you fitted on")
        users = np.flatnonzero(self._user_mask)
        items = np.flatnonzero(self._item_mask)
        seen = train.to_csr(binary=True)[users][:, items]
        meta = _item_metadata(train, train.item_ids[items])
        manifest = {
            "trainer": "als",
            "params": self.get_params(),
            "library": "implicit.als.AlternatingLeastSquares (confidence c = 1 + alpha * r passed as data, "
                       "implicit alpha = 1)",
            "dataset": train.name,
            "data_hash": train.fingerprint(),
            "n_events": train.n_events,
            "counts": dict(self.stats_),
            "figures": dict(figures or {}),
            "serving": "maximum inner product search: item vector y_i, query (user) vector x_u, score x_u . y_i",
        }
        return Embeddings(vectors=self.item_factors_[items], ids=train.item_ids[items], metric="ip",
                          queries=self.user_factors_[users], query_ids=train.user_ids[users], items=meta,
                          manifest=manifest, seen=seen)


def _item_metadata(train: Interactions, ids: np.ndarray) -> dict | None:
    """``{external id: {"title": str, "genres": [str]}}`` for ``ids`` from ``train.items`` (None if absent)."""
    items = train.items
    if items is None or len(items) == 0:
        return None
    cols = [c for c in ("title", "genres") if c in items.columns]
    if not cols:
        return None
    sub = items.reindex(ids.tolist())[cols]
    out: dict = {}
    for key, row in zip(ids.tolist(), sub.itertuples(index=False)):
        entry: dict[str, Any] = {}
        for c, v in zip(cols, row):
            if isinstance(v, (list, tuple, np.ndarray)):
                entry[c] = [str(x) for x in v]
            elif isinstance(v, str):
                entry[c] = v
        if entry:
            out[key] = entry
    return out or None


# ----------------------------------------------------------------------------------------------- item-kNN
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
        self.K = _int_param("K", K)
        self.num_threads = _int_param("num_threads", num_threads, minimum=0)
        if fill not in ("popularity", "none"):
            raise InputError(f"fill must be 'popularity' or 'none'; got {fill!r}")
        self.fill = fill
        self.model_ = None

    def get_params(self) -> dict[str, Any]:
        return dict(K=self.K, num_threads=self.num_threads, fill=self.fill)

    def fit(self, train: Interactions) -> ItemKNN:
        """Compute the item-item cosine neighbourhoods of ``train.to_csr(binary=True)``; returns ``self``."""
        from implicit.nearest_neighbours import CosineRecommender

        train = _check_interactions(train)
        self._X = train.to_csr(binary=True)
        with blas_single_thread(), warnings.catch_warnings():
            # CosineRecommender.fit hands its own normalised COO matrix to a CSR method (implicit 0.7)
            warnings.filterwarnings("ignore", message="Method expects CSR input", category=Warning)
            model = CosineRecommender(K=self.K, num_threads=self.num_threads)
            model.fit(self._X, show_progress=False)
        self.model_ = model
        self._popularity = np.bincount(train.item_idx, minlength=train.n_items).astype(np.float32)
        return self

    def recommend_fn(self) -> Callable[[np.ndarray, int, list[np.ndarray]], np.ndarray]:
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


# ----------------------------------------------------------------------------------------------- evaluation
def baseline_recommenders(train: Interactions, names: Sequence[str] = ("popularity", "item_knn"),
                          num_threads: int = 0) -> dict[str, Callable]:
    """Baseline ``recommend_fn`` s fitted on ``train``: ``"popularity"`` and/or ``"item_knn"``.

    Raises:
        InputError: an unknown name.
    """
    out: dict[str, Callable] = {}
    for name in names:
        if name == "popularity":
            out[name] = popularity_recommender(train)
        elif name in ("item_knn", "item-knn"):
            out["item_knn"] = ItemKNN(num_threads=num_threads).fit(train).recommend_fn()
        else:
            raise InputError(f"unknown baseline {name!r}: use popularity or item_knn")
    return out


def evaluate_topn_table(recommenders: Mapping[str, Callable], train: Interactions, test: Interactions,
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


# ----------------------------------------------------------------------------------------------- search
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

    Raises:
        InputError: bad arguments or parameter values (raised by ImplicitALS before any fit).
        DataError: ``train`` too small to carve a validation split (no user with 2+ events).
    """
    from annrec.data import temporal_user_split

    train = _check_interactions(train)
    k = _int_param("k", k)
    max_fits = _int_param("max_fits", max_fits)
    current = ImplicitALS(**dict(base_params or {})).get_params()
    for stage in stages:  # every setting is checked before anything is fitted
        for change in stage:
            ImplicitALS(**{**current, **dict(change)})
    fit_part, val_part = temporal_user_split(train, val_fraction)
    if val_part.n_events == 0:
        raise DataError("no user has 2 or more training events, so no validation split can be carved from "
                        "the training data: search needs more data (or train with fixed parameters)")
    metric = f"recall@{k}"
    tried: dict[tuple, dict[str, Any]] = {}
    trials: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def key_of(p: Mapping[str, Any]) -> tuple:
        return tuple(sorted((n, v) for n, v in p.items() if n not in ("num_threads", "use_gpu", "on_empty")))

    def score(p: dict[str, Any]) -> dict[str, Any] | None:
        key = key_of(p)
        if key in tried:
            return tried[key]
        if len(tried) >= max_fits:
            return None
        model = ImplicitALS(**p).fit(fit_part)
        m = evaluate_topn(model.recommend_fn(), fit_part, val_part, k)
        rec = {"params": {n: p[n] for n in ("factors", "regularization", "iterations", "alpha", "weighting")},
               metric: round(float(m[metric]), 5), f"ndcg@{k}": round(float(m[f"ndcg@{k}"]), 5),
               "fit_seconds": model.stats_["fit_seconds"]}
        tried[key] = rec
        trials.append(rec)
        return rec

    total = sum(len(s) for s in stages) + 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="ALS search", unit="setting")
    try:
        best_params = dict(current)
        best = score(best_params)
        if bar is not None:
            bar.update(1)
        for stage in stages:
            stage_base = dict(best_params)
            for change in stage:
                cand = {**stage_base, **dict(change)}
                rec = score(cand)
                if bar is not None:
                    bar.update(1)
                if rec is None:  # max_fits reached
                    break
                if (rec[metric], rec[f"ndcg@{k}"]) > (best[metric], best[f"ndcg@{k}"]):
                    best, best_params = rec, cand
    finally:
        if bar is not None:
            bar.close()
    best["selected"] = True
    split = {"protocol": f"temporal_user_split(train, {val_fraction})", "fit_events": fit_part.n_events,
             "validation_events": val_part.n_events, "train_fingerprint": train.fingerprint()}
    return ALSSearchResult(best_params=best_params, best_score=best[metric], metric=metric, trials=trials,
                           n_fits=len(tried), seconds=time.perf_counter() - t0, split=split)
