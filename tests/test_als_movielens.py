"""ALS and the baselines on ml-latest-small with the top-N protocol (real data, ``slow``).

Figures (per-user temporal split, 20% test, k=10, seen items excluded; bench/als_quality.py measures them
over several seeds): popularity Recall@10 0.0824; default ALS (32 factors, reg 0.01, 15 iterations,
alpha 1) 0.1158 at seed 0; the setting the search picks 0.1226.
"""

from __future__ import annotations

import numpy as np
import pytest

from annrec.data import load_movielens, temporal_user_split
from annrec.metrics import evaluate_topn, popularity_recommender
from annrec.eval.baselines import ItemKNN
from annrec.train.als import ImplicitALS

from _data_fixtures import require_real_data

pytestmark = pytest.mark.slow

#: What search_als picks on the validation split of the training part (bench/als_quality.py --search).
SEARCHED = dict(factors=128, regularization=10.0, iterations=30, alpha=0.5, weighting="none")


@pytest.fixture(scope="module")
def split():
    root = require_real_data()
    ml = load_movielens("ml-latest-small", data_dir=root)
    return temporal_user_split(ml, 0.2)


@pytest.fixture(scope="module")
def default_model(split):
    return ImplicitALS().fit(split[0])


def test_popularity_reproduces_0_082(split):
    train, test = split
    m = evaluate_topn(popularity_recommender(train), train, test, 10)
    assert m["recall@10"] == pytest.approx(0.082, abs=0.002)
    assert m["users"] == 610


def test_default_als_beats_the_baselines(split, default_model):
    train, test = split
    als = evaluate_topn(default_model.recommend_fn(), train, test, 10)
    pop = evaluate_topn(popularity_recommender(train), train, test, 10)
    knn = evaluate_topn(ItemKNN().fit(train).recommend_fn(), train, test, 10)
    # measured 0.1158 (seed 0); 5 seeds: 0.1146..0.1169
    assert als["recall@10"] >= 0.113
    assert als["recall@10"] > pop["recall@10"] + 0.03 and als["ndcg@10"] > pop["ndcg@10"] + 0.02
    assert als["coverage@10"] > 5 * pop["coverage@10"]
    assert knn["recall@10"] > pop["recall@10"] + 0.02  # measured 0.1126


def test_implicit_default_figure_under_implicits_own_metric(split):
    """implicit's default usage (= alpha 0 here) reaches the reference 0.118 under implicit's ranking_metrics_at_k,
    whose "precision" is recall with the min(k, |relevant|) denominator summed over users (a micro average);
    annrec's recall@10 averages per user (0.1178 for the same model)."""
    from implicit.evaluation import ranking_metrics_at_k

    train, test = split
    model = ImplicitALS(alpha=0.0, seed=0).fit(train)
    theirs = ranking_metrics_at_k(model.model_, train.to_csr(binary=True), test.to_csr(binary=True), K=10,
                                  show_progress=False)
    assert theirs["precision"] >= 0.118
    ours = evaluate_topn(model.recommend_fn(), train, test, 10)
    assert ours["recall@10"] == pytest.approx(0.1178, abs=0.003)


def test_searched_setting_meets_the_quality_bar(split):
    train, test = split
    model = ImplicitALS(**SEARCHED).fit(train)
    m = evaluate_topn(model.recommend_fn(), train, test, 10)
    assert m["recall@10"] >= 0.118  # measured 0.1226


def test_mips_over_the_artifact_matches_implicit_on_movielens(split, default_model):
    from annrec.recommend import Recommender

    train, _ = split
    emb = default_model.to_embeddings()
    assert emb.vectors.shape == (8239, 32) and emb.queries.shape == (610, 32)  # items with training events
    rec = Recommender(emb)  # exact FAISS inner-product search
    X = train.to_csr(binary=True)
    items_with_events = np.flatnonzero(np.bincount(train.item_idx, minlength=train.n_items) > 0)
    for u in (0, 100, 333, 609):
        ids, _ = default_model.model_.recommend(u, X[u], N=10, items=items_with_events)
        got = [r.item_id for r in rec.recommend(int(train.user_ids[u]), k=10)]
        assert got == train.item_ids[ids].tolist()
