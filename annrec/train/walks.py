"""Vectorised random walks over a CSR graph: DeepWalk (uniform / first-order) and node2vec (second-order).

All walkers advance together, one step at a time, as numpy arrays (no Python loop over walkers):

* **First order** (DeepWalk, Perozzi et al. 2014): the next node is a neighbour of the current one, drawn
  uniformly (unweighted graph) or with probability proportional to the edge weight. A uniform draw is one
  multiply-and-floor per walker; a weighted draw is a binary search of ``u * rowsum`` in the global
  cumulative weight array of the CSR matrix (each row's segment of it is sorted).
* **Second order** (node2vec, Grover & Leskovec 2016): the unnormalised probability of moving from
  ``cur`` (having come from ``prev``) to ``x`` is ``w(cur, x) * alpha(prev, x)`` with ``alpha = 1/p`` if
  ``x == prev`` (return), ``1`` if ``x`` is a neighbour of ``prev``, ``1/q`` otherwise (outward). It is
  sampled by **rejection**: propose ``x`` from the first-order distribution, accept with probability
  ``alpha / max(1/p, 1, 1/q)``; walkers whose proposal was rejected propose again (KnightKing, Yang et al.
  SOSP 2019; the rejection strategy of "fast node2vec" and of PyTorch Geometric / torch_cluster's
  ``random_walk``). This needs no per-edge precomputation (node2vec's alias tables need O(sum deg^2)
  memory); the "is ``x`` a neighbour of ``prev``" test is a vectorised binary search of the key
  ``prev * n + x`` in the sorted array of edge keys ``row * n + col`` of the CSR matrix.

Walks are truncated at ``walk_length`` nodes; a walk that reaches a node with no out-edges (an isolated
node, or a sink of a directed graph) stops there and the rest of its row is ``-1``. Start nodes are
shuffled every round, as in DeepWalk's corpus builder. Everything is drawn from one
``numpy.random.Generator(PCG64(seed))``: the same graph, parameters and seed give the same walks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from annrec.errors import InputError

#: Walkers advanced together; fixed (not machine dependent) so that walks are reproducible everywhere.
BATCH_SIZE = 1 << 20


def check_pq(p, q) -> tuple[float, float]:
    """Return ``(p, q)`` as floats after checking they are finite and > 0.

    Raises:
        InputError: ``p`` or ``q`` is not a number, is <= 0, NaN or infinite.
    """
    out = []
    for name, v in (("p", p), ("q", q)):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InputError(f"node2vec {name} must be a number > 0; got {v!r}") from None
        if not math.isfinite(f) or f <= 0:
            raise InputError(f"node2vec {name} must be a finite number > 0 (return parameter p, in-out "
                             f"parameter q; p = q = 1 is plain DeepWalk); got {v!r}")
        out.append(f)
    return out[0], out[1]


def _check_positive_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {v!r}")
    return int(v)


class _CSRWalker:
    """Arrays of a graph's CSR matrix prepared for vectorised sampling."""

    def __init__(self, adj, weighted: bool | None = None):
        self.n = int(adj.shape[0])
        self.indptr = np.asarray(adj.indptr, dtype=np.int64)
        self.indices = np.asarray(adj.indices, dtype=np.int64)
        data = np.asarray(adj.data, dtype=np.float64)
        self.deg = np.diff(self.indptr)
        if weighted is None:
            weighted = bool(data.size) and bool(data.min() != data.max())
        self.weighted = bool(weighted)
        if self.weighted:
            # cwz[e] = total weight of edges before edge e (global, so each row's segment is increasing)
            self.cwz = np.concatenate([[0.0], np.cumsum(data)])
        self._keys: np.ndarray | None = None

    @property
    def keys(self) -> np.ndarray:
        """Sorted int64 ``row * n + col`` of every edge (CSR with sorted indices is already in order)."""
        if self._keys is None:
            rows = np.repeat(np.arange(self.n, dtype=np.int64), self.deg)
            self._keys = rows * self.n + self.indices
        return self._keys

    def step(self, cur: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One first-order step from each node of ``cur`` (all with out-degree > 0)."""
        start = self.indptr[cur]
        deg = self.deg[cur]
        r = rng.random(len(cur))
        if not self.weighted:
            off = (r * deg).astype(np.int64)
            np.minimum(off, deg - 1, out=off)
            return self.indices[start + off]
        base = self.cwz[start]
        target = base + r * (self.cwz[start + deg] - base)
        pos = np.searchsorted(self.cwz, target, side="right") - 1
        np.clip(pos, start, start + deg - 1, out=pos)
        return self.indices[pos]

    def is_edge(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Vectorised test of ``u -> v`` being an edge (bool array)."""
        keys = self.keys
        if keys.size == 0:
            return np.zeros(len(u), dtype=bool)
        query = u * self.n + v
        pos = np.searchsorted(keys, query)
        np.minimum(pos, keys.size - 1, out=pos)
        return keys[pos] == query

    def step2(self, prev: np.ndarray, cur: np.ndarray, rng: np.random.Generator, inv_p: float,
              inv_q: float) -> np.ndarray:
        """One node2vec step by rejection sampling (see the module docstring)."""
        amax = max(inv_p, 1.0, inv_q)
        out = np.empty(len(cur), dtype=np.int64)
        pending = np.arange(len(cur))
        while pending.size:
            c, pv = cur[pending], prev[pending]
            x = self.step(c, rng)
            alpha = np.where(x == pv, inv_p, np.where(self.is_edge(pv, x), 1.0, inv_q))
            accept = rng.random(len(pending)) * amax < alpha
            out[pending[accept]] = x[accept]
            pending = pending[~accept]
        return out


def random_walks(graph, walks_per_node: int = 10, walk_length: int = 40, *, p: float = 1.0, q: float = 1.0,
                 start_nodes=None, seed: int = 0, weighted: bool | None = None, progress: bool = False,
                 batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Generate truncated random walks (DeepWalk when ``p == q == 1``, node2vec otherwise).

    Args:
        graph: :class:`annrec.train.graph.Graph` or a square ``scipy.sparse`` matrix (weights > 0).
        walks_per_node: walks started from each start node (``gamma`` in DeepWalk; DeepWalk 80).
        walk_length: nodes per walk (``t`` in DeepWalk; DeepWalk 40), >= 1.
        p: node2vec return parameter (> 0): small ``p`` makes walks step back to the previous node more.
        q: node2vec in-out parameter (> 0): small ``q`` makes walks move outward (DFS-like), large ``q``
            keeps them near the previous node (BFS-like).
        start_nodes: rows to start from (default: every node); repeated ``walks_per_node`` times, shuffled
            each round.
        seed: seed of the ``numpy.random.Generator``; same inputs and seed -> identical walks.
        weighted: follow edge weights (default: when the weights are not all equal).
        progress: show a tqdm progress bar over steps.

    Returns:
        int32 array ``(walks_per_node * n_start, walk_length)`` of node rows; ``-1`` after a walk stopped
        at a node without out-edges.

    Raises:
        InputError: ``p``/``q`` <= 0, non-integer or < 1 counts, start nodes out of range.
    """
    inv_p, inv_q = (1.0 / x for x in check_pq(p, q))
    walks_per_node = _check_positive_int("walks_per_node", walks_per_node)
    walk_length = _check_positive_int("walk_length", walk_length)
    batch_size = _check_positive_int("batch_size", batch_size)
    adj = getattr(graph, "adj", graph)
    walker = _CSRWalker(adj, weighted)
    n = walker.n
    if start_nodes is None:
        starts = np.arange(n, dtype=np.int64)
    else:
        starts = np.asarray(start_nodes, dtype=np.int64).ravel()
        if starts.size and (starts.min() < 0 or starts.max() >= n):
            raise InputError(f"start nodes must be rows 0..{n - 1} of the graph")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(starts) for _ in range(walks_per_node)]) if starts.size \
        else np.zeros(0, np.int64)
    walks = np.full((len(order), walk_length), -1, dtype=np.int32)
    second_order = not (inv_p == 1.0 and inv_q == 1.0)
    n_batches = max(1, -(-len(order) // batch_size))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_batches * max(walk_length - 1, 1), desc="random walks", unit="step", leave=False)
    for b in range(0, len(order), batch_size):
        cur = order[b:b + batch_size].copy()
        rows = np.arange(len(cur))
        block = walks[b:b + batch_size]
        block[:, 0] = cur
        prev = np.full(len(cur), -1, dtype=np.int64)
        for t in range(1, walk_length):
            live = walker.deg[cur] > 0
            if not live.all():
                rows, cur, prev = rows[live], cur[live], prev[live]
            if rows.size == 0:
                break
            if second_order and t > 1:
                nxt = walker.step2(prev, cur, rng, inv_p, inv_q)
            else:
                nxt = walker.step(cur, rng)
            block[rows, t] = nxt
            prev, cur = cur, nxt
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return walks


def walk_lengths(walks: np.ndarray) -> np.ndarray:
    """``(n_walks,)`` number of nodes in each walk (entries before the first ``-1``)."""
    return (walks >= 0).sum(axis=1)


class WalkCorpus:
    """Restartable iterable of walks as lists of string tokens, the sentence format gensim expects.

    Args:
        walks: int array ``(n_walks, walk_length)`` from :func:`random_walks` (``-1`` padding dropped).
        tokens: token of each node row (default ``str(row)``).
        min_length: skip walks with fewer nodes (a 1-node walk has no skip-gram context).
    """

    def __init__(self, walks: np.ndarray, tokens=None, min_length: int = 2):
        self.walks = walks
        n = int(walks.max()) + 1 if walks.size else 0
        self.tokens = np.asarray([str(i) for i in range(n)] if tokens is None else list(tokens), dtype=object)
        self.lengths = walk_lengths(walks)
        self.keep = np.flatnonzero(self.lengths >= min_length)

    def __len__(self) -> int:
        return int(self.keep.size)

    @property
    def total_words(self) -> int:
        return int(self.lengths[self.keep].sum())

    def __iter__(self) -> Iterator[list[str]]:
        tok, walks, lengths = self.tokens, self.walks, self.lengths
        full = walks.shape[1]
        for i in self.keep.tolist():
            row = walks[i]
            k = lengths[i]
            yield tok[row if k == full else row[:k]].tolist()
