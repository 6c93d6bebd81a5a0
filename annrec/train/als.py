"""Implicit-feedback ALS (``implicit``): the confidence matrix and the :class:`ImplicitALS` trainer.

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

The baselines it is compared with (most-popular, item-kNN) are in :mod:`annrec.eval.baselines`, the
top-N table in :mod:`annrec.eval.topn` and the hyper-parameter search in :mod:`annrec.train.search`.

Threads: ``implicit`` runs its own OpenMP pool (``num_threads``; ``None``: the machine's cores); BLAS is
limited to 1 thread around fitting (:func:`annrec.train.base.blas_single_thread`), as implicit
recommends, which also silences its oversubscription warning.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from annrec.errors import DataError, InputError
from annrec.metrics import top_k_excluding
from annrec.train.base import (RecommendFn, Trainer, blas_single_thread, check_interactions, float_param, int_param,
                               item_metadata, renamed_params, resolve_num_threads)

if TYPE_CHECKING:
    from annrec.data import Interactions
    from annrec.embeddings import Embeddings

__all__ = ["ImplicitALS", "WEIGHTINGS", "BM25_K1", "BM25_B", "confidence_matrix", "check_als_interactions"]

log = logging.getLogger(__name__)

#: Weightings of the interaction matrix before the confidence transform.
WEIGHTINGS = ("none", "bm25", "tfidf")
#: BM25 parameters of ``bm25_weight`` (implicit's defaults, used in its last.fm ALS example).
BM25_K1 = 100.0
BM25_B = 0.8
#: What to do with users/items whose every event the ``min_rating`` filter removed.
ON_EMPTY = ("drop", "error")
#: The ``device`` values: ``None`` (CUDA when implicit has it), ``"cpu"``, ``"cuda"``.
DEVICES = (None, "cpu", "cuda")


def check_als_interactions(data: Any, what: str = "train") -> Interactions:
    """``data`` if it is a non-empty Interactions. Raises InputError (type) or DataError (no events)."""
    return check_interactions(data, what, empty_error=DataError, needs="at least one interaction (ALS)")


def _use_gpu_to_device(use_gpu: Any) -> str | None:
    if use_gpu is None:
        return None
    if isinstance(use_gpu, (bool, np.bool_)):
        return "cuda" if use_gpu else "cpu"
    raise InputError(f"use_gpu must be None (auto), True or False; got {use_gpu!r} (use device=None/'cpu'/'cuda')")


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

    alpha = float_param("alpha", alpha)
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
    min_rating = float_param("min_rating", min_rating, minimum=-math.inf, allow_none=True)
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
class ImplicitALS(Trainer):
    """Implicit-feedback ALS over an :class:`~annrec.data.Interactions` log, exported for MIPS.

    Follows :class:`annrec.train.base.Trainer` (implicit / scikit-learn style); :meth:`fit` learns
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
        device: ``None`` = ``"cuda"`` when ``implicit.gpu.HAS_CUDA`` (implicit built with CUDA and a device
            visible) else ``"cpu"``; ``"cuda"`` requires it; ``"cpu"`` forces the CPU. ``use_gpu`` before
            (``True`` / ``False`` / ``None``; deprecated).
        num_threads: OpenMP threads of implicit's CPU solver; ``None``: the machine's cores (``0``, implicit's
            own spelling of all cores, is accepted too).
        on_empty: users/items that had events but lost all of them to ``min_rating``: ``"drop"``
            (default: left out of the artifact, counted in ``stats_`` and the manifest, a warning logged)
            or ``"error"`` (:class:`~annrec.errors.DataError`). Users/items with no events at all in
            ``train`` (e.g. items that only occur in the test part of a split) are always left out of
            the artifact and counted.
        show_progress: implicit's tqdm progress bar during fitting.

    Raises:
        InputError: non-positive ``factors``/``iterations``, negative ``alpha``/``regularization``, unknown
            ``weighting``/``on_empty``/``device``, NaN/Inf values; ``device="cuda"`` without CUDA support (on fit).
    """

    name = "als"

    def __init__(self, factors: int = 32, regularization: float = 0.01, iterations: int = 15, alpha: float = 1.0,
                 weighting: str = "none", binarize: bool = True, min_rating: float | None = None, seed: int = 0,
                 device: str | None = None, num_threads: int | None = None, on_empty: str = "drop",
                 show_progress: bool = False, **deprecated: Any) -> None:
        kw = renamed_params("ImplicitALS", deprecated, {"use_gpu": ("device", _use_gpu_to_device),
                                                         "threads": "num_threads"},
                            dict(device=device, num_threads=num_threads))
        self.factors = int_param("factors", factors)
        self.regularization = float_param("regularization", regularization)
        self.iterations = int_param("iterations", iterations)
        self.alpha = float_param("alpha", alpha)
        if weighting not in WEIGHTINGS:
            raise InputError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
        self.weighting = weighting
        if not isinstance(binarize, (bool, np.bool_)):
            raise InputError(f"binarize must be True or False; got {binarize!r}")
        self.binarize = bool(binarize)
        self.min_rating = float_param("min_rating", min_rating, minimum=-math.inf, allow_none=True)
        self.seed = int_param("seed", seed, minimum=0)
        if kw["device"] not in DEVICES:
            raise InputError(f"device must be None (auto), 'cpu' or 'cuda'; got {kw['device']!r}")
        self.device = kw["device"]
        self.num_threads = None if kw["num_threads"] is None else int_param("num_threads", kw["num_threads"], 0)
        if on_empty not in ON_EMPTY:
            raise InputError(f"on_empty must be one of {', '.join(ON_EMPTY)}; got {on_empty!r}")
        self.on_empty = on_empty
        self.show_progress = bool(show_progress)
        self.model_ = None
        self.user_factors_: np.ndarray | None = None
        self.item_factors_: np.ndarray | None = None
        self.stats_: dict[str, Any] = {}
        self._fitted = False

    def _resolve_gpu(self) -> bool:
        import implicit.gpu

        has = bool(implicit.gpu.HAS_CUDA)
        if self.device is None:
            return has
        if self.device == "cuda" and not has:
            raise InputError("device='cuda' but this implicit build has no CUDA support (implicit.gpu.HAS_CUDA "
                             "is False): install a CUDA build of implicit (e.g. conda install -c conda-forge "
                             "implicit implicit-proc=*=gpu) or pass device='cpu' / --device cpu")
        return self.device == "cuda"

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Interactions, validation: Interactions | None = None) -> ImplicitALS:
        """Factorise the confidence matrix of ``train`` (see :func:`confidence_matrix`).

        ``validation`` is accepted for the trainer contract and not used (ALS runs a fixed number of
        ``iterations``; choose them with :func:`annrec.train.search.search_als`).

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

        train = check_als_interactions(train)
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
                random_state=self.seed, use_gpu=gpu, dtype=np.float32,
                num_threads=0 if self.num_threads == 0 else resolve_num_threads(self.num_threads))
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
        self._train_data = train
        self.stats_ = {
            "n_users": train.n_users, "n_items": train.n_items, "n_events": train.n_events,
            "n_pairs": int(C.nnz), "n_users_with_events": int(has_user.sum()),
            "n_items_with_events": int(has_item.sum()),
            "n_users_without_events": int((~had_user).sum()), "n_items_without_events": int((~had_item).sum()),
            "n_users_emptied_by_min_rating": emptied_users, "n_items_emptied_by_min_rating": emptied_items,
            "fit_seconds": round(seconds, 3), "device": "cuda" if gpu else "cpu",
        }
        self._fitted = True
        return self

    # ------------------------------------------------------------------ recommending (evaluation)
    def recommend_fn(self) -> RecommendFn:
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
    def to_embeddings(self, train: Interactions | None = None, *, figures: Mapping[str, Any] | None = None
                      ) -> Embeddings:
        """The Embeddings artifact: item factors as ``vectors``, user factors as ``queries``, metric ``ip``.

        Only users and items with (kept) training events are exported; the manifest counts the others.

        Args:
            train: deprecated (fit keeps the data it saw); when given it must be that data.
            figures: quality figures to store in ``manifest["figures"]`` (e.g. the top-N table).

        Returns:
            :class:`~annrec.embeddings.Embeddings` with ``vectors`` float32 ``(n_items_with_events, factors)``,
            ``ids`` their external item ids, ``queries`` float32 ``(n_users_with_events, factors)``,
            ``query_ids``, ``seen`` = the binary training matrix (all of the user's training events,
            whatever ``min_rating``) restricted to those rows/columns, ``items`` = ``{id: {"title", "genres"}}``
            when ``train.items`` has them, and a manifest (trainer ``"als"``, params, dataset, data hash,
            counts, figures, serving note; params = :meth:`get_params`).

        Raises:
            NotFittedError: not fitted. InputError: ``train`` is not the data it was fitted on.
        """
        from annrec.embeddings import Embeddings

        self._check_fitted()
        train = self._kept_train(train)
        users = np.flatnonzero(self._user_mask)
        items = np.flatnonzero(self._item_mask)
        seen = train.to_csr(binary=True)[users][:, items]
        meta = item_metadata(train.items, train.item_ids[items])
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
