"""Evaluation of node / item vectors: multi-label classification (genre F1) and item-to-item top-N.

**Multi-label node classification** (``DESIGN.md``, "Graph embeddings"; the protocol of DeepWalk,
Perozzi et al. 2014, section 5, and of its ``example_graphs/scoring.py``): the labelled nodes are shuffled,
a fraction (50%) trains a one-vs-rest logistic regression (scikit-learn ``OneVsRestClassifier(
LogisticRegression(solver="liblinear", C=1))``, liblinear being scikit-learn's default solver when DeepWalk
was published), and each held-out node is assigned as many labels as it truly has - the ``k`` labels of
highest predicted probability. Micro-F1 and Macro-F1 (scikit-learn ``f1_score``) are averaged over
``repeats`` random splits (seeds ``seed .. seed + repeats - 1``).

**Item-to-item recommendation** through the top-N protocol (:func:`annrec.metrics.evaluate_topn`): a
user's candidate items are scored by their mean cosine similarity to the items of the user's training
history (equivalently, by the dot product of the unit item vector with the sum of the unit history
vectors); items seen in training are excluded; items without a vector rank last. Optionally the score is
blended with the item's training popularity (``+ beta * log(1 + count)``), ``beta`` to be chosen on a
validation split carved from the training data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from annrec.errors import InputError

NO_GENRE = "(no genres listed)"


def multilabel_f1(vectors, labels: Sequence[Sequence], *, train_fraction: float = 0.5, repeats: int = 5,
                  seed: int = 0, C: float = 1.0, solver: str = "liblinear",
                  normalize: bool = False) -> dict[str, Any]:
    """Micro-F1 / Macro-F1 of one-vs-rest logistic regression predicting each node's top-k labels.

    Args:
        vectors: float ``(n, dim)`` node vectors (text vectors work the same way).
        labels: ``n`` lists of labels (any hashable); nodes with an empty list are left out.
        train_fraction: share of the labelled nodes used for training (0.5 in DESIGN.md).
        repeats: random splits to average over.
        seed: first split's seed.
        C, solver: of scikit-learn's ``LogisticRegression``.
        normalize: scale vectors to unit length first (off: the DeepWalk protocol uses raw vectors).

    Returns:
        ``{"micro_f1", "macro_f1", "micro_f1_std", "macro_f1_std", "repeats", "nodes", "labels",
        "train_fraction", "classifier"}``.

    Raises:
        InputError: lengths differ, fewer than 2 labelled nodes per split side, fewer than 2 labels,
            ``train_fraction`` not in (0, 1), ``repeats`` < 1.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    X = np.asarray(vectors, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"vectors must be a 2-d array (n, dim); got shape {X.shape}")
    if len(labels) != len(X):
        raise InputError(f"{len(labels)} label lists for {len(X)} vectors: give one list per vector "
                         f"(an empty list for an unlabelled node)")
    if not 0.0 < float(train_fraction) < 1.0:
        raise InputError(f"train_fraction must be in (0, 1); got {train_fraction}")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise InputError(f"repeats must be an integer >= 1; got {repeats!r}")
    if not np.isfinite(X).all():
        raise InputError("vectors contain NaN or Inf: remove or repair those rows")
    lab = [list(dict.fromkeys(l)) for l in labels]
    rows = np.asarray([i for i, l in enumerate(lab) if len(l)], dtype=np.int64)
    if normalize:
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    mlb = MultiLabelBinarizer()
    Y = mlb.fit_transform([lab[i] for i in rows])
    X = X[rows]
    n = len(rows)
    n_train = int(round(n * float(train_fraction)))
    if n_train < 2 or n - n_train < 2:
        raise InputError(f"only {n} labelled nodes: need at least 2 for training and 2 for testing")
    if Y.shape[1] < 2:
        raise InputError(f"only {Y.shape[1]} distinct label(s): multi-label classification needs >= 2")
    k = Y.sum(axis=1)
    micro, macro = [], []
    for r in range(int(repeats)):
        perm = np.random.default_rng(seed + r).permutation(n)
        tr, te = perm[:n_train], perm[n_train:]
        clf = OneVsRestClassifier(LogisticRegression(C=C, solver=solver, max_iter=1000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)  # "Label not present in all training examples"
            clf.fit(X[tr], Y[tr])
            proba = clf.predict_proba(X[te])
        order = np.argsort(-proba, axis=1, kind="stable")
        pred = np.zeros_like(Y[te])
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(Y.shape[1])[None, :].repeat(len(te), 0), axis=1)
        pred[ranks < k[te][:, None]] = 1
        micro.append(f1_score(Y[te], pred, average="micro", zero_division=0))
        macro.append(f1_score(Y[te], pred, average="macro", zero_division=0))
    return {"micro_f1": float(np.mean(micro)), "macro_f1": float(np.mean(macro)),
            "micro_f1_std": float(np.std(micro)), "macro_f1_std": float(np.std(macro)),
            "repeats": int(repeats), "nodes": int(n), "labels": int(Y.shape[1]),
            "train_fraction": float(train_fraction),
            "classifier": f"one-vs-rest LogisticRegression(C={C}, solver={solver!r}), top-k labels"}


def genre_labels(items, ids) -> list[list[str]]:
    """Genre lists of ``ids`` from item metadata (``"(no genres listed)"`` and unknown ids -> ``[]``).

    Args:
        items: a ``pandas.DataFrame`` indexed by item id with a ``genres`` column (lists of str, or
            ``"A|B"`` strings as in MovieLens ``movies.csv``), or a dict ``{id: {"genres": [...]}}``
            (:attr:`Embeddings.items`).
        ids: item ids in vector row order.
    """
    if items is None:
        raise InputError("no item metadata to read genres from: pass the data set's items table")
    if hasattr(items, "columns"):
        if "genres" not in items.columns:
            raise InputError("the items table has no 'genres' column")
        lookup = dict(zip(items.index.tolist(), items["genres"].tolist()))
        get = lookup.get
    else:
        get = lambda i: (items.get(i) or {}).get("genres")  # noqa: E731
    out = []
    for i in np.asarray(ids).tolist():
        g = get(i)
        if isinstance(g, str):
            g = g.split("|")
        if g is None or (isinstance(g, float) and np.isnan(g)):
            g = []
        out.append([str(x) for x in g if x and str(x) != NO_GENRE])
    return out


def genre_f1(embeddings, items=None, **kwargs) -> dict[str, Any]:
    """:func:`multilabel_f1` of an :class:`~annrec.embeddings.Embeddings`' item vectors on item genres.

    ``items`` defaults to the artifact's own ``items`` metadata. Keyword arguments go to
    :func:`multilabel_f1`.
    """
    labels = genre_labels(items if items is not None else embeddings.items, embeddings.ids)
    return multilabel_f1(embeddings.vectors, labels, **kwargs)


# ---------------------------------------------------------------------- item-to-item top-N
def item_vectors_by_index(embeddings, item_ids) -> tuple[np.ndarray, np.ndarray]:
    """Unit item vectors aligned with an Interactions' item indexes.

    Args:
        embeddings: :class:`~annrec.embeddings.Embeddings`.
        item_ids: the Interactions' ``item_ids`` (external ids, index order).

    Returns:
        ``(V, has)``: float32 ``(n_items, dim)`` unit vectors (zero rows for items without a vector) and a
        bool ``(n_items,)`` mask of the items that have one.
    """
    row = {v: i for i, v in enumerate(embeddings.ids.tolist())}
    idx = np.asarray([row.get(v, -1) for v in np.asarray(item_ids).tolist()], dtype=np.int64)
    has = idx >= 0
    V = np.zeros((len(idx), embeddings.dim), dtype=np.float32)
    vec = embeddings.vectors[idx[has]]
    V[has] = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    return V, has


def item_to_item_recommender(V: np.ndarray, has: np.ndarray, *, last_n: int | None = None,
                             histories: Sequence[np.ndarray] | None = None, counts: np.ndarray | None = None,
                             popularity_weight: float = 0.0):
    """A recommender for :func:`annrec.metrics.evaluate_topn` that ranks items by mean cosine similarity
    to the user's history.

    Args:
        V: float32 ``(n_items, dim)`` unit vectors by item index (:func:`item_vectors_by_index`).
        has: bool ``(n_items,)`` items that have a vector (others rank last).
        last_n: use only the user's last ``n`` history items (``None``: all of them).
        histories: per user index, the time-ordered training item indexes
            (:meth:`Interactions.sequences`); needed for ``last_n`` (``seen`` is not in time order).
        counts: ``(n_items,)`` training interaction counts, for ``popularity_weight``.
        popularity_weight: ``beta`` of the blended score ``mean cosine + beta * log(1 + count)``
            (0: pure similarity, the protocol's item-to-item score). DeepWalk vectors on a co-occurrence
            graph place rare items next to the hubs they hang off, so pure similarity favours rare items.

    Returns:
        ``f(users, k, seen) -> (b, k)`` item indexes; ``seen`` (the training items) is the history and
        is excluded from the ranking.
    """
    from annrec.metrics import top_k_excluding

    if last_n is not None and histories is None:
        raise InputError("last_n needs the users' time-ordered histories (train.sequences())")
    penalty = np.where(has, 0.0, -1e9).astype(np.float32)
    if popularity_weight:
        if counts is None:
            raise InputError("popularity_weight needs the training counts per item (counts=...)")
        penalty = penalty + float(popularity_weight) * np.log1p(np.asarray(counts, dtype=np.float32))

    def recommend(users: np.ndarray, k: int, seen: list[np.ndarray]) -> np.ndarray:
        Q = np.zeros((len(users), V.shape[1]), dtype=np.float32)
        for j, (u, s) in enumerate(zip(users, seen)):
            s = np.asarray(s, dtype=np.int64)
            if last_n is not None:
                s = np.asarray(histories[int(u)], dtype=np.int64)[-last_n:]
            if len(s):
                Q[j] = V[s].sum(axis=0) / len(s)
        scores = Q @ V.T + penalty
        return top_k_excluding(scores, k, seen)

    return recommend


def evaluate_item_to_item(embeddings, train, test, *, k: int = 10, last_n: int | None = None,
                          popularity_weight: float = 0.0, baseline: bool = True) -> dict[str, Any]:
    """Top-N protocol (:func:`annrec.metrics.evaluate_topn`) of item-to-item recommendation.

    Args:
        embeddings: item vectors trained on ``train`` only (never on ``test``).
        train, test: a split in one id space (:func:`annrec.data.temporal_user_split`).
        k: cut-off (10 in DESIGN.md).
        last_n, popularity_weight: see :func:`item_to_item_recommender`.
        baseline: also report the popularity baseline (key ``"popularity"``).

    Returns:
        ``evaluate_topn``'s figures (``recall@10``, ``ndcg@10``, ``mrr``, ``map@10``, ``precision@10``,
        ``coverage@10``, ``users``) plus ``items_with_vectors`` and, with ``baseline``, ``popularity``.
    """
    from annrec.metrics import evaluate_topn, popularity_recommender

    V, has = item_vectors_by_index(embeddings, train.item_ids)
    counts = np.bincount(train.item_idx, minlength=train.n_items)
    rec = item_to_item_recommender(V, has, last_n=last_n, histories=train.sequences() if last_n is not None else None,
                                   counts=counts, popularity_weight=popularity_weight)
    out: dict[str, Any] = dict(evaluate_topn(rec, train, test, k=k))
    out["items_with_vectors"] = int(has.sum())
    out["history"] = "all" if last_n is None else f"last {last_n}"
    out["popularity_weight"] = float(popularity_weight)
    if baseline:
        out["popularity"] = dict(evaluate_topn(popularity_recommender(train), train, test, k=k))
    return out


def evaluate_embeddings_genres(embeddings, items=None, *, seed: int = 0, **kwargs) -> dict[str, Any]:
    """Genre classification of an Embeddings artifact (alias of :func:`genre_f1` with ``seed``; used by
    ``annrec train text`` and ``annrec train deepwalk``)."""
    return genre_f1(embeddings, items, seed=seed, **kwargs)
