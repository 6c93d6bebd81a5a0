"""Biased matrix factorisation on synthetic ratings (fast): learning, exact MIPS export, artifact, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest

from annrec.data import random_split
from annrec.embeddings import Embeddings
from annrec.errors import InputError
from annrec.recommend import Recommender
from annrec.train import BiasBaseline, MatrixFactorization
from annrec.eval.rating import evaluate_rmse

from _mf_fixtures import make_ratings

FAST = dict(factors=8, epochs=25, lr=0.03, reg=0.02, batch_size=512, show_progress=False, num_threads=1)


@pytest.fixture(scope="module")
def data():
    return make_ratings()


@pytest.fixture(scope="module")
def split(data):
    return random_split(data, 0.1, seed=0)


@pytest.fixture(scope="module")
def model(split):
    return MatrixFactorization(**FAST).fit(split[0])


def test_learns_the_low_rank_structure(split, model):
    train, test = split
    mf_rmse = evaluate_rmse(model, test)
    bias_rmse = evaluate_rmse(BiasBaseline().fit(train), test)
    mean_rmse = float(np.sqrt(np.mean((test.rating - train.rating.mean()) ** 2)))
    # the factors carry real signal: clearly better than the biases alone, which beat the global mean
    assert mf_rmse < bias_rmse - 0.1, (mf_rmse, bias_rmse)
    assert bias_rmse < mean_rmse
    assert model.best_epoch_ >= 1 and len(model.history_) == model.epochs_run_ <= FAST["epochs"]
    assert all({"epoch", "loss", "val_rmse", "seconds"} <= set(h) for h in model.history_)
    assert model.refitted_ and model.train_events_ == train.n_events  # refit on all of train


def test_predictions_are_in_the_rating_range(split, model):
    train, test = split
    p = model.predict(test.user_idx, test.item_idx)
    assert p.dtype == np.float32 and p.shape == (test.n_events,)
    assert p.min() >= train.rating.min() and p.max() <= train.rating.max()
    assert model.y_range_ == (0.0, 5.5)  # "auto": (min - 0.5, max + 0.5) on half-star ratings


def test_mips_ranking_equals_the_models_own_ranking(data, split, model):
    """Item [q_i, b_i] . user [p_u, 1] = logit - mu - b_u: the same order as predict() for every user."""
    train = split[0]
    emb = model.to_embeddings()
    items = np.array([train.item_index(i) for i in emb.ids])
    for u_ext in emb.query_ids[:20].tolist():
        u = train.user_index(u_ext)
        row = emb.query_row_of(u_ext)
        scores = emb.vectors @ emb.queries[row]
        logits = model.logits(np.full(len(items), u), items)
        np.testing.assert_allclose(scores + model.global_bias_ + model.user_bias_[u], logits, rtol=1e-5, atol=1e-5)
        # the sigmoid range scaling is monotone: the ranking by predicted rating (before clipping) is the same
        x = logits.astype(np.float64)
        rating = 0.0 + 5.5 / (1 + np.exp(-x))
        assert np.array_equal(np.argsort(-scores, kind="stable"), np.argsort(-rating, kind="stable"))


def test_recommendations_through_an_index_are_the_models_top_k(split, model):
    train = split[0]
    emb = model.to_embeddings()
    rec = Recommender(emb)  # exact FAISS Flat
    items = np.array([train.item_index(i) for i in emb.ids])
    for u_ext in emb.query_ids[:10].tolist():
        u = train.user_index(u_ext)
        seen = set(emb.seen_ids(u_ext).tolist())
        got = [r.item_id for r in rec.recommend(u_ext, k=5)]
        assert not seen & set(got)
        logits = model.logits(np.full(len(items), u), items)
        order = [emb.ids[j] for j in np.argsort(-logits, kind="stable") if emb.ids[j] not in seen][:5]
        assert got == order


def test_artifact_round_trip(tmp_path, data, split, model):
    train = split[0]
    emb = model.to_embeddings(seen=data, figures={"rmse": 0.5})
    path = emb.save(tmp_path / "mf")
    back = Embeddings.load(path)
    assert back.metric == "ip" and back.dim == FAST["factors"] + 1
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    np.testing.assert_array_equal(back.queries, emb.queries)
    assert back.ids.tolist() == emb.ids.tolist() and back.query_ids.tolist() == emb.query_ids.tolist()
    assert np.all(back.queries[:, -1] == 1.0)  # [p_u, 1]
    items = [train.item_index(i) for i in back.ids]
    np.testing.assert_allclose(back.vectors[:, -1], model.item_bias_[items])  # [q_i, b_i]
    # seen = every rating of the full data (train + test), restricted to the exported rows/columns
    u0 = back.query_ids[0]
    rated = set(data.item_ids[data.item_idx[data.user_idx == data.user_index(u0)]].tolist())
    assert set(back.seen_ids(u0).tolist()) == rated & set(back.ids.tolist())
    m = back.manifest
    assert m["trainer"] == "mf" and m["dataset"] == "synthetic" and m["fingerprint"] == train.fingerprint()
    assert m["params"]["factors"] == FAST["factors"] and m["figures"] == {"rmse": 0.5}
    assert m["y_range"] == [0.0, 5.5] and m["training"]["best_epoch"] == model.best_epoch_
    item0 = back.ids[0].item()
    assert back.items[item0]["title"].startswith(f"Movie {item0}") and back.items[item0]["genres"]
    bu = np.load(io.BytesIO(back.extra["user_bias.npy"]))
    np.testing.assert_allclose(bu, model.user_bias_[[train.user_index(u) for u in back.query_ids]])


def test_items_without_training_ratings_are_left_out(split, model):
    train = split[0]
    counts = np.bincount(train.item_idx, minlength=train.n_items)
    emb = model.to_embeddings()
    assert len(emb) == int((counts > 0).sum())
    assert emb.manifest["counts"]["items_without_ratings"] == int((counts == 0).sum())


def test_same_seed_same_model_and_other_seed_differs(split):
    train = split[0]
    kw = {**FAST, "epochs": 3}
    a = MatrixFactorization(**kw).fit(train)
    b = MatrixFactorization(**kw).fit(train)
    c = MatrixFactorization(**{**kw, "seed": 1}).fit(train)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    assert not np.allclose(a.item_factors_, c.item_factors_)


def test_early_stopping_keeps_the_best_epoch(split):
    """An over-fitting setting (no regularisation, constant high rate) stops early at its best epoch."""
    train, test = split
    mf = MatrixFactorization(factors=32, epochs=60, lr=0.05, reg=0.0, bias_reg=0.0, schedule="constant",
                             batch_size=256, patience=2, refit=False, show_progress=False).fit(train, validation=test)
    vals = [h["val_rmse"] for h in mf.history_]
    assert mf.epochs_run_ < 60
    assert mf.best_epoch_ == int(np.argmin(vals)) + 1 and mf.epochs_run_ == mf.best_epoch_ + 2
    assert abs(evaluate_rmse(mf, test) - min(vals)) < 1e-4  # the parameters of the best epoch were restored
    assert not mf.refitted_


def test_linear_output_sgd_and_no_validation(split):
    train, test = split
    mf = MatrixFactorization(factors=4, epochs=5, lr=0.05, y_range=None, optimizer="sgd", val_fraction=0.0,
                             batch_size=256, show_progress=False).fit(train)
    assert mf.y_range_ is None and mf.val_rmse_ is None and mf.epochs_run_ == 5
    assert np.isfinite(evaluate_rmse(mf, test))


def test_bias_baseline_recovers_additive_ratings():
    from annrec.data import Interactions

    rng = np.random.default_rng(0)
    bu, bi = rng.normal(0, 0.5, 30), rng.normal(0, 0.5, 20)
    u, i = np.meshgrid(np.arange(30), np.arange(20), indexing="ij")
    u, i = u.ravel(), i.ravel()
    r = 3.0 + bu[u] + bi[i]
    inter = Interactions.from_arrays(u, i, r)
    b = BiasBaseline(reg_item=0.0, reg_user=0.0, iterations=50, clip=False).fit(inter)
    np.testing.assert_allclose(b.predict(u, i), r, atol=1e-4)


@pytest.mark.parametrize("kwargs", [dict(factors=0), dict(epochs=0), dict(lr=0), dict(reg=-1), dict(optimizer="adam"),
                                    dict(schedule="cosine"), dict(y_range=(5, 1)), dict(y_range="x"),
                                    dict(val_fraction=0.7), dict(batch_size=0), dict(patience=0),
                                    dict(num_threads=0)])
def test_bad_hyper_parameters(kwargs):
    with pytest.raises(InputError):
        MatrixFactorization(**kwargs)


def test_bad_use(data, split, model):
    with pytest.raises(InputError, match="not fitted"):
        MatrixFactorization().predict([0], [0])
    with pytest.raises(InputError, match="Interactions"):
        MatrixFactorization(show_progress=False).fit([(1, 2, 3.0)])
    with pytest.raises(InputError, match="out of range"):
        model.predict([0], [10_000])
    with pytest.raises(InputError, match="integer"):
        model.predict([0.5], [1])
    with pytest.raises(InputError, match="fingerprints differ"):
        model.to_embeddings(data)  # fitted on the train split, not the whole data
    other = make_ratings(n_users=10, n_items=10, per_user=5)
    with pytest.raises(InputError, match="id space"):
        MatrixFactorization(show_progress=False).fit(split[0], validation=other)
    with pytest.raises(InputError, match="device"):
        MatrixFactorization(device="tpu", show_progress=False).fit(split[0])
