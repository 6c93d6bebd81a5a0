"""Query-time parameters of a FAISS index through any wrapper, and FAISS's per-thread OpenMP thread count.

A factory string can nest indexes: ``"OPQ16,IVF256,PQ16"`` is an ``IndexPreTransform`` around an IVF,
``"IVF1024,PQ196x4fs,RFlat"`` an ``IndexRefine`` (re-ranking with exact distances) around an IVF fast-scan
index, ``"IDMap,Flat"`` an ``IndexIDMap``. :func:`walk` finds the wrappers and the index each parameter
belongs to; :func:`search_parameters` builds the matching nest of FAISS ``SearchParameters`` subclasses
(``SearchParametersPreTransform``, ``IndexRefineSearchParameters``, ``SearchParametersIVF``,
``SearchParametersHNSW``), so ``nprobe``, ``efSearch`` and ``k_factor`` reach their index per call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import faiss

#: query-time parameter -> the kind of index it belongs to
PARAM_OWNER = {"nprobe": "ivf", "efSearch": "hnsw", "k_factor": "refine"}


@dataclass
class Structure:
    """The wrappers of a FAISS index, outermost first, and the indexes the query parameters belong to.

    Attributes:
        chain: ``[(kind, index), ...]`` with kind ``"pretransform"``, ``"refine"`` or ``"idmap"``.
        leaf: the innermost index (downcast); ``kind`` its kind: ``"ivf"``, ``"hnsw"`` or ``"plain"``.
        owners: ``{"ivf": IndexIVF, "hnsw": IndexHNSW, "refine": IndexRefine}`` for those present.
    """

    chain: list[tuple[str, Any]]
    leaf: Any
    kind: str
    owners: dict[str, Any] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        """True when the query parameter ``name`` (``nprobe``, ``efSearch``, ``k_factor``) applies."""
        return PARAM_OWNER.get(name) in self.owners


def walk(index) -> Structure:
    """Unwrap ``IndexPreTransform``, ``IndexRefine`` and ``IndexIDMap`` down to the searching index."""
    chain: list[tuple[str, Any]] = []
    node = faiss.downcast_index(index)
    owners: dict[str, Any] = {}
    while True:
        if isinstance(node, faiss.IndexPreTransform):
            chain.append(("pretransform", node))
            node = faiss.downcast_index(node.index)
        elif isinstance(node, faiss.IndexRefine):
            chain.append(("refine", node))
            owners.setdefault("refine", node)
            node = faiss.downcast_index(node.base_index)
        elif isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            chain.append(("idmap", node))
            node = faiss.downcast_index(node.index)
        else:
            break
    kind = "ivf" if isinstance(node, faiss.IndexIVF) else "hnsw" if isinstance(node, faiss.IndexHNSW) else "plain"
    if kind != "plain":
        owners[kind] = node
    return Structure(chain, node, kind, owners)


def apply_defaults(structure: Structure, params: dict[str, Any]) -> None:
    """Set the default query parameters on the indexes they belong to (``nprobe``, ``efSearch``, ``k_factor``)."""
    if params.get("nprobe") is not None and "ivf" in structure.owners:
        structure.owners["ivf"].nprobe = int(params["nprobe"])
    if params.get("efSearch") is not None and "hnsw" in structure.owners:
        structure.owners["hnsw"].hnsw.efSearch = int(params["efSearch"])
    if params.get("k_factor") is not None and "refine" in structure.owners:
        structure.owners["refine"].k_factor = float(params["k_factor"])


def search_parameters(structure: Structure, params: dict[str, Any] | None, selector=None):
    """The nest of FAISS ``SearchParameters`` for one search, or ``None`` when nothing differs from the defaults.

    Per-call ``params`` override the indexes' defaults; ``selector`` (an ``IDSelector``) filters the
    candidates of the searching index (inside a re-ranking wrapper, the base index's candidates).
    """
    params = params or {}
    if not params and selector is None:
        return None
    keep: list[Any] = [selector]
    owners = structure.owners
    if structure.kind == "ivf":
        sp = faiss.SearchParametersIVF()
        sp.nprobe = int(params.get("nprobe", owners["ivf"].nprobe))
    elif structure.kind == "hnsw":
        sp = faiss.SearchParametersHNSW()
        sp.efSearch = int(params.get("efSearch", owners["hnsw"].hnsw.efSearch))
    else:
        sp = faiss.SearchParameters()
    if selector is not None:
        sp.sel = selector
    for kind, node in reversed(structure.chain):
        keep.append(sp)
        if kind == "pretransform":
            outer = faiss.SearchParametersPreTransform()
            outer.index_params = sp
            if selector is not None:
                outer.sel = selector
            sp = outer
        elif kind == "refine":
            outer = faiss.IndexRefineSearchParameters()
            outer.k_factor = float(params.get("k_factor", node.k_factor))
            outer.base_index_params = sp
            sp = outer
    sp._annrec_keep = keep  # the nested SWIG objects must outlive the search
    return sp


_ALL_THREADS = faiss.omp_get_max_threads()
_THREADS = threading.local()  # OpenMP's thread count is a per-thread setting: remember it per thread


def set_threads(threads: int | None) -> None:
    """Set FAISS's OpenMP thread count for searches from the calling thread (``None``: all cores).

    ``omp_set_num_threads`` changes the calling thread's setting only, so the value is tracked per thread:
    a worker thread that asks for 1 thread gets 1, whatever another thread set before.
    """
    want = _ALL_THREADS if threads is None else int(threads)
    if getattr(_THREADS, "n", _ALL_THREADS) != want:
        faiss.omp_set_num_threads(want)
        _THREADS.n = want
