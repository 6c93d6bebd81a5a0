"""The DeepWalk trainer: output shapes and ids, reproducibility, new nodes, incremental training, errors."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.embeddings import Embeddings
from annrec.errors import DataError, InputError
from annrec.train.deepwalk import PRESETS, DeepWalk
from annrec.data.graph import Graph, bipartite_graph
from _deepwalk_fixtures import tiny_interactions, two_cliques

FAST = dict(factors=16, walks_per_node=20, walk_length=10, window=3, epochs=5, sample=0, num_threads=1, seed=0)


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def cliques_model():
    g = two_cliques(8)
    m = DeepWalk("small", **FAST)
    emb = m.fit(g).to_embeddings()
    return m, g, emb


def test_output_shapes_ids_and_manifest(cliques_model):
    m, g, emb = cliques_model
    assert isinstance(emb, Embeddings)
    assert emb.vectors.shape == (16, 16) and emb.vectors.dtype == np.float32
    assert sorted(emb.ids.tolist()) == list(range(8)) + list(range(100, 108))
    assert emb.metric == "cosine" and emb.queries is None
    man = emb.manifest
    assert man["trainer"] == "deepwalk" and man["params"]["factors"] == 16 and man["params"]["p"] == 1.0
    assert man["gensim"]["sg"] == 1 and man["gensim"]["hs"] == 0 and man["params"]["negatives"] == 10
    assert man["params"] == m.get_params()
    assert man["graph"]["nodes"] == 16 and man["graph"]["edges"] == 2 * 28 + 1
    assert man["data_hash"] == man["fingerprint"] and man["corpus"]["walks"] == 16 * 20


def test_vectors_reflect_communities(cliques_model):
    _, _, emb = cliques_model
    V = emb.vectors
    row = {v: i for i, v in enumerate(emb.ids.tolist())}
    within = np.mean([cos(V[row[i]], V[row[j]]) for i in range(1, 8) for j in range(1, 8) if i != j])
    across = np.mean([cos(V[row[i]], V[row[100 + j]]) for i in range(1, 8) for j in range(1, 8)])
    assert within > across + 0.3


def test_reproducible_with_one_worker():
    g = two_cliques(5)
    a = DeepWalk("small", **FAST).fit(g).to_embeddings()
    b = DeepWalk("small", **FAST).fit(g).to_embeddings()
    c = DeepWalk("small", **{**FAST, "seed": 1}).fit(g).to_embeddings()
    assert np.array_equal(a.vectors, b.vectors)
    assert not np.allclose(a.vectors, c.vectors)


def test_presets_and_overrides():
    m = DeepWalk("paper")
    assert (m.walks_per_node, m.walk_length, m.window, m.factors) == (80, 40, 10, 128)
    assert (m.negatives, m.alpha, m.epochs) == (5, 0.025, 5)  # gensim defaults
    s = DeepWalk("small", factors=32)
    assert (s.walks_per_node, s.walk_length, s.window, s.negatives, s.alpha, s.min_alpha, s.epochs, s.factors) == \
        (10, 5, 4, 10, 0.03, 0.0001, 20, 32)
    assert set(PRESETS) == {"small", "paper"}


@pytest.mark.parametrize("kw,match", [
    (dict(preset="huge"), "unknown DeepWalk preset"),
    (dict(p=0), "p must be"),
    (dict(q=-1.0), "q must be"),
    (dict(factors=0), "factors must be"),
    (dict(walk_length=2.5), "walk_length must be"),
    (dict(alpha=0), "alpha must be"),
    (dict(graph="tree"), "unknown graph kind"),
])
def test_bad_parameters(kw, match):
    with pytest.raises(InputError, match=match):
        DeepWalk(**kw)


def test_graph_without_edges_is_a_clear_error():
    g = Graph.from_edges([1, 2], [1, 2])
    with pytest.raises(DataError, match="no edges"):
        DeepWalk(**FAST).fit(g)
    with pytest.raises(InputError, match="takes a Graph"):
        DeepWalk(**FAST).fit([[0, 1], [1, 0]])


def test_new_node_vector_is_close_to_its_neighbours(cliques_model):
    m, g, emb = cliques_model
    g2 = g.with_edges([500, 500, 500], [2, 3, 4])
    vec = m.new_node_vectors(g2, [500])
    assert vec.shape == (1, 16) and vec.dtype == np.float32
    row = {v: i for i, v in enumerate(emb.ids.tolist())}
    ca = emb.vectors[[row[i] for i in range(1, 8)]]
    cb = emb.vectors[[row[100 + i] for i in range(1, 8)]]
    sims_a = [cos(vec[0], v) for v in ca]
    sims_b = [cos(vec[0], v) for v in cb]
    assert min(sims_a) > max(sims_b)
    assert np.mean(sims_a) > 0.5
    # the model was not retrained
    assert "500" not in m.model_.wv.key_to_index


def test_new_node_without_path_to_known_nodes(cliques_model):
    m, g, _ = cliques_model
    g2 = g.with_edges([600], [601])  # a new component
    with pytest.raises(InputError, match="reach no trained node"):
        m.new_node_vectors(g2, [600])


def test_incremental_training_grows_vocabulary():
    g = two_cliques(6)
    m = DeepWalk("small", **FAST)
    m.fit(g)
    before = len(m.model_.wv)
    g2 = g.with_edges([700, 700, 701], [1, 2, 700])
    emb = m.partial_fit(g2)
    assert len(m.model_.wv) == before + 2
    assert {700, 701} <= set(emb.ids.tolist()) and len(emb) == 14
    assert emb.manifest["updates"] == 1
    row = {v: i for i, v in enumerate(emb.ids.tolist())}
    v = emb.vectors[row[700]]
    assert np.mean([cos(v, emb.vectors[row[i]]) for i in (1, 2)]) > \
        np.mean([cos(v, emb.vectors[row[100 + i]]) for i in (1, 2)])
    with pytest.raises(InputError, match="no new node"):
        m.partial_fit(g2)
    with pytest.raises(InputError, match="not fitted"):
        DeepWalk().partial_fit(g2)


def test_fit_on_interactions_exports_item_ids_and_titles():
    inter = tiny_interactions()
    emb = DeepWalk("small", **FAST).fit(inter).to_embeddings()
    # item 5 is only in a 1-item history: isolated, no vector
    assert sorted(emb.ids.tolist()) == [1, 2, 3, 4]
    assert emb.items[3] == {"title": "C", "genres": ["x", "y"]}
    assert emb.manifest["nodes_without_vectors"] == 1
    assert emb.manifest["dataset"] == "tiny" and len(emb.manifest["data_hash"]) == 64


def test_bipartite_exports_users_as_queries(tmp_path):
    inter = tiny_interactions()
    emb = DeepWalk("small", **FAST).fit(bipartite_graph(inter)).to_embeddings()
    assert sorted(emb.ids.tolist()) == [1, 2, 3, 4, 5]
    assert sorted(emb.query_ids.tolist()) == [10, 20, 30]
    assert emb.queries.shape == (3, 16)
    assert emb.seen.shape == (3, 5) and emb.seen.nnz == inter.n_events
    out = emb.save(tmp_path / "bp")
    back = Embeddings.load(out)
    assert np.array_equal(back.vectors, emb.vectors) and back.manifest["trainer"] == "deepwalk"
    assert back.query_ids.tolist() == emb.query_ids.tolist()


def test_artifact_can_be_indexed(cliques_model, tmp_path):
    from annrec.index import build_index

    _, _, emb = cliques_model
    emb.save(tmp_path / "dw")
    back = Embeddings.load(tmp_path / "dw")
    idx = build_index(back.vectors, back.ids, back.metric, backend="hnswlib")
    ids, scores = idx.search(back.vectors[:1], k=5)
    assert ids[0, 0] == back.ids[0] and scores.shape == (1, 5)
