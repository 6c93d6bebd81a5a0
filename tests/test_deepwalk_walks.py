"""Random-walk statistics: uniform and weighted first-order steps, node2vec's p/q, dead ends, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import chisquare

from annrec.errors import InputError
from annrec.data.graph import Graph
from annrec.train.walks import (
    WalkCorpus,
    _alias_kernel_numba,
    _alias_rows_python,
    _CSRWalker,
    alias_tables,
    random_walks,
    walk_lengths,
)
from _deepwalk_fixtures import two_cliques

P_MIN = 1e-4  # chi-square p-value below which a frequency table is rejected (seeded: deterministic)


def next_counts(walks: np.ndarray, at_step: int, n: int, where=None) -> np.ndarray:
    col = walks[:, at_step] if where is None else walks[where, at_step]
    return np.bincount(col[col >= 0], minlength=n)


def test_shapes_dtype_starts_and_edges():
    g = two_cliques(6)
    w = random_walks(g, walks_per_node=3, walk_length=7, seed=1)
    assert w.shape == (3 * g.n_nodes, 7) and w.dtype == np.int32
    # every round starts once from every node, shuffled
    for r in range(3):
        assert sorted(w[r * g.n_nodes:(r + 1) * g.n_nodes, 0].tolist()) == list(range(g.n_nodes))
    assert w[: g.n_nodes, 0].tolist() != list(range(g.n_nodes))
    a = g.adj.toarray()
    pairs = np.stack([w[:, :-1].ravel(), w[:, 1:].ravel()], 1)
    assert (a[pairs[:, 0], pairs[:, 1]] > 0).all()  # every step follows an edge
    assert (walk_lengths(w) == 7).all()


def test_reproducible_by_seed_and_seed_matters():
    g = two_cliques(6)
    for kw in ({}, {"p": 0.5, "q": 2.0}):
        a = random_walks(g, 4, 10, seed=7, **kw)
        b = random_walks(g, 4, 10, seed=7, **kw)
        c = random_walks(g, 4, 10, seed=8, **kw)
        assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_batches_do_not_change_the_walk_distribution():
    g = two_cliques(5)
    w = random_walks(g, 50, 4, seed=0, batch_size=7)
    assert w.shape == (50 * g.n_nodes, 4) and (w >= 0).all()


def test_uniform_walks_visit_neighbours_uniformly():
    # star: centre 0 with 6 leaves; from the centre every leaf is equally likely
    g = Graph.from_edges(np.zeros(6, int), np.arange(1, 7))
    w = random_walks(g, 3000, 2, start_nodes=[0], seed=3)
    counts = next_counts(w, 1, 7)[1:]
    assert counts.sum() == 3000
    assert chisquare(counts).pvalue > P_MIN
    # a weighted graph walked with weighted=False is uniform too
    gw = Graph.from_edges(np.zeros(6, int), np.arange(1, 7), [1, 1, 1, 1, 1, 50])
    cw = next_counts(random_walks(gw, 3000, 2, start_nodes=[0], seed=3, weighted=False), 1, 7)[1:]
    assert chisquare(cw).pvalue > P_MIN


def test_weighted_edges_are_respected():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    g = Graph.from_edges(np.zeros(5, int), np.arange(1, 6), weights)
    w = random_walks(g, 20000, 2, start_nodes=[0], seed=5)
    counts = next_counts(w, 1, 6)[1:]
    expected = weights / weights.sum() * counts.sum()
    assert chisquare(counts, expected).pvalue > P_MIN
    assert counts[4] > 3 * counts[1]


def test_alias_tables_python_and_numba_agree_and_are_exact():
    rng = np.random.default_rng(0)
    adj = sp.random(40, 40, density=0.3, random_state=1, format="csr", data_rvs=lambda k: rng.random(k) + 0.1)
    adj.sort_indices()
    indptr = adj.indptr.astype(np.int64)
    prob, alias = alias_tables(indptr, adj.data)
    # the alias table of each row reproduces the row's distribution exactly
    for r in range(40):
        s, e = indptr[r], indptr[r + 1]
        if e == s:
            continue
        mass = np.zeros(e - s)
        for i in range(s, e):
            mass[i - s] += prob[i]
            mass[alias[i] - s] += 1 - prob[i]
        np.testing.assert_allclose(mass / (e - s), adj.data[s:e] / adj.data[s:e].sum(), atol=1e-12)
    p2, a2 = np.ones_like(prob), np.arange(len(prob))
    _alias_rows_python(indptr, adj.data, np.arange(40), p2, a2)
    np.testing.assert_allclose(prob, p2)
    assert np.array_equal(alias, a2)
    if _alias_kernel_numba() is not None:
        p3, a3 = np.ones_like(prob), np.arange(len(prob))
        _alias_kernel_numba()(indptr, adj.data, np.arange(40, dtype=np.int64), p3, a3)
        np.testing.assert_allclose(prob, p3)
        assert np.array_equal(alias, a3)


def test_is_edge_vectorised():
    g = Graph.from_edges([0, 1, 2], [1, 2, 3], directed=True)
    wk = _CSRWalker(g.adj)
    u = np.array([0, 1, 1, 3, 2])
    v = np.array([1, 0, 2, 2, 3])
    assert wk.is_edge(u, v).tolist() == [True, False, True, False, True]


def test_dead_ends_and_isolated_nodes_truncate_walks():
    g = Graph.from_edges(["a", "b"], ["b", "c"], directed=True, nodes=["a", "b", "c", "z"])
    w = random_walks(g, 1, 5, seed=0)
    by_start = {int(r[0]): r.tolist() for r in w}
    assert by_start[0] == [0, 1, 2, -1, -1]
    assert by_start[3] == [3, -1, -1, -1, -1]
    corpus = WalkCorpus(w, tokens=["a", "b", "c", "z"])
    assert sorted(map(tuple, corpus)) == [("a", "b", "c"), ("b", "c")]  # 1-node walks dropped
    assert len(corpus) == 2 and corpus.total_words == 5
    # node2vec on the same directed graph (no way back) terminates too
    assert random_walks(g, 1, 5, seed=0, p=0.5, q=2.0).shape == (4, 5)


# node2vec: from node 1, having come from 0, on the graph 0-1, 0-2, 1-2, 1-3:
# neighbours of 1 are 0 (return: 1/p), 2 (a neighbour of 0: 1) and 3 (outward: 1/q).
N2V_EDGES = ([0, 0, 1, 1], [1, 2, 2, 3])


def second_step_counts(p, q, weights=None, n=40000, seed=0):
    g = Graph.from_edges(*N2V_EDGES, weights)
    w = random_walks(g, n, 3, p=p, q=q, start_nodes=[0], seed=seed)
    sel = w[:, 1] == 1
    return next_counts(w, 2, 4, where=sel)[[0, 2, 3]], g


@pytest.mark.parametrize("p,q", [(0.25, 4.0), (4.0, 0.25), (1.0, 1.0), (0.5, 0.5), (2.0, 1.0)])
def test_node2vec_second_order_probabilities_exact(p, q):
    counts, _ = second_step_counts(p, q)
    alpha = np.array([1 / p, 1.0, 1 / q])
    assert chisquare(counts, alpha / alpha.sum() * counts.sum()).pvalue > P_MIN


def test_node2vec_weighted_with_outlier_folding():
    # edge weights w(1,0)=3, w(1,2)=1, w(1,3)=2 (edge order of N2V_EDGES: (0,1), (0,2), (1,2), (1,3))
    p, q = 0.2, 2.0  # 1/p = 5 > max(1, 1/q): the return edge is folded out of the envelope
    counts, _ = second_step_counts(p, q, weights=[3.0, 1.0, 1.0, 2.0])
    target = np.array([3.0 / p, 1.0 * 1.0, 2.0 / q])
    assert chisquare(counts, target / target.sum() * counts.sum()).pvalue > P_MIN


def test_p_and_q_move_return_and_outward_frequencies_in_the_expected_direction():
    g = two_cliques(6)
    def rates(p, q):
        w = random_walks(g, 300, 6, p=p, q=q, seed=11)
        prev2, nxt = w[:, :-2].ravel(), w[:, 2:].ravel()
        ok = nxt >= 0
        prev2, nxt = prev2[ok], nxt[ok]
        a = g.adj.toarray() > 0
        ret = np.mean(prev2 == nxt)
        outward = np.mean((prev2 != nxt) & ~a[prev2, nxt])  # distance 2 from where we came from
        return ret, outward
    r_low_p, _ = rates(0.25, 1.0)
    r_high_p, _ = rates(4.0, 1.0)
    assert r_low_p > 2 * r_high_p
    _, o_low_q = rates(1.0, 0.25)
    _, o_high_q = rates(1.0, 4.0)
    assert o_low_q > 2 * o_high_q


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), float("inf"), "x", None])
def test_p_q_must_be_positive(bad):
    g = two_cliques(4)
    with pytest.raises(InputError, match="p must be"):
        random_walks(g, 1, 3, p=bad)
    with pytest.raises(InputError, match="q must be"):
        random_walks(g, 1, 3, q=bad)


def test_bad_counts_and_start_nodes():
    g = two_cliques(4)
    with pytest.raises(InputError, match="walk_length"):
        random_walks(g, 1, 0)
    with pytest.raises(InputError, match="walks_per_node"):
        random_walks(g, 1.5, 3)
    with pytest.raises(InputError, match="start nodes"):
        random_walks(g, 1, 3, start_nodes=[99])
