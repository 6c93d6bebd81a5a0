"""FAISS backend: any index described by a FAISS index factory string (Johnson, Douze & Jégou, 2019).

``factory`` is passed to ``faiss.index_factory`` (``"Flat"``, ``"IVF1024,Flat"``, ``"IVF1024,PQ32"``,
``"HNSW32"``, ``"OPQ16,IVF256,PQ16"``, …). ``{pq_m}`` is replaced by ``pq_m`` (default ``"auto"``: :func:`suggest_pq_m`), and
``{nlist}`` in the string is replaced by ``nlist``
(default ``"auto"``: ``4·√n`` rounded to a power of two, halved until every list has at least 39
training points, below which FAISS warns). Query-time parameters: ``nprobe`` (IVF lists probed, FAISS default 1),
``efSearch`` (HNSW, FAISS default 16; ``ef`` is accepted for it) and ``k_factor`` (re-ranking wrappers such as
``RFlat``: candidates re-scored exactly = ``k_factor·k``), set on the index they belong to through any wrapper
and passed per call through the matching ``faiss.SearchParameters`` subclass (:mod:`annrec.index.faiss_params`).
``ip`` uses ``METRIC_INNER_PRODUCT``; ``cosine`` is inner product on normalised vectors.

``mips_l2=True`` (metric ``ip`` only) answers maximum inner product search with an L2 index instead, by the
reduction of Bachrach et al. (2014, "Speeding up the Xbox recommender system using a Euclidean transformation
for inner-product spaces"): every item gets one more coordinate ``sqrt(M² - |x|²)`` (``M`` = the largest item
norm at build time, kept in the manifest as ``mips_max_norm``), every query a 0, so that
``|q - x̃|² = |q|² + M² - 2 q·x`` and the nearest items in L2 are the largest inner products. IVF's coarse
quantizer and HNSW's graph then work in the metric space they were designed for (with raw inner product,
large-norm centroids attract most queries). Scores are converted back to inner products. An upsert whose norm
exceeds ``M`` is refused (rebuild the index to include it).

Memory: a loaded index maps its file (``faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)``, FAISS ≥ 1.9: the codes
of flat, scalar-quantised and PQ storage and IVF inverted lists are views of the file, not copies), so pages
load only where searches read them and every process serving the same folder (``annrec serve --workers N``)
shares them through the page cache. FAISS cannot grow a view (it aborts the process), so the first add to a
mapped index first makes an owned copy (``serialize_index`` → ``deserialize_index``: one pass over the file)
and swaps it in; searches in flight keep the mapped one until they end. ``ANNREC_FAISS_MMAP=0`` reads indexes
into memory instead.

GPU: with faiss-gpu installed and ``faiss.get_num_gpus() > 0`` the index is cloned to all visible GPUs
(``faiss.index_cpu_to_all_gpus``) unless ``gpu=False``; filtered searches run on the CPU copy because
FAISS GPU indexes take no ``IDSelector``. Results agree with the CPU path up to ties.
"""

from __future__ import annotations

import math
import os
import re
import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from annrec.errors import InputError
from annrec.index.base import Index
from annrec.index.faiss_params import Structure, apply_defaults, search_parameters, set_threads, walk

_BUILD_PARAMS = ("factory", "nlist", "pq_m", "M", "ef_construction", "nprobe", "efSearch", "k_factor", "gpu", "train_size", "seed", "factory_resolved",
                 "mips_l2", "mips_max_norm")
#: efConstruction of FAISS HNSW graphs (FAISS's own default is 40). Chosen by measurement
#: (bench/faiss_hnsw_build.py, bench/results/faiss_hnsw_build.json; docs/bench.md, "FAISS HNSW build"): on
#: Fashion-MNIST with M=16, 100 gives the same or higher single-query QPS than 40 at recall@10 0.90-0.98 for
#: half the build time of 200.
DEFAULT_EF_CONSTRUCTION = 100
_NO_RESULT_IP = np.float32(-np.finfo(np.float32).max)  # what FAISS reports for a missing inner-product result


def suggest_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: ``4·√n`` rounded to a power of two, halved while ``39·nlist > n``."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1)))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return int(nlist)


def suggest_pq_m(dim: int) -> int:
    """Sub-quantizers for PQ on ``dim``-d vectors: the divisor of ``dim`` closest to ``min(dim / 4, 64)``
    (4-d sub-vectors, at most 64 bytes per code), since FAISS needs ``dim % m == 0``."""
    target = min(dim / 4, 64)
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return int(min(divisors, key=lambda m: (abs(m - target), -m)))


def gpu_available() -> bool:
    """True when the installed FAISS has GPU support and sees at least one device."""
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


class FaissIndex(Index):
    """A FAISS index (from a factory string) behind the :class:`~annrec.index.base.Index` interface.

    Params: ``factory`` (default ``"Flat"``), ``nlist`` (for ``{nlist}``), ``M`` (for ``{M}``, HNSW graph degree,
    default 32 as in FAISS's ``"HNSW32"`` examples), ``ef_construction`` (also spelt ``efConstruction``: HNSW build
    list size, default :data:`DEFAULT_EF_CONSTRUCTION`, chosen by measurement; FAISS's own is 40), and the default
    query parameters, each set on the index it belongs to through any wrapper (``IndexPreTransform``,
    ``IndexRefine``, ``IndexIDMap``): ``nprobe`` (IVF, FAISS default 1), ``efSearch`` (HNSW, FAISS default 16),
    ``k_factor`` (``RFlat`` / ``Refine(...)``: ``k_factor·k`` candidates of the base index re-scored exactly,
    FAISS default 1). Also ``gpu`` (None = auto), ``train_size`` (max training vectors, default
    256·max(nlist, 256)), ``seed``, ``mips_l2`` (metric ip through an L2 index, see the module docstring).
    Per-call ``search(..., params={"nprobe": 16, "ef": 64, "k_factor": 4})`` (positive ints) go through the
    matching ``faiss.SearchParameters`` subclasses; :meth:`valid_query_params` lists the ones an index takes.

    Raises:
        InputError: unknown parameters, a factory string FAISS rejects, too few vectors to train it,
            ``mips_l2`` with a metric other than ``ip``; at search time, a query parameter the factory has no
            index for (the message names the ones it takes).
    """

    backend = "faiss"
    file_name = "index.faiss"
    query_param_names = ("nprobe", "efSearch", "k_factor")
    query_param_aliases = {"ef": "efSearch"}

    def __init__(self, dim: int, metric: str, **params: Any) -> None:
        if "efConstruction" in params:  # FAISS's own spelling
            params["ef_construction"] = params.pop("efConstruction")
        unknown = set(params) - set(_BUILD_PARAMS)
        if unknown:
            raise InputError(f"unknown FAISS parameter(s) {sorted(unknown)}: use {', '.join(_BUILD_PARAMS)}")
        params.setdefault("factory", "Flat")
        if not isinstance(params["factory"], str) or not params["factory"].strip():
            raise InputError("factory must be a FAISS index factory string such as 'Flat', 'IVF1024,Flat', 'HNSW32'")
        mips = params.get("mips_l2", False)
        if mips not in (True, False, None):
            raise InputError(f"mips_l2 must be true or false; got {mips!r}")
        if mips and metric != "ip":
            raise InputError(f"mips_l2 turns maximum inner product search into L2 search, so it needs metric 'ip' "
                             f"(got {metric!r}: cosine vectors all have norm 1 and l2 needs no transform)")
        super().__init__(dim, metric, **params)
        self._index: faiss.Index | None = None
        self._gpu_index = None
        self._mapped = False  # self._index is a view of its file (see _backend_load)
        self._mips = bool(mips)
        self._mips_m2 = float(params.get("mips_max_norm") or 0.0) ** 2
        self._fdim = dim + 1 if self._mips else dim   # the dimension FAISS sees
        self._faiss_metric = faiss.METRIC_L2 if (metric == "l2" or self._mips) else faiss.METRIC_INNER_PRODUCT

    # -- creation
    def _resolve_factory(self, n: int) -> str:
        factory = self.params["factory"]
        if "{nlist}" in factory:
            nlist = self.params.get("nlist", "auto")
            nlist = suggest_nlist(n) if nlist in (None, "auto") else int(nlist)
            factory = factory.replace("{nlist}", str(nlist))
        if "{M}" in factory:
            factory = factory.replace("{M}", str(int(self.params.get("M") or 32)))
        elif self.params.get("M") is not None:
            raise InputError(f"M={self.params['M']} needs a factory string with {{M}} (e.g. 'HNSW{{M}}'); "
                             f"{factory!r} fixes the graph degree itself")
        if "{pq_m}" in factory:
            m = self.params.get("pq_m", "auto")
            factory = factory.replace("{pq_m}", str(suggest_pq_m(self.dim) if m in (None, "auto") else int(m)))
        return factory

    # -- MIPS -> L2 (Bachrach et al. 2014)
    def _augment(self, x: np.ndarray) -> np.ndarray:
        """Items ``(n, dim)`` -> ``(n, dim + 1)`` with the extra coordinate ``sqrt(M² - |x|²)``."""
        n2 = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        out = np.empty((len(x), self._fdim), dtype=np.float32)
        out[:, :-1] = x
        out[:, -1] = np.sqrt(np.maximum(self._mips_m2 - n2, 0.0))
        return out

    def _backend_check(self, x: np.ndarray) -> None:
        if self._mips and len(x):
            n2 = float(np.einsum("ij,ij->i", x, x, dtype=np.float64).max())
            if n2 > self._mips_m2 * (1 + 1e-5):
                raise InputError(f"an item vector has norm {math.sqrt(n2):.6g}, above the bound "
                                 f"{math.sqrt(self._mips_m2):.6g} this mips_l2 index was built with: rebuild the "
                                 f"index (annrec index build) with all items, or build it without mips_l2")

    def _to_ip(self, q: np.ndarray, d: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Squared L2 distances on the augmented vectors -> inner products ``(|q|² + M² - d) / 2`` (float32:
        the rounding error, ~1e-7·M², is far below the gaps between scores)."""
        ip = d
        if len(q) == 1:  # the single-query hot path: a scalar is ~3x cheaper than the row-wise reduction
            ip -= float(q[0] @ q[0]) + self._mips_m2
        else:
            ip -= np.einsum("ij,ij->i", q, q)[:, None] + np.float32(self._mips_m2)
        ip *= np.float32(-0.5)
        if labels[:, -1].min() < 0:  # results are sorted, so a missing one shows in the last column
            ip[labels < 0] = _NO_RESULT_IP
        return ip

    def _backend_create(self, x: np.ndarray) -> None:
        factory = self._resolve_factory(len(x))
        self.params["factory_resolved"] = factory
        if self._mips:
            m = float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64).max())) if len(x) else 0.0
            self.params["mips_max_norm"] = m if m > 0 else 1.0
            self._mips_m2 = self.params["mips_max_norm"] ** 2
        try:
            index = faiss.index_factory(self._fdim, factory, self._faiss_metric)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else "rejected"
            raise InputError(f"FAISS cannot build {factory!r} for dim {self.dim}: {msg}. Check the factory string "
                             f"(e.g. PQm needs dim divisible by m)") from None
        _disable_polysemous_training(index)
        hnsw = walk(index).owners.get("hnsw")
        if hnsw is not None:  # FAISS's default is 40 (see DEFAULT_EF_CONSTRUCTION)
            hnsw.hnsw.efConstruction = int(self.params.get("ef_construction") or DEFAULT_EF_CONSTRUCTION)
        elif self.params.get("ef_construction") is not None:
            raise InputError(f"ef_construction applies to an HNSW index; {factory!r} has none")
        if not index.is_trained:
            m = re.search(r"IVF(\d+)", factory)
            nlist = int(m.group(1)) if m else 1
            if len(x) < nlist:
                raise InputError(f"{factory!r} needs at least {nlist} training vectors (FAISS recommends 39 per "
                                 f"list) but got {len(x)}: use IVF{suggest_nlist(len(x))} or 'IVF{{nlist}}'")
            train_size = int(self.params.get("train_size") or 256 * max(nlist, 256))
            xt = x
            if len(x) > train_size:
                rng = np.random.default_rng(int(self.params.get("seed", 0)))
                xt = x[np.sort(rng.choice(len(x), train_size, replace=False))]
            index.train(self._augment(xt) if self._mips else xt)
        self._index = index
        self._apply_defaults()

    def _structure(self) -> Structure:
        """The wrappers of the FAISS index and the indexes its query parameters belong to (cached per index
        object: ``faiss.downcast_index`` is a SWIG round trip of several microseconds)."""
        cached = self.__dict__.get("_struct")
        if cached is None or cached[0] is not self._index:
            cached = self._struct = (self._index, walk(self._index))
        return cached[1]

    def _apply_defaults(self) -> None:
        apply_defaults(self._structure(), self.params)
        self._maybe_to_gpu()

    def valid_query_params(self) -> list[str]:
        """The query parameters this index takes, found through its wrappers (``["nprobe", "k_factor"]`` for
        ``"IVF1024,PQ196x4fs,RFlat"``, ``["efSearch"]`` for ``"HNSW32"``, ``[]`` for ``"Flat"``)."""
        return [n for n in self.query_param_names if self._has_param(n)]

    def _check_query_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        factory = self.params.get("factory_resolved") or self.params.get("factory")
        valid = ", ".join("ef (efSearch)" if n == "efSearch" else n for n in self.valid_query_params()) or "none"
        for name in params or ():
            if name not in self.query_param_names and name not in self.query_param_aliases:
                raise InputError(f"unknown query parameter {name!r} for the FAISS index {factory!r}: it takes "
                                 f"{valid}")
        params = super()._check_query_params(params)
        for name in params:
            if not self._has_param(name):
                what = {"nprobe": "an IVF index", "efSearch": "an HNSW index",
                        "k_factor": "a re-ranking index (RFlat, Refine(...))"}[name]
                raise InputError(f"query parameter {'ef (efSearch)' if name == 'efSearch' else name} applies to "
                                 f"{what}; this FAISS index is {factory!r}, which takes {valid}")
        if "k_factor" in params and (isinstance(params["k_factor"], bool) or params["k_factor"] < 1):
            raise InputError(f"k_factor must be >= 1; got {params['k_factor']!r}")
        return params

    def _overfetch_denied(self) -> bool:
        """IVF indexes take the deny-list as an ``IDSelectorBitmap``: their filtered scan costs the same as an
        unfiltered one for ``k + 30`` results, with less Python around it (``bench/seen_exclusion.py``);
        Flat and HNSW indexes over-fetch."""
        return self._structure().kind != "ivf"

    def _has_param(self, name: str) -> bool:
        """True when the query parameter ``name`` (``nprobe``, ``efSearch``, ``k_factor``) applies to this index."""
        return self._structure().has(name)

    def _maybe_to_gpu(self) -> None:
        self._gpu_index = None
        if self.params.get("gpu") is False or not gpu_available():
            return
        try:
            self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
        except RuntimeError:  # index type without GPU support (e.g. HNSW): stay on the CPU
            self._gpu_index = None

    def _own(self) -> None:
        """Replace a mapped index (a view of its file, :meth:`_backend_load`) by an owned copy before it is
        changed: FAISS aborts the process when it must resize a view."""
        if self._mapped:
            index = faiss.deserialize_index(faiss.serialize_index(self._index))
            self._index, self._mapped = index, False
            self._apply_defaults()
            if self._gpu_index is not None:
                self._maybe_to_gpu()

    def _backend_reserve(self, n_labels: int, rw=None, vectors: bool = True) -> None:
        if vectors and n_labels > self._index.ntotal:
            self._own()  # before the write and outside its lock: searches go on on the mapped index meanwhile

    def _backend_add(self, x: np.ndarray, labels: np.ndarray) -> None:
        self._own()
        if self._index.ntotal != int(labels[0]):
            raise RuntimeError("FAISS label bookkeeping out of sync")  # programming error, never user input
        if self._mips:  # Index.add has already refused vectors above the norm bound (_backend_check)
            x = self._augment(x)
        if self._structure().chain and self._structure().chain[0][0] == "idmap":  # "IDMap,...": ids = labels
            self._index.add_with_ids(x, np.ascontiguousarray(labels, dtype=np.int64))
        else:
            self._index.add(x)
        if self._gpu_index is not None:
            self._gpu_index.add(x)

    def _backend_mark_deleted(self, labels: np.ndarray) -> None:
        pass  # the base class's deletion mask becomes an IDSelector at search time

    def _backend_set_query_params(self, params: dict[str, Any]) -> None:
        self._apply_defaults()

    # -- search
    def _backend_search(self, q, k, params, mask, threads):
        set_threads(threads)
        if self._mips:
            labels, d = self._search_faiss(self._augment_queries(q), k, params, mask)
            return labels, self._to_ip(q, d, labels)
        return self._search_faiss(q, k, params, mask)

    def _augment_queries(self, q: np.ndarray) -> np.ndarray:
        """``mips_l2`` queries ``[q, 0]``, float32 ``(nq, dim + 1)`` (the module docstring's reduction)."""
        qa = np.zeros((len(q), self._fdim), dtype=np.float32)
        qa[:, :-1] = q
        return qa

    def _params_key(self, params: dict[str, Any] | None) -> tuple:
        """What a cached ``SearchParameters`` depends on: the per-call and the default query parameters."""
        return (tuple(sorted((params or {}).items())),
                *(self.params.get(n) for n in ("nprobe", "efSearch", "k_factor")))

    def _search_faiss(self, q, k, params, mask):
        if params is None and mask is None:  # hot path
            scores, labels = (self._index if self._gpu_index is None else self._gpu_index).search(q, k)
            return labels, scores
        if mask is not None:
            bitmap, sp = self._filtered_params(params, len(mask))
            bitmap[:] = np.packbits(mask, bitorder="little")
            return self._search_c(q, k, sp)
        sp = search_parameters(self._structure(), params)
        target = self._index if self._gpu_index is None else self._gpu_index
        scores, labels = target.search(q, k, params=sp)
        return labels, scores

    def _search_c(self, q, k, sp):
        """The SWIG call itself with ``SearchParameters`` ``sp``: faiss's Python wrapper only allocates the
        outputs and re-checks shapes."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        scores = np.empty((len(q), k), dtype=np.float32)
        labels = np.empty((len(q), k), dtype=np.int64)
        self._index.search_c(len(q), faiss.swig_ptr(q), k, faiss.swig_ptr(scores), faiss.swig_ptr(labels), sp)
        return labels, scores

    def _backend_search_denied(self, q, k, params, denied, threads):
        """The deny-list as an ``IDSelectorBitmap`` over the :class:`~annrec.index.DenyList`'s own packed
        allow-mask, with its ``SearchParameters``, built once per deny-list and parameters and kept in the
        deny-list: a returning user's seen items cost the selector check, not a new bitmap and SWIG objects
        (``bench/seen_exclusion.py``). Read-only once built, so threads share it. A deny-list resolved for one
        search goes through the thread's reusable bitmap instead (:meth:`_filtered_params`)."""
        if denied.transient:
            return super()._backend_search_denied(q, k, params, denied, threads)
        key = ("faiss", *self._params_key(params))
        sp = denied.cache.get(key)
        if sp is None:
            n_labels = len(denied.mask) - 1
            bitmap = np.packbits(denied.mask[:-1], bitorder="little")
            selector = faiss.IDSelectorBitmap(n_labels, faiss.swig_ptr(bitmap))
            sp = search_parameters(self._structure(), params, selector)
            sp._annrec_bitmap = (bitmap, selector)  # the C++ objects point into these: keep them alive
            if len(denied.cache) > 8:
                denied.cache.clear()
            denied.cache[key] = sp
        set_threads(threads)
        if self._mips:
            labels, d = self._search_c(self._augment_queries(q), k, sp)
            return labels, self._to_ip(q, d, labels)
        return self._search_c(q, k, sp)

    def _filtered_params(self, params: dict[str, Any] | None, n_labels: int):
        """``(bitmap uint8 (ceil(n/8),), SearchParameters with an IDSelectorBitmap over it)``, made once per
        thread, index, size, per-call parameters and default query parameters, and reused: building the SWIG objects costs more than a small
        IVF search. The caller fills the bitmap; each thread has its own."""
        tls = self.__dict__.get("_tls") or self.__dict__.setdefault("_tls", threading.local())
        cache = getattr(tls, "params", None)
        if cache is None:
            cache = tls.params = {}
        key = (n_labels, *self._params_key(params))
        hit = cache.get(key)
        if hit is None or hit[0] is not self._index:
            if len(cache) > 16:
                cache.clear()
            bitmap = np.zeros((n_labels + 7) // 8, dtype=np.uint8)
            selector = faiss.IDSelectorBitmap(n_labels, faiss.swig_ptr(bitmap))
            sp = search_parameters(self._structure(), params, selector)
            sp._annrec_bitmap = (bitmap, selector)
            hit = cache[key] = (self._index, bitmap, sp)
        return hit[1], hit[2]

    # -- persistence
    def _backend_save(self, file: Path) -> None:
        faiss.write_index(self._index, str(file))

    def _backend_load(self, file: Path, n_labels: int) -> None:
        if not file.exists():
            raise FileNotFoundError(2, "missing", str(file))
        mapped = os.environ.get("ANNREC_FAISS_MMAP", "1") != "0"
        index = faiss.read_index(str(file), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        if index.ntotal != n_labels or index.d != self._fdim:
            raise ValueError(f"FAISS file holds {index.ntotal} vectors of dim {index.d}, the manifest says "
                             f"{n_labels} of dim {self._fdim}")
        if self._mips and self._mips_m2 <= 0:
            raise ValueError("a mips_l2 index without mips_max_norm in its manifest")
        self._index, self._mapped = index, mapped
        self._apply_defaults()

    def _backend_verify(self, file: Path) -> None:
        from annrec.errors import ArtifactError

        if self._index.metric_type != self._faiss_metric:
            want = "inner product" if self._faiss_metric == faiss.METRIC_INNER_PRODUCT else "L2"
            raise ArtifactError(f"{file} uses another FAISS metric than the manifest's {self.metric!r} ({want}): "
                                f"rebuild the index with `annrec index build`")

    def memory_bytes(self) -> int:
        """Size of the serialised FAISS index (``faiss.serialize_index``), close to its RAM footprint."""
        return int(faiss.serialize_index(self._index).nbytes)

    @property
    def raw(self) -> faiss.Index:
        """The underlying CPU ``faiss.Index`` (labels are internal labels, not external ids; with ``mips_l2`` it
        holds ``dim + 1``-dimensional augmented vectors under the L2 metric)."""
        return self._index



def _disable_polysemous_training(index) -> None:
    """Turn off polysemous training, which ``index_factory`` enables for ``PQ`` codes unless the string
    says ``np``: it only serves polysemous (Hamming-filtered) search, which annrec does not use, and makes
    training 10-30x slower (e.g. 526 s -> 18 s for IVF,PQ56 on Fashion-MNIST)."""
    index = faiss.downcast_index(index)
    if hasattr(index, "do_polysemous_training"):
        index.do_polysemous_training = False
    if isinstance(index, faiss.IndexPreTransform):
        _disable_polysemous_training(index.index)
    elif isinstance(index, faiss.IndexRefine):  # "IVF1024,PQ56,RFlat": the PQ is the base index
        _disable_polysemous_training(index.base_index)
