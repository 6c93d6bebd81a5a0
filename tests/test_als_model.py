"""ImplicitALS, ItemKNN, the confidence matrix and the search, on small synthetic logs (fast)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from annrec.data import Interactions, temporal_user_split
from annrec.embeddings import Embeddings
from annrec.errors import DataError, InputError, UnknownIdError
from annrec.metrics import evaluate_topn
from annrec.eval.baselines import ItemKNN
from annrec.metrics import popularity_recommender
from annrec.train import search as search_mod
from annrec.train.base import blas_single_thread
from annrec.train.als import ImplicitALS, confidence_matrix
from annrec.train.search import search_als

from _als_fixtures import ITEMS_PER_GROUP, USERS_PER_GROUP, make_log


@pytest.fixture(scope="module")
def log() -> Interactions:
    return make_log()


@pytest.fixture(scope="module")
def fitted(log) -> ImplicitALS:
    return ImplicitALS(factors=8, iterations=8, seed=0).fit(log)


# ------------------------------------------------------------------------------------------ shapes and ids
def test_fit_shapes_and_stats(log, fitted):
    assert fitted.user_factors_.shape == (log.n_users, 8)
    assert fitted.item_factors_.shape == (log.n_items, 8)
    assert fitted.user_factors_.dtype == np.float32 and fitted.item_factors_.dtype == np.float32
    assert np.isfinite(fitted.user_factors_).all() and np.abs(fitted.item_factors_).sum() > 0
    s = fitted.stats_
    assert s["n_users_with_events"] == log.n_users and s["n_items_with_events"] == log.n_items
    assert s["n_pairs"] == log.to_csr().nnz and s["device"] == "cpu"


def test_to_embeddings_ids_shapes_manifest(log, fitted, tmp_path):
    emb = fitted.to_embeddings(figures={"topn": {"als": {"recall@10": 0.5}}})
    assert emb.metric == "ip" and emb.dim == 8
    assert emb.vectors.shape == (log.n_items, 8) and emb.queries.shape == (log.n_users, 8)
    assert emb.ids.tolist() == log.item_ids.tolist()
    assert emb.query_ids.tolist() == log.user_ids.tolist()
    np.testing.assert_array_equal(emb.vectors, fitted.item_factors_)
    np.testing.assert_array_equal(emb.queries, fitted.user_factors_)
    assert (emb.seen != log.to_csr(binary=True)).nnz == 0
    assert emb.items[15] == {"title": "Movie 15", "genres": ["G0"]}
    m = emb.manifest
    assert m["trainer"] == "als" and m["params"]["factors"] == 8 and m["dataset"] == "synthetic"
    assert m["data_hash"] == log.fingerprint() and m["figures"]["topn"]["als"]["recall@10"] == 0.5
    # the artifact round-trips through disk and answers seen-item queries by external id
    back = Embeddings.load(emb.save(tmp_path / "als"))
    assert back.manifest["trainer"] == "als" and back.ids.tolist() == emb.ids.tolist()
    u = int(log.user_ids[3])
    expected = log.item_ids[log.item_idx[log.user_idx == 3]]
    assert sorted(back.seen_ids(u).tolist()) == sorted(expected.tolist())
    json.dumps(back.manifest)


def test_items_without_events_are_left_out_and_counted():
    inter = make_log(extra_item=True)
    model = ImplicitALS(factors=4, iterations=3).fit(inter)
    assert model.stats_["n_items_without_events"] == 1
    emb = model.to_embeddings()
    assert len(emb) == inter.n_items - 1 and 99_995 not in emb.ids.tolist()
    assert emb.manifest["counts"]["n_items_without_events"] == 1
    # and the evaluation recommender never proposes it
    recs = model.recommend_fn()(np.arange(inter.n_users), inter.n_items - 8, [np.array([], int)] * inter.n_users)
    assert (recs != inter.n_items - 1).all()


def test_alpha_zero_is_implicits_default_usage(log):
    """c = 1 + 0 * r = 1 for observed pairs, which is implicit's own default (binary matrix, its alpha=1)."""
    import implicit.cpu.als

    ours = ImplicitALS(factors=6, iterations=5, alpha=0.0, seed=3).fit(log)
    with blas_single_thread():
        bare = implicit.cpu.als.AlternatingLeastSquares(factors=6, iterations=5, regularization=0.01,
                                                        random_state=3, num_threads=2)
        bare.fit(log.to_csr(binary=True), show_progress=False)
    np.testing.assert_allclose(ours.user_factors_, bare.user_factors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.item_factors_, bare.item_factors, rtol=1e-5, atol=1e-6)


def test_seeded_fits_are_reproducible(log):
    a = ImplicitALS(factors=6, iterations=4, seed=7).fit(log)
    b = ImplicitALS(factors=6, iterations=4, seed=7).fit(log)
    c = ImplicitALS(factors=6, iterations=4, seed=8).fit(log)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    assert not np.array_equal(a.item_factors_, c.item_factors_)


def test_no_blas_oversubscription_warning(log, recwarn):
    import implicit.utils

    implicit.utils._checked_blas_config = False  # let implicit check again
    ImplicitALS(factors=4, iterations=2).fit(log)
    assert not [w for w in recwarn if "threads" in str(w.message) and "BLAS" in str(w.message)]


# ------------------------------------------------------------------------------------------ MIPS = implicit
@pytest.mark.parametrize("backend,params", [("faiss", {"factory": "Flat"}), ("hnswlib", {"M": 16})])
def test_mips_over_artifact_ranks_like_implicit_recommend(log, fitted, backend, params):
    from annrec.index import build_index
    from annrec.recommend import Recommender

    emb = fitted.to_embeddings()
    rec = Recommender(emb, build_index(emb.vectors, emb.ids, emb.metric, backend=backend, **params))
    X = log.to_csr(binary=True)
    for u in (0, 17, 33, 59):
        ids, scores = fitted.model_.recommend(u, X[u], N=10, filter_already_liked_items=True)
        got = rec.recommend(int(log.user_ids[u]), k=10)
        assert [r.item_id for r in got] == log.item_ids[ids].tolist()
        np.testing.assert_allclose([r.score for r in got], scores, rtol=1e-4, atol=1e-5)
        seen = set(emb.seen_ids(int(log.user_ids[u])).tolist())
        assert not seen & {r.item_id for r in got}


def test_recommend_fn_excludes_seen_and_learns_groups(log, fitted):
    train, test = temporal_user_split(log, 0.3)
    model = ImplicitALS(factors=8, iterations=10, regularization=0.1).fit(train)
    fn = model.recommend_fn()
    tr = train.to_csr(binary=True)
    users = np.arange(train.n_users)
    seen = [tr.indices[tr.indptr[u]:tr.indptr[u + 1]] for u in users]
    recs = fn(users, 5, seen)
    assert recs.shape == (train.n_users, 5)
    assert all(not set(r) & set(s) for r, s in zip(recs.tolist(), seen))
    # most recommendations come from the user's own taste group
    group_of_item = (train.item_ids // 10) // ITEMS_PER_GROUP
    group_of_user = (train.user_ids - 1000) // USERS_PER_GROUP
    assert (group_of_item[recs] == group_of_user[:, None]).mean() > 0.7
    assert evaluate_topn(fn, train, test, 5)["recall@5"] > evaluate_topn(
        popularity_recommender(train), train, test, 5)["recall@5"]


# ------------------------------------------------------------------------------------------ confidence
def test_confidence_matrix_forms(log):
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    X = log.to_csr(binary=True)
    C = confidence_matrix(log, alpha=2.5)
    assert C.dtype == np.float32 and C.shape == X.shape
    np.testing.assert_allclose(C.toarray()[X.toarray() > 0], 3.5)
    R = confidence_matrix(log, alpha=2.0, binarize=False)
    np.testing.assert_allclose(R.data, 1 + 2.0 * log.to_csr().data)
    B = confidence_matrix(log, alpha=1.0, weighting="bm25")
    ref = bm25_weight(X.T, K1=100, B=0.8).T.tocsr()
    np.testing.assert_allclose(B.toarray(), np.where(X.toarray() > 0, 1 + np.maximum(ref.toarray(), 0), 0),
                               rtol=1e-5)
    T = confidence_matrix(log, alpha=1.0, weighting="tfidf")
    ref = tfidf_weight(X.T).T.tocsr()
    np.testing.assert_allclose(T.toarray(), np.where(X.toarray() > 0, 1 + np.maximum(ref.toarray(), 0), 0),
                               rtol=1e-5)
    M = confidence_matrix(log, min_rating=4)
    assert M.nnz == int((log.rating >= 4).sum())


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs", [
    {"factors": 0}, {"factors": -3}, {"factors": 2.5}, {"factors": True},
    {"iterations": 0}, {"iterations": -1},
    {"alpha": -0.1}, {"alpha": float("nan")}, {"alpha": float("inf")},
    {"regularization": -1.0}, {"weighting": "bm15"}, {"on_empty": "ignore"}, {"binarize": "yes"},
    {"min_rating": float("nan")}, {"seed": -1}, {"use_gpu": "auto"}, {"device": "tpu"},
])
def test_bad_parameters_raise_input_error(kwargs):
    with pytest.raises(InputError) as e:
        ImplicitALS(**kwargs)
    assert next(iter(kwargs)) in str(e.value)


def test_bad_data_raises(log, fitted):
    with pytest.raises(InputError, match="Interactions"):
        ImplicitALS().fit(log.to_csr())
    with pytest.raises(DataError, match="no events"):
        ImplicitALS().fit(log.subset(np.zeros(log.n_events, bool)))
    with pytest.raises(DataError, match="min_rating"):
        ImplicitALS(min_rating=10).fit(log)
    with pytest.raises(InputError, match="not fitted"):
        ImplicitALS().to_embeddings(log)
    with pytest.raises(InputError, match="fingerprints differ"):
        fitted.to_embeddings(log.subset(np.arange(log.n_events - 1)))


def test_gpu_required_without_cuda_is_a_clear_error(log):
    import implicit.gpu

    if implicit.gpu.HAS_CUDA:
        pytest.skip("this implicit build has CUDA")
    with pytest.raises(InputError, match="CUDA"):
        ImplicitALS(device="cuda").fit(log)


def _log_with_low_rater() -> Interactions:
    """User 1 rates everything 1 star; item 77 only gets 1 star: min_rating=3 empties both."""
    users = [1, 1, 2, 2, 3, 3, 3, 2]
    items = [10, 77, 10, 20, 20, 30, 10, 77]
    ratings = [1, 1, 5, 4, 5, 3, 4, 1]
    return Interactions.from_arrays(users, items, ratings, np.arange(8))


def test_min_rating_emptied_users_and_items_are_dropped_and_counted(caplog):
    inter = _log_with_low_rater()
    with caplog.at_level(logging.WARNING, logger="annrec.train.als"):
        model = ImplicitALS(factors=2, iterations=2, min_rating=3).fit(inter)
    assert "1 user(s) and 1 item(s)" in caplog.text
    assert model.stats_["n_users_emptied_by_min_rating"] == 1
    assert model.stats_["n_items_emptied_by_min_rating"] == 1
    emb = model.to_embeddings()
    assert emb.query_ids.tolist() == [2, 3] and emb.ids.tolist() == [10, 20, 30]
    assert emb.manifest["counts"]["n_users_emptied_by_min_rating"] == 1
    with pytest.raises(UnknownIdError):
        emb.query_row_of(1)
    # the emptied user still gets a ranking in evaluation: the most popular kept items
    recs = model.recommend_fn()(np.array([0]), 3, [np.array([], int)])
    assert recs[0].tolist() == [0, 1, 2]  # item 10 (2 kept events), then 20 (2), then 30 (1)


def test_min_rating_emptied_users_error_mode():
    with pytest.raises(DataError, match="1 user\\(s\\) and 1 item\\(s\\).*lower min_rating"):
        ImplicitALS(min_rating=3, on_empty="error").fit(_log_with_low_rater())


# ------------------------------------------------------------------------------------------ item-kNN
def test_item_knn_recommend_fn(log):
    train, test = temporal_user_split(log, 0.3)
    fn = ItemKNN(K=5).fit(train).recommend_fn()
    tr = train.to_csr(binary=True)
    users = np.arange(train.n_users)
    seen = [tr.indices[tr.indptr[u]:tr.indptr[u + 1]] for u in users]
    recs = fn(users, 10, seen)
    assert recs.shape == (train.n_users, 10) and (recs >= 0).all()
    assert all(len(set(r)) == 10 and not set(r) & set(s) for r, s in zip(recs.tolist(), seen))
    m = evaluate_topn(fn, train, test, 5)
    assert m["recall@5"] > evaluate_topn(popularity_recommender(train), train, test, 5)["recall@5"]
    # without fill, a user without history gets no items
    no_hist = train.subset(train.user_idx != 0)
    bare = ItemKNN(K=5, fill="none").fit(no_hist).recommend_fn()
    assert (bare(np.array([0]), 3, [np.array([], int)]) == -1).all()
    filled = ItemKNN(K=5).fit(no_hist).recommend_fn()(np.array([0]), 3, [np.array([], int)])
    pop = np.bincount(no_hist.item_idx, minlength=no_hist.n_items)
    assert sorted(pop[filled[0]].tolist()) == sorted(pop)[-3:]
    with pytest.raises(InputError):
        ItemKNN(K=0)


# ------------------------------------------------------------------------------------------ search
TINY_STAGES = (({"alpha": 0.0}, {"alpha": 2.0}), ({"factors": 4}, {"factors": 8}), ({"iterations": 3},))


def _event_keys(inter: Interactions) -> set:
    return set(zip(inter.user_ids[inter.user_idx].tolist(), inter.item_ids[inter.item_idx].tolist(),
                   inter.timestamp.tolist()))


def test_search_never_touches_the_test_split(log, monkeypatch):
    train, test = temporal_user_split(log, 0.2)
    train_keys, test_keys = _event_keys(train), _event_keys(test)
    seen_by_fit, seen_by_eval = [], []
    real_fit, real_eval = ImplicitALS.fit, search_mod.evaluate_topn

    def spy_fit(self, data):
        seen_by_fit.append(_event_keys(data))
        return real_fit(self, data)

    def spy_eval(fn, a, b, k=10):
        seen_by_eval.append(_event_keys(a) | _event_keys(b))
        return real_eval(fn, a, b, k)

    monkeypatch.setattr(ImplicitALS, "fit", spy_fit)
    monkeypatch.setattr(search_mod, "evaluate_topn", spy_eval)
    result = search_als(train, base_params={"factors": 4, "iterations": 3}, stages=TINY_STAGES)
    assert seen_by_fit and len(seen_by_eval) == result.n_fits == len(seen_by_fit)
    for keys in seen_by_fit + seen_by_eval:
        assert keys <= train_keys and not keys & test_keys
    # fits see strictly less than train: the validation part is held out from them
    assert all(len(keys) < len(train_keys) for keys in seen_by_fit)
    assert result.split["train_fingerprint"] == train.fingerprint()


def test_search_selects_the_best_validation_setting(log, monkeypatch):
    """With a scripted validation figure, the search must pick its maximum, stage by stage."""

    def fake_eval(fn, a, b, k=10):
        model = fake_eval.last
        r = 0.1 + 0.01 * (model.alpha == 2.0) + 0.02 * (model.factors == 8) - 0.005 * (model.iterations == 3)
        return {f"recall@{k}": r, f"ndcg@{k}": r}

    real_fit = ImplicitALS.fit

    def spy_fit(self, data):
        fake_eval.last = self
        return real_fit(self, data)

    monkeypatch.setattr(ImplicitALS, "fit", spy_fit)
    monkeypatch.setattr(search_mod, "evaluate_topn", fake_eval)
    res = search_als(log, base_params={"factors": 4, "iterations": 2}, stages=TINY_STAGES)
    assert res.best_params["alpha"] == 2.0 and res.best_params["factors"] == 8
    assert res.best_params["iterations"] == 2  # 3 iterations scored worse
    assert res.best_score == pytest.approx(0.13)
    # 1 start + 2 alphas + factors=8 (factors=4 with alpha=2 was already fitted) + iterations=3
    assert res.n_fits == len(res.trials) == 5
    assert sum(t.get("selected", False) for t in res.trials) == 1
    capped = search_als(log, base_params={"factors": 4, "iterations": 2}, stages=TINY_STAGES, max_fits=3)
    assert capped.n_fits == 3


def test_search_bad_input(log):
    with pytest.raises(InputError):
        search_als(log, stages=(({"factors": 0},),))
    with pytest.raises(InputError):
        search_als(log, val_fraction=1.5)
    single = Interactions.from_arrays([1, 2, 3], [1, 2, 3], None, [1, 2, 3])
    with pytest.raises(DataError, match="validation"):
        search_als(single)
