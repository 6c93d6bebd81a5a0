"""Vectorised random walks over a CSR graph: DeepWalk (uniform / first-order) and node2vec (second-order).

All walkers advance together, one step at a time, as numpy arrays (no Python loop over walkers):

* **First order** (DeepWalk, Perozzi et al. 2014): the next node is a neighbour of the current one, drawn
  uniformly (unweighted graph: one multiply-and-floor per walker) or with probability proportional to the
  edge weight (Walker's alias method over each CSR row, O(1) per walker: tables built once in O(edges)).
* **Second order** (node2vec, Grover & Leskovec 2016): the unnormalised probability of moving from
  ``cur`` (having come from ``prev``) to ``x`` is ``w(cur, x) * alpha(prev, x)`` with ``alpha = 1/p`` if
  ``x == prev`` (return), ``1`` if ``x`` is a neighbour of ``prev``, ``1/q`` otherwise (outward). It is
  sampled by **rejection**: propose ``x`` from the first-order distribution, accept with probability
  ``alpha / max(1/p, 1, 1/q)``; walkers whose proposal was rejected propose again (KnightKing, Yang et al.
  SOSP 2019; the rejection strategy of "fast node2vec" and of PyTorch Geometric / torch_cluster's
  ``random_walk``). This needs no per-edge second-order tables (node2vec's reference implementation
  precomputes alias tables for every edge, O(sum deg^2) memory); the "is ``x`` a neighbour of ``prev``"
  test is a vectorised hash lookup of the key ``prev * n + x`` among the edge keys ``row * n + col``.

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

#: Alias tables are built with numba (when installed) from this many edges of unequal weight on.
NUMBA_MIN_EDGES = 1_000_000

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
        if not self.weighted:
            data = np.ones_like(data)
        self.data = data  # the weights walks follow (all 1 when unweighted)
        self.rowsum = np.bincount(np.repeat(np.arange(self.n), self.deg), weights=data, minlength=self.n)
        if self.weighted:
            self.alias_prob, self.alias_idx = alias_tables(self.indptr, data)
        self._edge_index = None

    def step(self, cur: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One first-order step from each node of ``cur`` (all with out-degree > 0).

        Unweighted: a uniform slot of the row. Weighted: Walker's alias method, O(1) per walker (a
        uniform slot, kept with probability ``alias_prob`` or replaced by its ``alias_idx``).
        """
        start = self.indptr[cur]
        deg = self.deg[cur]
        off = (rng.random(len(cur)) * deg).astype(np.int64)
        np.minimum(off, deg - 1, out=off)
        pos = start + off
        if self.weighted:
            keep = rng.random(len(cur)) < self.alias_prob[pos]
            pos = np.where(keep, pos, self.alias_idx[pos])
        return self.indices[pos]

    def _edge_positions(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Vectorised position of edge ``u -> v`` in the CSR arrays, ``-1`` where there is none.

        A hash lookup of the key ``u * n + v`` among the edge keys ``row * n + col`` (pandas' Int64
        hash table, built once; ~7x faster than ``np.searchsorted`` on random queries).
        """
        if self._edge_index is None:
            import pandas as pd

            rows = np.repeat(np.arange(self.n, dtype=np.int64), self.deg)
            self._edge_index = pd.Index(rows * self.n + self.indices)
        if len(self._edge_index) == 0:
            return np.full(len(u), -1, dtype=np.int64)
        return self._edge_index.get_indexer(u * self.n + v)

    def is_edge(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Vectorised test of ``u -> v`` being an edge (bool array)."""
        return self._edge_positions(u, v) >= 0

    def step2(self, prev: np.ndarray, cur: np.ndarray, rng: np.random.Generator, inv_p: float,
              inv_q: float) -> np.ndarray:
        """One node2vec step from ``cur`` (having come from ``prev``) by rejection sampling.

        Target: ``P(x) ~ w(cur, x) * alpha(x)``. Envelope: ``B * w(cur, x)`` with ``B = max(1, 1/q)``,
        plus, when ``1/p > B``, an "outlier" block of mass ``w(cur, prev) * (1/p - B)`` that always
        proposes ``prev`` (KnightKing's outlier folding): a small ``p`` then does not make every other
        proposal rare. Proposals from the first block are accepted with ``min(alpha, B) / B``.
        """
        fold = inv_p > max(1.0, inv_q)
        bound = max(1.0, inv_q) if fold else max(inv_p, 1.0, inv_q)
        alpha_back = min(inv_p, bound)
        out = np.empty(len(cur), dtype=np.int64)
        pending = np.arange(len(cur))
        if fold:
            pos = self._edge_positions(cur, prev)
            w_back = np.where(pos >= 0, self.data[np.maximum(pos, 0)], 0.0)
            first_mass = bound * self.rowsum[cur]
            total_mass = first_mass + w_back * (inv_p - bound)
        while pending.size:
            c, pv = cur[pending], prev[pending]
            x = self.step(c, rng)
            alpha = np.where(x == pv, alpha_back, np.where(self.is_edge(pv, x), 1.0, inv_q))
            accept = rng.random(len(pending)) * bound < alpha
            if fold:
                to_prev = rng.random(len(pending)) * total_mass[pending] >= first_mass[pending]
                x = np.where(to_prev, pv, x)
                accept |= to_prev
            out[pending[accept]] = x[accept]
            pending = pending[~accept]
        return out


def alias_tables(indptr: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row alias tables of a CSR matrix (Walker 1977; Vose 1991), for O(1) weighted sampling.

    Args:
        indptr: ``(n + 1,)`` int64 CSR row pointers.
        weights: ``(n_edges,)`` float64 edge weights > 0.

    Returns:
        ``(prob, alias)``: float64 ``(n_edges,)`` and int64 ``(n_edges,)`` (absolute edge positions). To
        sample from row ``r``: pick a slot ``e`` of the row uniformly, keep it with probability
        ``prob[e]``, else take ``alias[e]``. Built in O(n_edges) with numba when it is installed (the
        same tables, faster) for graphs with at least :data:`NUMBA_MIN_EDGES` weighted edges, else with a
        Python loop over rows (~1.5 us per edge).
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    prob = np.ones(len(weights), dtype=np.float64)
    alias = np.arange(len(weights), dtype=np.int64)
    deg = np.diff(indptr)
    # rows whose weights are all equal need no table (prob 1, alias = itself)
    rows = np.flatnonzero(deg > 1)
    if rows.size:
        wmin = np.minimum.reduceat(weights, indptr[:-1][deg > 0])
        wmax = np.maximum.reduceat(weights, indptr[:-1][deg > 0])
        uneq = np.zeros(len(deg), dtype=bool)
        uneq[deg > 0] = wmin != wmax
        rows = np.flatnonzero(uneq)
    if rows.size:
        # numba pays ~2 s of compilation once per process: worth it only for large graphs
        big = int(deg[rows].sum()) >= NUMBA_MIN_EDGES
        kernel = _alias_kernel_numba() if big else None
        if kernel is not None:
            kernel(indptr, weights, rows, prob, alias)
        else:
            _alias_rows_python(indptr, weights, rows, prob, alias)
    return prob, alias


def _alias_rows_python(indptr, weights, rows, prob, alias) -> None:
    for r in rows.tolist():
        s, e = int(indptr[r]), int(indptr[r + 1])
        d = e - s
        w = weights[s:e]
        scaled = (w * (d / w.sum())).tolist()
        small = [i for i in range(d) if scaled[i] < 1.0]
        large = [i for i in range(d) if scaled[i] >= 1.0]
        while small and large:
            lo, hi = small.pop(), large.pop()
            prob[s + lo] = scaled[lo]
            alias[s + lo] = s + hi
            scaled[hi] = scaled[hi] + scaled[lo] - 1.0
            (small if scaled[hi] < 1.0 else large).append(hi)
        for i in small + large:  # left-overs are 1 up to rounding
            prob[s + i] = 1.0
            alias[s + i] = s + i


_NUMBA_KERNEL = None


def _alias_kernel_numba():
    """The numba version of :func:`_alias_rows_python` (same algorithm, same tables), or None."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is not None:
        return _NUMBA_KERNEL or None
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is optional
        _NUMBA_KERNEL = False
        return None

    @numba.njit(cache=False, nogil=True)
    def kernel(indptr, weights, rows, prob, alias):  # pragma: no cover - compiled
        for r in rows:
            s = indptr[r]
            e = indptr[r + 1]
            d = e - s
            total = 0.0
            for i in range(s, e):
                total += weights[i]
            scaled = np.empty(d, dtype=np.float64)
            small = np.empty(d, dtype=np.int64)
            large = np.empty(d, dtype=np.int64)
            ns = 0
            nl = 0
            for i in range(d):
                scaled[i] = weights[s + i] * (d / total)
                if scaled[i] < 1.0:
                    small[ns] = i
                    ns += 1
                else:
                    large[nl] = i
                    nl += 1
            while ns > 0 and nl > 0:
                ns -= 1
                lo = small[ns]
                nl -= 1
                hi = large[nl]
                prob[s + lo] = scaled[lo]
                alias[s + lo] = s + hi
                scaled[hi] = scaled[hi] + scaled[lo] - 1.0
                if scaled[hi] < 1.0:
                    small[ns] = hi
                    ns += 1
                else:
                    large[nl] = hi
                    nl += 1
            for j in range(ns):
                prob[s + small[j]] = 1.0
                alias[s + small[j]] = s + small[j]
            for j in range(nl):
                prob[s + large[j]] = 1.0
                alias[s + large[j]] = s + large[j]

    _NUMBA_KERNEL = kernel
    return kernel


def random_walks(graph, walks_per_node: int = 10, walk_length: int = 40, *, p: float = 1.0, q: float = 1.0,
                 start_nodes=None, seed: int = 0, weighted: bool | None = None, progress: bool = False,
                 batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Generate truncated random walks (DeepWalk when ``p == q == 1``, node2vec otherwise).

    Args:
        graph: :class:`annrec.data.graph.Graph` or a square ``scipy.sparse`` matrix (weights > 0).
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
