"""One contract for every trainer (the way implicit's test mixin runs over every model), on a slice of
ml-latest-small: fit -> self, to_embeddings() with no second pass, get_params() round trips, clear errors,
and a scorer that ranks better than chance on the same split."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.errors import InputError
from annrec.train.base import NotFittedError, Trainer

from _mf_fixtures import have_movielens

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_movielens(), reason="ml-latest-small not found (set ANNREC_DATA_DIR)")]


def _trainers():
    from annrec.train.als import ImplicitALS
    from annrec.train.deepwalk import DeepWalk
    from annrec.train.mf import MatrixFactorization
    from annrec.train.sequence import SequenceTrainer
    from annrec.train.text import TextTrainer

    return {
        "mf": (lambda **kw: MatrixFactorization(**{"factors": 16, "epochs": 3, "num_threads": 1,
                                                   "show_progress": False, **kw}), {"factors": 0}),
        "als": (lambda **kw: ImplicitALS(**{"factors": 16, "iterations": 5, "num_threads": 1, **kw}),
                {"factors": -1}),
        "deepwalk": (lambda **kw: DeepWalk(**{"walks_per_node": 3, "walk_length": 10, "factors": 16, "epochs": 1,
                                              "num_threads": 1, **kw}), {"factors": 0}),
        "sequence": (lambda **kw: SequenceTrainer(**{"factors": 32, "item_dim": 16, "epochs": 1, "num_threads": 1,
                                                     "show_progress": False, **kw}), {"factors": 0}),
        "text": (lambda **kw: TextTrainer(**{"use_cache": False, "num_threads": 1, "show_progress": False, **kw}),
                 {"batch_size": 0}),
    }


@pytest.fixture(scope="module")
def split():
    """The 300 most-rated movies and the users who rated them, split per user in time (the top-N protocol)."""
    from annrec.data import load_movielens, temporal_user_split

    ml = load_movielens("ml-latest-small", progress=False)
    counts = np.bincount(ml.item_idx, minlength=ml.n_items)
    top = np.argsort(-counts)[:300]
    small = ml.subset(np.isin(ml.item_idx, top) & (ml.user_idx < 200))
    keep = set(ml.item_ids[top].tolist())
    if small.items is not None:  # these movies' titles and tags only (the text trainer encodes every item given)
        import dataclasses

        small = dataclasses.replace(small, items=small.items[small.items.index.isin(keep)])
    return temporal_user_split(small, 0.2)


@pytest.fixture(scope="module", params=["mf", "als", "deepwalk", "sequence", "text"])
def fitted(request, split):
    make, bad = _trainers()[request.param]
    train, test = split
    trainer = make()
    assert trainer.fit(train) is trainer
    return request.param, make, bad, trainer, train, test


def test_is_a_trainer_and_unfitted_use_is_a_clear_error(fitted):
    name, make, bad, trainer, _, _ = fitted
    assert isinstance(trainer, Trainer)
    with pytest.raises(NotFittedError):
        make().to_embeddings()
    with pytest.raises(InputError):
        make(**bad)


def test_get_params_round_trips_and_is_in_the_manifest(fitted):
    name, make, _, trainer, _, _ = fitted
    params = trainer.get_params()
    assert type(trainer)(**params).get_params() == params
    emb = trainer.to_embeddings()
    assert emb.manifest["params"] == params and emb.manifest["trainer"] == name


def test_to_embeddings_describes_the_catalogue(fitted):
    name, _, _, trainer, train, _ = fitted
    emb = trainer.to_embeddings()
    assert emb.vectors.dtype == np.float32 and np.isfinite(emb.vectors).all()
    assert emb.metric in ("ip", "cosine") and len(set(emb.ids.tolist())) == len(emb)
    if name != "text":  # collaborative models know the items of the interactions
        assert set(emb.ids.tolist()) <= set(train.item_ids.tolist())
    if emb.queries is not None:
        assert len(emb.queries) == len(emb.query_ids) and emb.queries.shape[1] == emb.dim


def test_scorer_beats_chance_on_the_same_split(fitted):
    from annrec.metrics import evaluate_topn

    name, _, _, trainer, train, test = fitted
    rng = np.random.default_rng(0)

    def random_fn(users, k, seen):
        out = np.empty((len(users), k), dtype=np.int64)
        for r, s in enumerate(seen):
            pool = np.setdiff1d(np.arange(train.n_items), s)
            out[r] = rng.choice(pool, k, replace=False)
        return out

    model = evaluate_topn(trainer.recommend_fn(), train, test, k=10)
    chance = evaluate_topn(random_fn, train, test, k=10)
    assert model["recall@10"] > 1.5 * chance["recall@10"], (name, model, chance)
