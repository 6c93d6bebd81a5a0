"""Graphs (for DeepWalk / node2vec): a weighted CSR adjacency matrix with external node ids.

Three ways to get one:

* :func:`cooccurrence_graph` - item co-occurrence from each user's time-ordered history: items that are
  consecutive (or within ``window`` positions) in a user's history are linked, edge weight = number of
  times the pair co-occurs (the session/item graph of Grbovic & Cheng 2018, "Real-time personalization
  using embeddings for search ranking at Airbnb", and of product co-purchase graphs).
* :func:`bipartite_graph` - the user-item bipartite graph of the interactions.
* :func:`annrec.data.edgelist.read_edge_list` / :meth:`Graph.from_edges` - an edge list (CSV/TSV file or
  arrays), with an optional weight column, directed or undirected.

Isolated nodes (no edges) are kept as nodes (a walk from them is the node alone); edges whose endpoint is
missing or not among the given nodes ("dangling" edges) are dropped and counted in ``Graph.meta``; a graph
with no edges at all is an error (:class:`~annrec.errors.DataError`), since there is nothing to walk on.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from annrec.errors import DataError, InputError, UnknownIdError

__all__ = ["Graph", "ITEM", "USER", "cooccurrence_graph", "bipartite_graph", "load_graph", "read_edge_list"]

ITEM = "item"
USER = "user"


@dataclass
class Graph:
    """A weighted graph stored as a CSR adjacency matrix.

    Attributes:
        adj: ``scipy.sparse.csr_matrix`` of shape ``(n_nodes, n_nodes)``, float64 edge weights > 0, sorted
            column indices, no explicit zeros. Row ``i`` lists the out-edges of node ``i``; an undirected
            graph stores each edge in both directions (the matrix is symmetric).
        node_ids: ``(n_nodes,)`` unique external node ids (int64 or object array of str), row order.
        directed: whether ``adj`` is to be read as directed.
        kind: how the graph was made: ``"cooccurrence"``, ``"bipartite"``, ``"edgelist"`` or ``"custom"``.
        node_type: optional ``(n_nodes,)`` object array of ``"item"`` / ``"user"`` (bipartite graphs).
        external_ids: optional ``(n_nodes,)`` ids to export for each node when they differ from
            ``node_ids`` (bipartite graphs use node ids ``"i:<itemId>"`` / ``"u:<userId>"`` to keep users
            and items apart, and export the plain item and user ids).
        items: optional item metadata (``pandas.DataFrame`` indexed by item id with ``title``, ``genres``).
        meta: provenance and counts (data set, fingerprint, dropped edges, self-loops removed, ...).
    """

    adj: sp.csr_matrix
    node_ids: np.ndarray
    directed: bool = False
    kind: str = "custom"
    node_type: np.ndarray | None = None
    external_ids: np.ndarray | None = None
    items: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        adj = self.adj
        if not sp.issparse(adj):
            adj = sp.csr_matrix(np.asarray(adj, dtype=np.float64))
        adj = sp.csr_matrix(adj, dtype=np.float64)
        if adj.shape[0] != adj.shape[1]:
            raise InputError(f"adjacency matrix must be square (n_nodes, n_nodes); got shape {adj.shape}")
        adj.sum_duplicates()
        adj.eliminate_zeros()
        adj.sort_indices()
        if adj.nnz and (not np.isfinite(adj.data).all() or adj.data.min() < 0):
            raise DataError("edge weights must be finite and >= 0: remove negative, NaN or infinite weights")
        self.adj = adj
        ids = np.asarray(self.node_ids)
        if ids.dtype.kind in "iu":
            ids = ids.astype(np.int64)
        elif ids.dtype.kind in "US":
            ids = ids.astype(object)
        if ids.ndim != 1 or len(ids) != adj.shape[0]:
            raise InputError(f"{len(ids)} node ids for a graph of {adj.shape[0]} nodes: give one id per node")
        if len(np.unique(ids)) != len(ids):
            raise InputError("node ids contain duplicates: every node needs a unique id")
        self.node_ids = ids
        self._index: dict | None = None

    # ------------------------------------------------------------------ basic properties
    @property
    def n_nodes(self) -> int:
        return int(self.adj.shape[0])

    @property
    def n_edges(self) -> int:
        """Number of edges (an undirected edge counts once; a self-loop counts once)."""
        if self.directed:
            return int(self.adj.nnz)
        n_loops = int(np.count_nonzero(self.adj.diagonal()))
        return (int(self.adj.nnz) - n_loops) // 2 + n_loops

    @property
    def weighted(self) -> bool:
        """True when the edge weights are not all equal (walks then follow the weights)."""
        d = self.adj.data
        return bool(d.size) and bool(d.min() != d.max())

    def out_degree(self) -> np.ndarray:
        """``(n_nodes,)`` int64 number of out-neighbours per node."""
        return np.diff(self.adj.indptr).astype(np.int64)

    def has_edges_mask(self) -> np.ndarray:
        """``(n_nodes,)`` bool: node has at least one in- or out-edge (is not isolated)."""
        out = self.out_degree() > 0
        if self.directed:
            out |= np.bincount(self.adj.indices, minlength=self.n_nodes) > 0
        return out

    def index_of(self, node_id) -> int:
        """Row of an external node id; raises :class:`UnknownIdError` if unknown."""
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.node_ids.tolist())}
        key = node_id
        if self.node_ids.dtype.kind in "iu" and isinstance(node_id, str) and node_id.strip().isdigit():
            key = int(node_id)
        elif isinstance(node_id, np.generic):
            key = node_id.item()
        try:
            return self._index[key]
        except KeyError:
            raise UnknownIdError(f"unknown node id {node_id!r}: it is not among the {self.n_nodes} nodes "
                                 f"of this graph") from None

    def indices_of(self, node_ids) -> np.ndarray:
        """``(n,)`` int64 rows of the given external node ids."""
        return np.asarray([self.index_of(v) for v in node_ids], dtype=np.int64)

    def check_has_edges(self) -> None:
        """Raise :class:`DataError` when the graph has no edges (nothing to walk on)."""
        if self.adj.nnz == 0:
            raise DataError(f"the {self.kind} graph has {self.n_nodes} nodes but no edges: random walks "
                            f"need edges (check the input: an empty edge list, users with a single "
                            f"interaction, or every edge dropped as dangling/self-loop)")

    def fingerprint(self) -> str:
        """sha256 (hex, first 16 chars) of the structure, weights and node ids (for manifests)."""
        h = hashlib.sha256()
        for a in (self.adj.indptr, self.adj.indices, self.adj.data):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr(self.node_ids.tolist()).encode())
        h.update(b"directed" if self.directed else b"undirected")
        return h.hexdigest()[:16]

    def unweighted(self) -> Graph:
        """A copy with every edge weight set to 1."""
        adj = self.adj.copy()
        adj.data[:] = 1.0
        return self._replace(adj=adj, meta={**self.meta, "weighted": False})

    def _replace(self, **kw) -> Graph:
        args = dict(adj=self.adj, node_ids=self.node_ids, directed=self.directed, kind=self.kind,
                    node_type=self.node_type, external_ids=self.external_ids, items=self.items,
                    meta=dict(self.meta))
        args.update(kw)
        return Graph(**args)

    def summary(self) -> dict[str, Any]:
        """Counts for reports and manifests."""
        deg = self.out_degree()
        return {"kind": self.kind, "nodes": self.n_nodes, "edges": self.n_edges, "directed": self.directed,
                "weighted": self.weighted, "isolated_nodes": int((~self.has_edges_mask()).sum()),
                "mean_out_degree": float(deg.mean()) if len(deg) else 0.0,
                "max_out_degree": int(deg.max()) if len(deg) else 0}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(cls, sources, targets, weights=None, *, directed: bool = False, nodes=None,
                   self_loops: bool = False, kind: str = "custom", meta: dict | None = None) -> Graph:
        """Build a graph from parallel arrays of edge endpoints.

        Args:
            sources, targets: ``(n_edges,)`` external node ids (ints or strings). ``None``/NaN/empty
                endpoints mark dangling edges: they are dropped and counted in ``meta["dropped_edges"]``.
            weights: optional ``(n_edges,)`` numbers > 0 (default 1). Repeated edges add their weights; in
                an undirected graph ``(u, v)`` and ``(v, u)`` are the same edge. Zero weights drop the edge.
            directed: read edges as directed (``u -> v`` only).
            nodes: optional full node list (order kept). Nodes without edges are kept as isolated nodes;
                edges touching a node not in the list are dangling: dropped and counted. Without it the
                nodes are the sorted set of endpoints.
            self_loops: keep ``u -> u`` edges (default: drop them, as DeepWalk's ``remove_self_loops``).

        Raises:
            DataError: non-numeric, negative, NaN or infinite weights; lengths differ.
        """
        src = np.asarray(sources, dtype=object) if not _is_int_array(sources) else np.asarray(sources)
        dst = np.asarray(targets, dtype=object) if not _is_int_array(targets) else np.asarray(targets)
        if src.shape != dst.shape or src.ndim != 1:
            raise DataError(f"sources and targets must be flat arrays of the same length; got {src.shape} "
                            f"and {dst.shape}")
        m = len(src)
        if weights is None:
            w = np.ones(m, dtype=np.float64)
        else:
            w = _numeric_weights(weights, "weights")
            if len(w) != m:
                raise DataError(f"{len(w)} weights for {m} edges: give one weight per edge")
        meta = dict(meta or {})
        keep = np.ones(m, dtype=bool)
        if src.dtype == object:
            keep &= ~_missing(src)
        if dst.dtype == object:
            keep &= ~_missing(dst)
        n_missing = int(m - keep.sum())

        int_ids = _all_int(src[keep]) and _all_int(dst[keep]) and (nodes is None or _all_int(nodes))
        if int_ids:
            s_ids = src[keep].astype(np.int64)
            d_ids = dst[keep].astype(np.int64)
        else:
            s_ids = np.asarray([str(v) for v in src[keep]], dtype=object)
            d_ids = np.asarray([str(v) for v in dst[keep]], dtype=object)
        w = w[keep]

        if nodes is None:
            node_ids, inv = np.unique(np.concatenate([s_ids, d_ids]), return_inverse=True)
            si, di = inv[: len(s_ids)], inv[len(s_ids):]
            n_dangling = 0
        else:
            node_ids = np.asarray(list(nodes), dtype=np.int64 if int_ids else object)
            if not int_ids:
                node_ids = np.asarray([str(v) for v in node_ids], dtype=object)
            lookup = {v: i for i, v in enumerate(node_ids.tolist())}
            if len(lookup) != len(node_ids):
                raise InputError("nodes contain duplicates: every node needs a unique id")
            si = np.fromiter((lookup.get(v, -1) for v in s_ids.tolist()), dtype=np.int64, count=len(s_ids))
            di = np.fromiter((lookup.get(v, -1) for v in d_ids.tolist()), dtype=np.int64, count=len(d_ids))
            ok = (si >= 0) & (di >= 0)
            n_dangling = int((~ok).sum())
            si, di, w = si[ok], di[ok], w[ok]
        if not self_loops:
            nl = si != di
            meta["self_loops_removed"] = int((~nl).sum())
            si, di, w = si[nl], di[nl], w[nl]
        dropped = n_missing + n_dangling
        meta["dropped_edges"] = dropped
        if dropped:
            warnings.warn(f"{dropped} dangling edge(s) dropped ({n_missing} with a missing endpoint, "
                          f"{n_dangling} touching a node not in the node list)", stacklevel=2)
        adj = _adjacency(si, di, w, len(node_ids), directed)
        return cls(adj=adj, node_ids=node_ids, directed=directed, kind=kind, meta=meta)

    def with_edges(self, sources, targets, weights=None) -> Graph:
        """A new graph with extra edges; endpoints not yet in the graph become new nodes (appended).

        Used to add nodes after training (:meth:`annrec.train.deepwalk.DeepWalk.new_node_vectors`).
        The existing nodes keep their rows; the edges follow this graph's directedness.

        Raises:
            DataError: non-numeric or negative weights.
        """
        src = list(sources)
        dst = list(targets)
        if len(src) != len(dst):
            raise DataError(f"{len(src)} sources for {len(dst)} targets: give both ends of every edge")
        w = np.ones(len(src)) if weights is None else _numeric_weights(weights, "weights")
        if len(w) != len(src):
            raise DataError(f"{len(w)} weights for {len(src)} edges: give one weight per edge")
        if self.node_ids.dtype.kind in "iu":
            if not (_all_int(src) and _all_int(dst)):
                raise InputError("this graph has integer node ids: new node ids must be integers too")
            conv = int
        else:
            conv = str
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.node_ids.tolist())}
        index = dict(self._index)
        new_ids: list = []
        for v in src + dst:
            v = conv(v)
            if v not in index:
                index[v] = self.n_nodes + len(new_ids)
                new_ids.append(v)
        si = np.asarray([index[conv(v)] for v in src], dtype=np.int64)
        di = np.asarray([index[conv(v)] for v in dst], dtype=np.int64)
        n = self.n_nodes + len(new_ids)
        old = self.adj.tocoo()
        add = _adjacency(si, di, w, n, self.directed).tocoo()
        adj = sp.csr_matrix((np.concatenate([old.data, add.data]),
                             (np.concatenate([old.row, add.row]), np.concatenate([old.col, add.col]))),
                            shape=(n, n))
        node_ids = np.concatenate([self.node_ids, np.asarray(new_ids, dtype=self.node_ids.dtype)])
        node_type = ext = None
        if self.node_type is not None:
            node_type = np.concatenate([self.node_type, np.asarray([ITEM] * len(new_ids), dtype=object)])
        if self.external_ids is not None:
            ext = np.concatenate([self.external_ids.astype(object), np.asarray(new_ids, dtype=object)])
        return self._replace(adj=adj, node_ids=node_ids, node_type=node_type, external_ids=ext,
                             meta={**self.meta, "added_nodes": len(new_ids)})


# ---------------------------------------------------------------------- builders from interactions
def cooccurrence_graph(interactions, *, window: int = 1, weighted: bool = True) -> Graph:
    """Item co-occurrence graph from each user's time-ordered history.

    Items at positions ``t`` and ``t + d`` (``1 <= d <= window``) of a user's history (ordered by
    timestamp, :meth:`Interactions.sequences`) are linked by an undirected edge; the edge weight is the
    number of such co-occurrences over all users (``window=1``: consecutive items only). Every item of
    the interactions is a node (row ``i`` is ``item_idx == i``); items that never co-occur are isolated.

    Args:
        interactions: :class:`annrec.data.Interactions`.
        window: how many following items each item is linked to (>= 1).
        weighted: keep the counts as weights (``False``: every edge weight is 1).

    Returns:
        :class:`Graph` of kind ``"cooccurrence"``, node ids = external item ids (e.g. MovieLens movieId).

    Raises:
        InputError: ``window < 1``. DataError: no two items co-occur (no edges).
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise InputError(f"co-occurrence window must be an integer >= 1; got {window!r}")
    seqs = _sequences(interactions)
    n_items = len(interactions.item_ids)
    lens = np.asarray([len(s) for s in seqs], dtype=np.int64)
    flat = np.concatenate(seqs).astype(np.int64) if len(seqs) else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(seqs)), lens)
    src, dst = [], []
    for d in range(1, int(window) + 1):
        if len(flat) <= d:
            break
        same = owner[:-d] == owner[d:]
        src.append(flat[:-d][same])
        dst.append(flat[d:][same])
    si = np.concatenate(src) if src else np.zeros(0, np.int64)
    di = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    loops = si == di
    si, di = si[~loops], di[~loops]
    adj = _adjacency(si, di, np.ones(len(si)), n_items, directed=False)
    if not weighted:
        adj.data[:] = 1.0
    meta = _data_meta(interactions)
    meta.update(window=int(window), weighted=bool(weighted), self_loops_removed=int(loops.sum()),
                dropped_edges=0)
    g = Graph(adj=adj, node_ids=np.asarray(interactions.item_ids), directed=False, kind="cooccurrence",
              items=getattr(interactions, "items", None), meta=meta)
    g.check_has_edges()
    return g


def bipartite_graph(interactions, *, weighted: bool = False) -> Graph:
    """User-item bipartite graph: an undirected edge between a user and every item they interacted with.

    Nodes: the items first (rows ``0 .. n_items-1``, ``item_idx`` order, node ids ``"i:<itemId>"``),
    then the users (node ids ``"u:<userId>"``); ``node_type`` says which and ``external_ids`` holds the
    plain ids. The DeepWalk trainer exports the item rows as item vectors and the user rows as query
    vectors.

    Args:
        weighted: edge weight = rating (``False``: 1 per interaction; repeated interactions add up).

    Raises:
        DataError: no interactions (no edges), or non-positive ratings with ``weighted=True``.
    """
    n_items = len(interactions.item_ids)
    n_users = len(interactions.user_ids)
    u = np.asarray(interactions.user_idx, dtype=np.int64) + n_items
    i = np.asarray(interactions.item_idx, dtype=np.int64)
    if weighted:
        w = np.asarray(interactions.rating, dtype=np.float64)
        if w.size and (not np.isfinite(w).all() or w.min() <= 0):
            raise DataError("weighted bipartite graph needs ratings > 0: use weighted=False for "
                            "implicit feedback")
    else:
        w = np.ones(len(i))
    adj = _adjacency(u, i, w, n_items + n_users, directed=False)
    item_ids = np.asarray(interactions.item_ids)
    user_ids = np.asarray(interactions.user_ids)
    node_ids = np.asarray([f"i:{v}" for v in item_ids.tolist()] + [f"u:{v}" for v in user_ids.tolist()],
                          dtype=object)
    node_type = np.asarray([ITEM] * n_items + [USER] * n_users, dtype=object)
    external = np.concatenate([item_ids.astype(object), user_ids.astype(object)])
    meta = _data_meta(interactions)
    meta.update(weighted=bool(weighted), dropped_edges=0)
    g = Graph(adj=adj, node_ids=node_ids, directed=False, kind="bipartite", node_type=node_type,
              external_ids=external, items=getattr(interactions, "items", None), meta=meta)
    g.check_has_edges()
    return g


def load_graph(kind: str, interactions=None, *, edges: str | os.PathLike | None = None, window: int = 1,
               weighted: bool = True, directed: bool = False) -> Graph:
    """Build a graph by name: ``"cooccurrence"``, ``"bipartite"`` or ``"edgelist"`` (the CLI's ``--graph``).

    Raises:
        InputError: unknown kind, or a missing ``interactions`` / ``edges`` argument for that kind.
    """
    if kind == "cooccurrence":
        if interactions is None:
            raise InputError("the co-occurrence graph needs interactions (a data set)")
        return cooccurrence_graph(interactions, window=window, weighted=weighted)
    if kind == "bipartite":
        if interactions is None:
            raise InputError("the bipartite graph needs interactions (a data set)")
        return bipartite_graph(interactions, weighted=weighted)
    if kind == "edgelist":
        from annrec.data.edgelist import read_edge_list

        if edges is None:
            raise InputError("--graph edgelist needs --edges FILE (a CSV/TSV edge list)")
        g = read_edge_list(edges, directed=directed)
        return g if weighted else g.unweighted()
    raise InputError(f"unknown graph kind {kind!r}: use cooccurrence, bipartite or edgelist")


def read_edge_list(path: str | os.PathLike, **kwargs: Any) -> Graph:
    """Read an edge list file: :func:`annrec.data.edgelist.read_edge_list` (same arguments)."""
    from annrec.data.edgelist import read_edge_list as read

    return read(path, **kwargs)


# ---------------------------------------------------------------------- helpers
def _adjacency(si, di, w, n, directed) -> sp.csr_matrix:
    si = np.asarray(si, dtype=np.int64)
    di = np.asarray(di, dtype=np.int64)
    w = np.asarray(w, dtype=np.float64)
    if not directed:
        off = si != di
        si, di, w = np.concatenate([si, di[off]]), np.concatenate([di, si[off]]), np.concatenate([w, w[off]])
    adj = sp.csr_matrix((w, (si, di)), shape=(n, n), dtype=np.float64)
    adj.sum_duplicates()
    adj.eliminate_zeros()
    adj.sort_indices()
    return adj


def _sequences(interactions) -> list[np.ndarray]:
    if hasattr(interactions, "sequences"):
        seqs = interactions.sequences()
        if isinstance(seqs, dict):
            seqs = list(seqs.values())
        return [np.asarray(s, dtype=np.int64) for s in seqs]
    # fallback: order each user's events by timestamp (stable: ties keep file order)
    u = np.asarray(interactions.user_idx, dtype=np.int64)
    i = np.asarray(interactions.item_idx, dtype=np.int64)
    t = np.asarray(interactions.timestamp, dtype=np.int64)
    order = np.lexsort((t, u))
    bounds = np.flatnonzero(np.diff(u[order])) + 1
    return np.split(i[order], bounds)


def _data_meta(interactions) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    name = getattr(interactions, "name", None) or getattr(interactions, "dataset", None)
    if name is not None:
        meta["dataset"] = str(name)
    fp = getattr(interactions, "fingerprint", None)
    if callable(fp):
        try:
            meta["fingerprint"] = fp()
        except Exception:  # pragma: no cover - provenance only
            pass
    elif fp is not None:
        meta["fingerprint"] = str(fp)
    return meta


def _numeric_weights(weights, name: str) -> np.ndarray:
    arr = np.asarray(weights, dtype=object) if not isinstance(weights, np.ndarray) else weights
    try:
        w = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next((v for v in np.ravel(arr).tolist() if not _is_number(v)), None)
        raise DataError(f"{name} must be numbers; found {bad!r}: fix or drop the weight values") from None
    if w.ndim != 1:
        raise DataError(f"{name} must be a flat array; got shape {w.shape}")
    if not np.isfinite(w).all():
        raise DataError(f"{name} contain NaN or infinite values: every edge weight must be a finite number")
    if w.size and w.min() < 0:
        raise DataError(f"{name} must be >= 0; found {w.min()}")
    return w


def _is_number(v) -> bool:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return True
    try:
        float(str(v))
        return True
    except ValueError:
        return False


def _missing(arr) -> np.ndarray:
    return np.asarray([v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v)
                       for v in np.ravel(arr).tolist()], dtype=bool)


def _all_int(arr) -> bool:
    a = np.asarray(arr) if not isinstance(arr, list) else np.asarray(arr, dtype=object)
    if a.dtype.kind in "iu":
        return True
    if a.dtype == object:
        return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in a.tolist())
    return False


def _is_int_array(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind in "iu"
