"""DeepWalk / node2vec: skip-gram with negative sampling on truncated random walks (gensim ``Word2Vec``).

Pipeline: a :class:`~annrec.data.graph.Graph` (or :class:`~annrec.data.Interactions`, turned into the
item co-occurrence or user-item bipartite graph) -> vectorised random walks
(:func:`annrec.train.walks.random_walks`; ``p = q = 1`` is DeepWalk, other values node2vec) ->
gensim ``Word2Vec(sg=1, hs=0, negative=k)`` over the walks as sentences -> an
:class:`~annrec.embeddings.Embeddings` artifact with metric ``cosine``.

References: Perozzi, Al-Rfou & Skiena, "DeepWalk: Online Learning of Social Representations", KDD 2014;
Grover & Leskovec, "node2vec: Scalable Feature Learning for Networks", KDD 2016; Mikolov et al.,
"Distributed Representations of Words and Phrases and their Compositionality", NIPS 2013 (skip-gram with
negative sampling); gensim ``Word2Vec`` (Rehurek & Sojka).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from annrec.data.graph import ITEM, USER, Graph, load_graph
from annrec.embeddings import Embeddings
from annrec.errors import InputError
from annrec.train.base import RecommendFn, Trainer, check_num_threads, renamed_params, resolve_num_threads
from annrec.train.walks import WalkCorpus, check_pq, random_walks

#: Presets. ``small``: 10 walks per node, length 5, window 4, 10 negatives, learning rate 0.03 -> 0.0001,
#: 20 epochs, dimension 100 - a practical recipe for product co-purchase graphs. ``paper``: 80 walks per
#: node, length 40, window 10, dimension 128 (Perozzi et al. 2014, section 6), everything else at gensim
#: 4's ``Word2Vec`` defaults: 5 negatives, learning rate 0.025 -> 0.0001, 5 epochs, downsampling
#: ``sample=1e-3``. Both use skip-gram (``sg=1``) with negative sampling (``hs=0``), ``sample=1e-3``
#: (gensim default) and ``min_count=1`` (so that every node that appears on a walk gets a vector;
#: gensim's default 5 would drop rare nodes).
PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(walks_per_node=10, walk_length=5, window=4, negatives=10, alpha=0.03, min_alpha=0.0001,
                  epochs=20, factors=100, sample=1e-3),
    "paper": dict(walks_per_node=80, walk_length=40, window=10, negatives=5, alpha=0.025, min_alpha=0.0001,
                  epochs=5, factors=128, sample=1e-3),
}

GRAPH_KINDS = ("cooccurrence", "bipartite")
#: gensim settings fixed by this trainer (recorded in the manifest): skip-gram, negative sampling, every node.
GENSIM_FIXED = {"sg": 1, "hs": 0, "min_count": 1}
_RENAMED = {"dim": "factors", "negative": "negatives", "workers": "num_threads", "progress": "show_progress"}


class DeepWalk(Trainer):
    """DeepWalk (``p = q = 1``) or node2vec (other ``p``, ``q``) embeddings of graph nodes.

    Follows :class:`annrec.train.base.Trainer`: hyper-parameters go in the constructor (``None`` takes the
    preset's value, :data:`PRESETS`), ``fit(graph_or_interactions) -> self``, ``to_embeddings()``.

    Args:
        preset: ``"small"`` or ``"paper"``.
        walks_per_node: walks started from every node (DeepWalk's gamma).
        walk_length: nodes per walk (DeepWalk's t).
        window: skip-gram context window (DeepWalk's w).
        factors: vector dimension (DeepWalk's d; ``dim`` before, deprecated).
        negatives: negative samples per positive pair (``negative`` before, deprecated).
        alpha, min_alpha: learning rate, linearly decayed from ``alpha`` to ``min_alpha``.
        epochs: passes of gensim over the walk corpus.
        sample: gensim's down-sampling threshold of frequent tokens (nodes).
        p, q: node2vec return and in-out parameters (> 0); ``p = q = 1`` gives uniform DeepWalk walks.
        weighted: walks follow edge weights (when the graph has unequal weights); for Interactions input
            also whether the built graph keeps co-occurrence counts (``False``: every edge weighs 1).
        graph: the graph built from Interactions input: ``"cooccurrence"`` or ``"bipartite"``.
        cooccurrence_window: items up to this many positions apart in a user's history are linked.
        num_threads: gensim worker threads (``None``: the machine's cores; ``workers`` before, deprecated).
            Vectors are bit-for-bit reproducible only with ``num_threads=1`` (thread scheduling changes the
            update order); the walks are always reproducible.
        seed: seed for the walks and for gensim.
        device: ``None`` or ``"cpu"`` (gensim trains on the CPU only).
        show_progress: show progress bars (walks and training epochs; ``progress`` before, deprecated).

    Attributes (after :meth:`fit`):
        graph_: the :class:`Graph` trained on. model_: the gensim ``Word2Vec``. embeddings_: the export.
        timings_: ``{"walks_s": ..., "train_s": ...}``. corpus_: ``{"walks": ..., "tokens": ...}``.

    Raises:
        InputError: unknown preset or graph kind, ``p``/``q`` <= 0, non-positive sizes, a device other than
            the CPU.
    """

    name = "deepwalk"

    def __init__(self, preset: str = "small", *, walks_per_node: int | None = None, walk_length: int | None = None,
                 window: int | None = None, factors: int | None = None, negatives: int | None = None,
                 alpha: float | None = None, min_alpha: float | None = None, epochs: int | None = None,
                 sample: float | None = None, p: float = 1.0, q: float = 1.0, weighted: bool = True,
                 graph: str = "cooccurrence", cooccurrence_window: int = 1, num_threads: int | None = None,
                 seed: int = 0, device: str | None = None, show_progress: bool = False, **deprecated: Any):
        kw = renamed_params("DeepWalk", deprecated, _RENAMED, dict(factors=factors, negatives=negatives,
                                                                    num_threads=num_threads,
                                                                    show_progress=show_progress))
        if preset not in PRESETS:
            raise InputError(f"unknown DeepWalk preset {preset!r}: use one of {', '.join(PRESETS)}")
        if graph not in GRAPH_KINDS:
            raise InputError(f"unknown graph kind {graph!r} for interactions: use one of {', '.join(GRAPH_KINDS)} "
                             f"(or pass a Graph, e.g. from annrec.data.edgelist.read_edge_list)")
        if device not in (None, "cpu"):
            raise InputError(f"device {device!r}: DeepWalk trains with gensim on the CPU only; use device=None or 'cpu'")
        self.preset = preset
        given = dict(walks_per_node=walks_per_node, walk_length=walk_length, window=window, factors=kw["factors"],
                     negatives=kw["negatives"], alpha=alpha, min_alpha=min_alpha, epochs=epochs, sample=sample)
        cfg = {k: (PRESETS[preset][k] if v is None else v) for k, v in given.items()}
        for k in ("walks_per_node", "walk_length", "window", "factors", "epochs", "negatives"):
            _check_int(k, cfg[k], 1)
        _check_int("cooccurrence_window", cooccurrence_window, 1)
        for k in ("alpha", "min_alpha", "sample"):
            _check_float(k, cfg[k], allow_zero=(k != "alpha"))
        self.walks_per_node = int(cfg["walks_per_node"])
        self.walk_length = int(cfg["walk_length"])
        self.window = int(cfg["window"])
        self.factors = int(cfg["factors"])
        self.negatives = int(cfg["negatives"])
        self.alpha = float(cfg["alpha"])
        self.min_alpha = float(cfg["min_alpha"])
        self.epochs = int(cfg["epochs"])
        self.sample = float(cfg["sample"])
        self.p, self.q = check_pq(p, q)
        self.weighted = bool(weighted)
        self.graph = graph
        self.cooccurrence_window = int(cooccurrence_window)
        self.num_threads = check_num_threads(kw["num_threads"])
        self.seed = int(seed)
        self.device = device
        self.show_progress = bool(kw["show_progress"])
        self.model_ = None
        self.graph_: Graph | None = None
        self.embeddings_: Embeddings | None = None
        self.timings_: dict[str, float] = {}
        self.corpus_: dict[str, int] = {}
        self._train_data = None

    # ------------------------------------------------------------------ training
    def as_graph(self, data) -> Graph:
        """The graph to walk on: a :class:`Graph` as is, Interactions through ``self.graph``, a square
        scipy sparse matrix with node ids ``0..n-1``.

        Raises:
            InputError: an unsupported input type. DataError: a graph with no edges.
        """
        if isinstance(data, Graph):
            g = data
        elif hasattr(data, "item_idx") and hasattr(data, "user_idx"):
            g = load_graph(self.graph, data, window=self.cooccurrence_window, weighted=self.weighted)
        else:
            import scipy.sparse as sp

            if not sp.issparse(data):
                raise InputError(f"DeepWalk.fit takes a Graph, Interactions or a square scipy.sparse "
                                 f"adjacency matrix; got {type(data).__name__}")
            g = Graph(adj=data, node_ids=np.arange(data.shape[0]), directed=(data != data.T).nnz > 0)
        g.check_has_edges()
        return g

    def _walks(self, graph: Graph, start_nodes=None, walks_per_node=None, walk_length=None, seed=None):
        return random_walks(graph, walks_per_node or self.walks_per_node, walk_length or self.walk_length,
                            p=self.p, q=self.q, start_nodes=start_nodes,
                            seed=self.seed if seed is None else seed,
                            weighted=None if self.weighted else False, progress=self.show_progress)

    def fit(self, train, validation=None) -> DeepWalk:
        """Walk the graph and train skip-gram on the walks.

        Args:
            train: a :class:`Graph`, :class:`~annrec.data.Interactions` (graph built per ``graph``), or a
                square ``scipy.sparse`` adjacency matrix.
            validation: accepted for the trainer contract, not used (a fixed number of ``epochs``).

        Returns:
            ``self``; :meth:`to_embeddings` gives the vectors.

        Raises:
            DataError: the graph has no edges. InputError: unsupported input.
        """
        data = train
        from gensim.models import Word2Vec

        graph = self.as_graph(data)
        t0 = time.perf_counter()
        walks = self._walks(graph)
        t1 = time.perf_counter()
        corpus = WalkCorpus(walks, tokens=_tokens(graph))
        model = Word2Vec(vector_size=self.factors, window=self.window, negative=self.negatives, alpha=self.alpha,
                         min_alpha=self.min_alpha, sample=self.sample, workers=resolve_num_threads(self.num_threads),
                         seed=self.seed, epochs=self.epochs, **GENSIM_FIXED)
        model.build_vocab(corpus)
        model.train(corpus, total_examples=len(corpus), epochs=self.epochs, callbacks=self._callbacks())
        t2 = time.perf_counter()
        self.model_, self.graph_ = model, graph
        self.timings_ = {"walks_s": t1 - t0, "train_s": t2 - t1}
        self.corpus_ = {"walks": len(corpus), "tokens": corpus.total_words}
        self.embeddings_ = self._export(graph)
        self._train_data = data if hasattr(data, "item_idx") and hasattr(data, "user_idx") else None
        self._fitted = True
        return self

    def to_embeddings(self) -> Embeddings:
        """:class:`Embeddings` (metric ``cosine``) of every node with at least one edge: for graphs of items
        their external ids (MovieLens movieIds) with ``items`` metadata (title, genres) when known; for the
        bipartite graph the items as item vectors and the users as query vectors. float32
        ``(n_items, factors)``; ``manifest["params"]`` is :meth:`get_params`.

        Raises:
            NotFittedError: before :meth:`fit`.
        """
        self._check_fitted()
        return self.embeddings_

    def recommend_fn(self) -> RecommendFn:
        """Item-to-item scorer over the training Interactions' rows: the mean cosine similarity of an item
        to the user's training items (:func:`annrec.eval.graph.item_to_item_recommender`).

        Raises:
            NotFittedError: before :meth:`fit`. InputError: fitted on a graph, not on Interactions (no users).
        """
        from annrec.eval.graph import item_to_item_recommender, item_vectors_by_index

        self._check_fitted()
        if self._train_data is None:
            raise InputError("recommend_fn needs a DeepWalk fitted on Interactions (users and their items); "
                             "this one was fitted on a graph")
        return item_to_item_recommender(*item_vectors_by_index(self.embeddings_, self._train_data.item_ids))

    def _callbacks(self):
        if not self.show_progress:
            return ()
        from gensim.models.callbacks import CallbackAny2Vec
        from tqdm.auto import tqdm

        class _Bar(CallbackAny2Vec):
            def __init__(self, total):
                self.bar = tqdm(total=total, desc="skip-gram epochs", unit="epoch", leave=False)

            def on_epoch_end(self, model):
                self.bar.update(1)

            def on_train_end(self, model):
                self.bar.close()

        return [_Bar(self.epochs)]

    def _export(self, graph: Graph) -> Embeddings:
        wv = self.model_.wv
        tokens = _tokens(graph)
        known = np.fromiter((t in wv.key_to_index for t in tokens), dtype=bool, count=len(tokens))
        keep = graph.has_edges_mask() & known
        ext = graph.external_ids if graph.external_ids is not None else graph.node_ids
        if graph.node_type is not None:
            item_rows = np.flatnonzero(keep & (graph.node_type == ITEM))
            user_rows = np.flatnonzero(keep & (graph.node_type == USER))
        else:
            item_rows, user_rows = np.flatnonzero(keep), np.zeros(0, np.int64)
        if item_rows.size == 0:
            raise InputError("no item node has a trained vector: the graph's item nodes have no edges")
        vectors = np.stack([wv[tokens[r]] for r in item_rows]).astype(np.float32)
        ids = _plain_ids(ext[item_rows])
        queries = query_ids = seen = None
        if user_rows.size:
            queries = np.stack([wv[tokens[r]] for r in user_rows]).astype(np.float32)
            query_ids = _plain_ids(ext[user_rows])
            # the user-item edges: what each user has already seen (recommendations exclude it)
            seen = graph.adj[user_rows][:, item_rows].tocsr()
            seen.data[:] = 1.0
        manifest = {
            "trainer": "deepwalk",
            "params": self.get_params(),
            "gensim": {**GENSIM_FIXED, "walks": "uniform (DeepWalk)" if self.p == self.q == 1.0
                       else "second-order (node2vec)"},
            "dataset": graph.meta.get("dataset"),
            "data_hash": graph.meta.get("fingerprint") or graph.fingerprint(),
            "graph": {**graph.summary(), "fingerprint": graph.fingerprint(),
                      **{k: v for k, v in graph.meta.items() if k not in ("dataset", "fingerprint")}},
            "nodes_without_vectors": int((~keep).sum()),
            "timings": {k: round(v, 3) for k, v in self.timings_.items()},
            "corpus": dict(self.corpus_),
        }
        manifest["fingerprint"] = manifest["data_hash"]
        manifest["figures"] = {}
        return Embeddings(vectors=vectors, ids=ids, metric="cosine", queries=queries, query_ids=query_ids,
                          items=_items_metadata(graph.items, ids), manifest=manifest, seen=seen)

    # ------------------------------------------------------------------ new nodes
    def new_node_vectors(self, graph: Graph, nodes, *, walks_per_node: int | None = None,
                         walk_length: int | None = None, seed: int | None = None) -> np.ndarray:
        """Vectors for nodes added to the graph after training, without retraining.

        Random walks (this model's ``p``, ``q``) start from each new node on ``graph`` (the trained graph
        plus the new nodes and their edges, e.g. from :meth:`Graph.with_edges`); the vector is the mean of
        the unit-normalised vectors of the trained nodes met on those walks, each counted as often as it
        was visited (the start node and other untrained nodes are skipped). Defaults: this model's
        ``walks_per_node`` and ``walk_length``.

        Args:
            graph: graph containing the new nodes; trained nodes are matched by node id.
            nodes: external ids of the new nodes.

        Returns:
            float32 ``(len(nodes), dim)``.

        Raises:
            InputError: not trained yet; a node whose walks meet no trained node (no edges to them).
            UnknownIdError: a node id not in ``graph``.
        """
        self._check_fitted()
        rows = graph.indices_of(list(nodes))
        if rows.size == 0:
            return np.zeros((0, self.factors), dtype=np.float32)
        walks = random_walks(graph, walks_per_node or self.walks_per_node, max(walk_length or self.walk_length, 2),
                             p=self.p, q=self.q, start_nodes=rows, seed=self.seed if seed is None else seed,
                             weighted=None if self.weighted else False)
        wv = self.model_.wv
        tokens = _tokens(graph)
        # graph row -> row of the gensim vectors (-1: not trained)
        vrow = np.asarray([wv.key_to_index.get(t, -1) for t in tokens], dtype=np.int64)
        unit = wv.vectors / np.maximum(np.linalg.norm(wv.vectors, axis=1, keepdims=True), 1e-12)
        start_of = {int(r): i for i, r in enumerate(rows.tolist())}
        owner = np.fromiter((start_of[int(s)] for s in walks[:, 0]), dtype=np.int64, count=len(walks))
        visited = walks[:, 1:]
        owner = np.broadcast_to(owner[:, None], visited.shape)
        ok = visited >= 0
        vis, own = visited[ok].astype(np.int64), owner[ok]
        vr = vrow[vis]
        ok2 = vr >= 0
        out = np.zeros((len(rows), self.factors), dtype=np.float64)
        np.add.at(out, own[ok2], unit[vr[ok2]])
        counts = np.bincount(own[ok2], minlength=len(rows))
        if (counts == 0).any():
            bad = [nodes[i] for i in np.flatnonzero(counts == 0)[:5]]
            raise InputError(f"new node(s) {bad} reach no trained node on their random walks: add edges "
                             f"from them to nodes of the trained graph")
        return (out / counts[:, None]).astype(np.float32)

    def partial_fit(self, graph: Graph, nodes=None, *, epochs: int | None = None,
                    walks_per_node: int | None = None) -> Embeddings:
        """Warm-start incremental training: walks from the new nodes (and their neighbours) update the
        vocabulary (gensim ``build_vocab(update=True)``) and continue training the existing model.

        Args:
            graph: the trained graph plus new nodes/edges (trained nodes matched by node id).
            nodes: external ids of the nodes to walk from (default: nodes of ``graph`` without a vector
                that have edges).
            epochs: training epochs on the new walks (default: this model's ``epochs``).

        Returns:
            :class:`Embeddings` of every node of ``graph`` with a vector (new nodes included).

        Raises:
            InputError: not trained yet, or no new node with edges to walk from.
        """
        self._check_fitted()
        graph.check_has_edges()
        tokens = _tokens(graph)
        wv = self.model_.wv
        if nodes is None:
            has = graph.has_edges_mask()
            rows = np.asarray([r for r, t in enumerate(tokens) if t not in wv.key_to_index and has[r]],
                              dtype=np.int64)
        else:
            rows = graph.indices_of(list(nodes))
        if rows.size == 0:
            raise InputError("partial_fit found no new node with edges: add nodes with Graph.with_edges "
                             "or pass nodes=[...] to walk from")
        nb = np.unique(np.concatenate([graph.adj.indices[graph.adj.indptr[r]:graph.adj.indptr[r + 1]]
                                       for r in rows.tolist()] + [rows]))
        t0 = time.perf_counter()
        walks = self._walks(graph, start_nodes=nb, walks_per_node=walks_per_node, seed=self.seed + 1)
        corpus = WalkCorpus(walks, tokens=tokens)
        t1 = time.perf_counter()
        self.model_.build_vocab(corpus, update=True)
        ep = epochs or self.epochs
        self.model_.train(corpus, total_examples=len(corpus), epochs=ep)
        t2 = time.perf_counter()
        self.graph_ = graph
        self.timings_ = {**self.timings_, "update_walks_s": t1 - t0, "update_train_s": t2 - t1}
        self.embeddings_ = self._export(graph)
        self.embeddings_.manifest["updates"] = self.embeddings_.manifest.get("updates", 0) + 1
        return self.embeddings_


# ---------------------------------------------------------------------- helpers
def _tokens(graph: Graph) -> np.ndarray:
    """gensim token of every node row: ``str(node_id)`` (stable across graphs with the same ids)."""
    return np.asarray([str(v) for v in graph.node_ids.tolist()], dtype=object)


def _plain_ids(ids: np.ndarray) -> np.ndarray:
    vals = ids.tolist()
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
        return np.asarray(vals, dtype=np.int64)
    return np.asarray([str(v) for v in vals], dtype=object)


def _items_metadata(items, ids: np.ndarray) -> dict | None:
    """``{id: {"title": ..., "genres": [...]}}`` for the ids found in an items DataFrame (None if none)."""
    if items is None or not hasattr(items, "index"):
        return None
    cols = [c for c in ("title", "genres") if c in getattr(items, "columns", [])]
    if not cols:
        return None
    out = {}
    index = set(items.index.tolist())
    sub = items.loc[[v for v in ids.tolist() if v in index], cols]
    for key, row in zip(sub.index.tolist(), sub.itertuples(index=False)):
        rec = {}
        for c, v in zip(cols, row):
            if c == "genres":
                rec[c] = [str(g) for g in (v if isinstance(v, (list, tuple, np.ndarray)) else [])]
            else:
                rec[c] = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
        out[key] = rec
    return out or None


def _check_int(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {v!r}")


def _check_float(name, v, allow_zero):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number; got {v!r}") from None
    if not np.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise InputError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}; got {v!r}")
