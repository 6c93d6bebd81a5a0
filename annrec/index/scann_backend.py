"""ScaNN backend: Google's ScaNN (Guo et al., 2020, "Accelerating large-scale inference with anisotropic
vector quantization"; https://github.com/google-research/google-research/tree/master/scann).

The index is ScaNN's usual three stages, ``scann_ops_pybind.builder(...).tree(...).score_ah(...).reorder(...)``:
a k-means tree partitions the vectors into ``nlist`` leaves (ScaNN's ``num_leaves``; default ``"auto"``:
annrec's :func:`~annrec.index.faiss_backend.suggest_nlist`, ``4·√n`` rounded to a power of two) of which a query
searches ``nprobe`` (``num_leaves_to_search``; default ``"auto"``: ``nlist // 20``, the ratio of ScaNN's own
example, 100 of 2,000, but at least ``min(nlist, 8)`` so that a small index is not searched in one leaf); inside
them asymmetric hashing scores every vector from 4-bit codes of
``dimensions_per_block`` dimensions each (default 2, ScaNN's example), with the anisotropic loss of Guo et al.
for ``ip`` / ``cosine`` (``anisotropic_quantization_threshold``, default ``None``: 0.2 for ip and cosine, as
ScaNN's example; off for l2, where it does not apply); the best ``reorder`` candidates (default 100, ScaNN's
example) are re-scored exactly with the float vectors, so the scores returned are exact. ``nlist`` and
``nprobe`` keep annrec's IVF names (``--nprobe`` on the CLI and ``nprobe`` over HTTP reach ScaNN's leaves to
search); ``reorder`` is also a query parameter (raised to at least ``k``). ``training_sample_size`` (default
100,000, ScaNN's) caps the vectors the tree and the codebooks are trained on.

Metrics: ``ip`` uses ScaNN's ``dot_product`` (scores are inner products), ``cosine`` the same on annrec's
normalised vectors, ``l2`` ``squared_l2`` (squared distances, as FAISS). The index is read-only after its
build: ScaNN's partitions and codebooks are trained on the build's vectors, and an ``add`` is refused with an
:class:`~annrec.errors.InputError` (rebuild the index); removes are annrec's deletion marks, and a search
over-fetches past them. An allow-list search over-fetches unfiltered neighbours and falls back to exact search
over the allowed labels when too few remain (as the usearch backend). ScaNN serialises into a folder, which is
the backend's entry ``index.scann`` of the index folder. ScaNN's training takes no seed, so two builds of the
same vectors may differ slightly (a saved index loads back identical).

``scann`` is an optional dependency: ``pip install scann``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from annrec._validate import check_int
from annrec.errors import ArtifactError, InputError
from annrec.index.base import Index
from annrec.index.filtered import overfetch_allowed, pad_results

_BUILD_PARAMS: dict[str, Any] = {"nlist": "auto", "nprobe": "auto", "dimensions_per_block": 2,
                                 "anisotropic_quantization_threshold": None, "reorder": 100,
                                 "training_sample_size": 100_000}
#: an allow-list search over-fetches at most this many neighbours before it goes exact
MAX_FILTER_FETCH = 4096


def _scann():
    import faiss  # noqa: F401  (FAISS first, as for usearch: the import order of native libraries matters)

    try:
        from scann.scann_ops.py import scann_ops_pybind
    except ImportError:
        raise InputError("the scann backend needs the scann package: pip install scann") from None
    return scann_ops_pybind


def scann_params(params: dict[str, Any]) -> dict[str, Any]:
    """The build parameters: :data:`_BUILD_PARAMS` overridden by ``params``, each checked.

    Raises:
        InputError: an unknown parameter (the message lists the valid ones), a non-positive integer, an
            ``nlist`` or ``nprobe`` that is neither ``"auto"`` nor a positive integer, a negative threshold.
    """
    unknown = set(params) - set(_BUILD_PARAMS)
    if unknown:
        raise InputError(f"unknown scann parameter(s) {sorted(unknown)}: use {', '.join(_BUILD_PARAMS)}")
    merged = {**_BUILD_PARAMS, **params}
    for name in ("nlist", "nprobe"):
        if merged[name] != "auto":
            check_int(merged[name], f"scann parameter {name}", hint=" (or auto)")
    for name in ("dimensions_per_block", "reorder", "training_sample_size"):
        check_int(merged[name], f"scann parameter {name}")
    t = merged["anisotropic_quantization_threshold"]
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0):
        raise InputError(f"scann parameter anisotropic_quantization_threshold must be a number >= 0 or null "
                         f"(0.2 for ip/cosine, off for l2); got {t!r}")
    return merged


class ScannIndex(Index):
    """A ScaNN searcher behind the :class:`~annrec.index.base.Index` interface (read-only after build).

    Params: ``nlist``, ``nprobe``, ``dimensions_per_block``, ``anisotropic_quantization_threshold``, ``reorder``,
    ``training_sample_size``; see the module docstring.

    Raises:
        InputError: an unknown or out-of-range parameter, scann not installed, any ``add`` after the build; at
            search time an unknown query parameter (the message names ``nprobe`` and ``reorder``).
    """

    backend = "scann"
    file_name = "index.scann"
    query_param_names = ("nprobe", "reorder")

    def __init__(self, dim: int, metric: str, **params: Any) -> None:
        super().__init__(dim, metric, **scann_params(params))
        self._distance = "squared_l2" if self.metric == "l2" else "dot_product"
        self._searcher = None

    def _has_param(self, name: str) -> bool:
        """Which of annrec's shared query parameters apply (``--nprobe`` / HTTP ``nprobe``: leaves searched)."""
        return name == "nprobe"

    # -- build (adds after it are refused)
    def _backend_check(self, x: np.ndarray) -> None:
        raise InputError("a scann index is read-only after its build (ScaNN's partitions and codebooks are trained "
                         "on the build's vectors): rebuild the index with all items (annrec index build), or use "
                         "the hnswlib, faiss or usearch backend for an index that takes upserts")

    def _backend_create(self, x: np.ndarray) -> None:
        from annrec.index.faiss_backend import suggest_nlist

        n = len(x)
        p = self.params
        nlist = suggest_nlist(n) if p["nlist"] == "auto" else min(int(p["nlist"]), n)
        p["nlist"] = int(nlist)
        p["nprobe"] = int(max(min(nlist, 8), nlist // 20) if p["nprobe"] == "auto" else min(int(p["nprobe"]), nlist))
        threshold = p["anisotropic_quantization_threshold"]
        if threshold is None:
            threshold = float("nan") if self.metric == "l2" else 0.2
        b = _scann().builder(x, 10, self._distance)
        if nlist > 1:
            b = b.tree(num_leaves=nlist, num_leaves_to_search=p["nprobe"],
                       training_sample_size=min(n, int(p["training_sample_size"])))
        b = b.score_ah(int(p["dimensions_per_block"]), anisotropic_quantization_threshold=float(threshold),
                       training_sample_size=min(n, int(p["training_sample_size"])))
        self._searcher = b.reorder(int(p["reorder"])).build()

    def _backend_add(self, x: np.ndarray, labels: np.ndarray) -> None:
        if int(labels[0]) != 0 or self._searcher is None:
            raise RuntimeError("scann indexes take vectors only at build time")  # refused before (_backend_check)

    def _backend_mark_deleted(self, labels: np.ndarray) -> None:
        pass  # the base class's deletion mask; searches over-fetch past the removed items

    def _backend_set_query_params(self, params: dict[str, Any]) -> None:
        if "nprobe" in params:
            self.params["nprobe"] = min(int(params["nprobe"]), int(self.params["nlist"]))

    # -- search
    def _query(self, q: np.ndarray, k: int, params: dict[str, Any] | None, threads: int | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """ScaNN's top-``k`` as ``(labels int64 (nq, k), scores float32 (nq, k))``, unfilled slots ``-1`` / NaN."""
        p = self.params
        nprobe = min(int((params or {}).get("nprobe", p["nprobe"])), int(p["nlist"]))
        reorder = max(int((params or {}).get("reorder", p["reorder"])), k)
        if len(q) > 1 and threads != 1:
            idx, dist = self._searcher.search_batched_parallel(q, k, reorder, nprobe)
        else:
            idx, dist = self._searcher.search_batched(q, k, reorder, nprobe)
        labels = np.asarray(idx, dtype=np.int64).reshape(len(q), -1)
        scores = np.asarray(dist, dtype=np.float32).reshape(len(q), -1)
        labels, scores = pad_results(labels, scores, k)
        return labels, scores

    def _backend_search(self, q, k, params, mask, threads):
        if mask is None:
            return self._query(q, k, params, threads)
        return overfetch_allowed(self, q, k, mask, lambda kk: self._query(q, kk, params, threads), len(self._ext),
                                 MAX_FILTER_FETCH)

    # -- persistence
    def manifest(self) -> dict[str, Any]:
        """The base manifest, with the ScaNN version that wrote the searcher among ``versions``."""
        import importlib.metadata as md

        m = super().manifest()
        try:
            m["versions"]["scann"] = md.version("scann")
        except md.PackageNotFoundError:  # pragma: no cover
            pass
        return m

    def _backend_save(self, file: Path) -> None:
        file.mkdir()
        self._searcher.serialize(str(file), relative_path=True)

    def _backend_load(self, file: Path, n_labels: int) -> None:
        if not file.is_dir():
            raise FileNotFoundError(2, "missing", str(file))
        ops = _scann()
        try:
            self._searcher = ops.load_searcher(str(file), assets_backcompat_shim=False)
        except Exception as e:  # noqa: BLE001 - ScaNN reports damaged assets in several ways
            raise ArtifactError(f"{file} is not a readable ScaNN searcher ({type(e).__name__}: {e}): rebuild the "
                                f"index with `annrec index build`") from None

    def _backend_verify(self, file: Path) -> None:
        n = int(self._searcher.size())
        if n != len(self._ext):
            raise ArtifactError(f"{file} holds {n} vectors but the folder has {len(self._ext)} ids: rebuild the "
                                f"index with `annrec index build`")

    def memory_bytes(self) -> int:
        """An estimate: 4-bit codes of every vector plus the float vectors kept for re-ordering, in bytes."""
        n = len(self._ext)
        blocks = -(-self.dim // int(self.params["dimensions_per_block"]))
        return int(n * (blocks / 2 + 4 * self.dim) + 4 * self.dim * int(self.params["nlist"]))

    @property
    def raw(self):
        """The underlying ``ScannSearcher`` (rows are internal labels, not external ids)."""
        return self._searcher
