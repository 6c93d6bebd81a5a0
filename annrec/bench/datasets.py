"""Benchmark data sets: ANN-Benchmarks HDF5, Fashion-MNIST IDX, TEXMEX fvecs/ivecs/bvecs, .npy, Embeddings.

A :class:`Dataset` is a base set (``train``, the vectors that get indexed), a query set (``test``), the
metric, and optionally the exact neighbours of every query (``neighbors``, ``distances``). The names
follow ANN-Benchmarks' HDF5 format (``ann_benchmarks/datasets.py``)::

    train      float32 (n, dim)       base vectors
    test       float32 (nq, dim)      query vectors
    neighbors  int32   (nq, k_gt)     ids (rows of train) of the exact nearest neighbours, nearest first
    distances  float32 (nq, k_gt)     their distances, ascending
    attrs      distance = "euclidean" | "angular" | "ip" (also read: "dot", "inner_product", "mips"),
               type = "dense", dimension, point_type = "float"

Distances are always "smaller is closer", in ANN-Benchmarks' convention: ``euclidean`` is the plain
(not squared) Euclidean distance, ``angular`` is ``1 - cos``, and for maximum inner product search
(``ip``, not in ANN-Benchmarks itself) the distance is ``-<q, x>``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annrec.data.vector_files import read_idx, read_vecs, read_vectors, write_vecs  # noqa: F401  (re-exported)
from annrec.errors import DataError, DataNotFoundError, InputError

#: metric name (annrec) of each distance name found in HDF5 files or given by users
METRIC_ALIASES = {"euclidean": "l2", "l2": "l2", "angular": "cosine", "cosine": "cosine",
                  "ip": "ip", "dot": "ip", "inner_product": "ip", "mips": "ip"}
#: the ``distance`` attribute annrec writes for each metric (ANN-Benchmarks names where they exist)
DISTANCE_NAMES = {"l2": "euclidean", "cosine": "angular", "ip": "ip"}

#: standard ANN-Benchmarks files (http://ann-benchmarks.com/NAME.hdf5); see its README table
ANN_BENCHMARKS_DATASETS = (
    "fashion-mnist-784-euclidean", "mnist-784-euclidean", "sift-128-euclidean", "gist-960-euclidean",
    "glove-25-angular", "glove-50-angular", "glove-100-angular", "glove-200-angular",
    "nytimes-256-angular", "lastfm-64-dot", "deep-image-96-angular", "kosarak-jaccard",
    "movielens10m-jaccard",
)
ANN_BENCHMARKS_URL = "http://ann-benchmarks.com/{name}.hdf5"

FASHION_MNIST_NAME = "fashion-mnist-784-euclidean"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}


def metric_of(distance: str) -> str:
    """annrec metric (``l2``, ``cosine``, ``ip``) of an ANN-Benchmarks ``distance`` name.

    Raises:
        DataError: hamming, jaccard or any other distance annrec's indexes do not support.
    """
    try:
        return METRIC_ALIASES[str(distance).lower()]
    except KeyError:
        raise DataError(f"distance {distance!r} is not supported: annrec benchmarks dense vectors under "
                        f"{', '.join(sorted(METRIC_ALIASES))} (set-similarity data sets such as jaccard "
                        f"and hamming are out of scope)") from None


def default_cache_dir() -> Path:
    """Folder for downloaded data sets and cached ground truth.

    ``$ANNREC_BENCH_CACHE`` if set, else ``bench/cache`` under the current directory (git-ignored).
    """
    return Path(os.environ.get("ANNREC_BENCH_CACHE", "bench/cache"))


@dataclass
class Dataset:
    """A benchmark data set.

    Attributes:
        name: short name used in result files and plots (e.g. ``fashion-mnist-784-euclidean``).
        train: float32 ``(n, dim)`` base vectors (row ``i`` has id ``i``).
        test: float32 ``(nq, dim)`` query vectors.
        metric: ``"l2"``, ``"cosine"`` or ``"ip"``.
        neighbors: optional int ``(nq, k_gt)`` exact neighbour rows, nearest first.
        distances: optional float32 ``(nq, k_gt)`` their distances (ANN-Benchmarks convention).
        source: where it was read from (path or description).
        meta: free-form provenance (e.g. the Embeddings manifest's dataset and hash).
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    metric: str
    neighbors: np.ndarray | None = None
    distances: np.ndarray | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metric = metric_of(self.metric)
        self.train = _as_vectors(self.train, "train", self.source)
        self.test = _as_vectors(self.test, "test", self.source)
        if self.train.shape[1] != self.test.shape[1]:
            raise DataError(f"{self.source or self.name}: train vectors have dimension {self.train.shape[1]} but "
                            f"test vectors {self.test.shape[1]}: pair base and query files of the same data set")
        if self.neighbors is not None:
            self.neighbors = np.asarray(self.neighbors)
            if self.neighbors.ndim != 2 or self.neighbors.shape[0] != len(self.test):
                raise DataError(f"{self.source or self.name}: ground-truth neighbours have shape "
                                f"{self.neighbors.shape} but there are {len(self.test)} queries: the ground "
                                f"truth does not match the data set (pass the matching file or drop it to "
                                f"recompute it)")
            if self.neighbors.dtype.kind not in "iu":
                raise DataError(f"{self.source or self.name}: ground-truth neighbours must be integers")
            if self.neighbors.size and (self.neighbors.min() < 0 or self.neighbors.max() >= len(self.train)):
                raise DataError(f"{self.source or self.name}: ground-truth neighbour ids run from "
                                f"{self.neighbors.min()} to {self.neighbors.max()} but the base set has "
                                f"{len(self.train)} vectors: the ground truth does not match the data set")
        if self.distances is not None:
            self.distances = np.asarray(self.distances, dtype=np.float32)
            if self.neighbors is None or self.distances.shape != self.neighbors.shape:
                raise DataError(f"{self.source or self.name}: ground-truth distances of shape "
                                f"{self.distances.shape} do not match the neighbours: fix or drop them")
        self._hash: str | None = None

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    @property
    def distance(self) -> str:
        """The ANN-Benchmarks ``distance`` name of the metric."""
        return DISTANCE_NAMES[self.metric]

    def hash(self) -> str:
        """SHA-1 (hex, 16 chars) of the metric, shapes and bytes of train and test: the ground-truth cache key."""
        if self._hash is None:
            h = hashlib.sha1()
            h.update(f"{self.metric}|{self.train.shape}|{self.test.shape}|".encode())
            h.update(memoryview(np.ascontiguousarray(self.train)).cast("B"))
            h.update(memoryview(np.ascontiguousarray(self.test)).cast("B"))
            self._hash = h.hexdigest()[:16]
        return self._hash

    def limit_queries(self, n: int | None) -> Dataset:
        """A copy with only the first ``n`` queries (and their ground truth); ``None`` keeps all."""
        if n is None or n >= len(self.test):
            return self
        if n <= 0:
            raise InputError(f"the number of queries must be >= 1; got {n}")
        return Dataset(self.name, self.train, self.test[:n], self.metric,
                       None if self.neighbors is None else self.neighbors[:n],
                       None if self.distances is None else self.distances[:n], self.source,
                       dict(self.meta, query_limit=n))

    def describe(self) -> dict[str, Any]:
        """Name, sizes, metric, hash and source, for result records."""
        return {"name": self.name, "n_train": len(self.train), "n_test": len(self.test), "dim": self.dim,
                "metric": self.metric, "distance": self.distance, "hash": self.hash(), "source": self.source,
                **({"meta": self.meta} if self.meta else {})}


def _as_vectors(a, what: str, source: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{source or 'data set'}: {what} must be a non-empty 2-d array (n, dim); got shape {a.shape}")
    if a.dtype.kind not in "fiub":
        raise DataError(f"{source or 'data set'}: {what} must be numeric; got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        row = int(np.argwhere(~np.isfinite(a))[0][0])
        raise DataError(f"{source or 'data set'}: {what} row {row} contains NaN or Inf: repair or drop it")
    return a


# --------------------------------------------------------------------------- ANN-Benchmarks HDF5
def read_hdf5(path: str | os.PathLike, name: str | None = None) -> Dataset:
    """Read an ANN-Benchmarks HDF5 file.

    Raises:
        DataNotFoundError: no such file.
        DataError: not an HDF5 file (or truncated), a missing ``train``/``test`` data set or
            ``distance`` attribute, an unsupported distance, or ground truth of the wrong shape.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no data set file at {path}: check the path, or run `annrec bench download NAME`")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("train", "test") if k not in f]
            if missing:
                raise DataError(f"{path} is an HDF5 file without the {', '.join(missing)} data set(s) of the "
                                f"ANN-Benchmarks format (train, test, neighbors, distances; attribute distance)")
            if "distance" not in f.attrs:
                raise DataError(f"{path} has no 'distance' attribute: set it to euclidean, angular or ip")
            distance = f.attrs["distance"]
            distance = distance.decode() if isinstance(distance, bytes) else str(distance)
            train = np.asarray(f["train"])
            test = np.asarray(f["test"])
            neighbors = np.asarray(f["neighbors"]) if "neighbors" in f else None
            distances = np.asarray(f["distances"]) if ("distances" in f and neighbors is not None) else None
    except OSError as e:
        raise DataError(f"{path} is not a readable HDF5 file ({e}): it is truncated or of another format; "
                        f"download or convert it again") from None
    return Dataset(name or path.stem, train, test, distance, neighbors, distances, source=str(path))


def write_hdf5(ds: Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` as an ANN-Benchmarks HDF5 file (atomically: temporary file + rename).

    ``neighbors``/``distances`` are written when ``ds`` has them (int32/float32, as ANN-Benchmarks).
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["type"] = "dense"
            f.attrs["distance"] = ds.distance
            f.attrs["dimension"] = ds.dim
            f.attrs["point_type"] = "float"
            f.create_dataset("train", data=ds.train)
            f.create_dataset("test", data=ds.test)
            if ds.neighbors is not None:
                f.create_dataset("neighbors", data=ds.neighbors.astype(np.int32))
                if ds.distances is not None:
                    f.create_dataset("distances", data=ds.distances.astype(np.float32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- TEXMEX fvecs / ivecs / bvecs
def fashion_mnist(directory: str | os.PathLike = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017) as ANN-Benchmarks' ``fashion-mnist-784-euclidean``.

    60,000 train and 10,000 test images flattened to 784-d float32 vectors of raw pixel values
    (0..255, not rescaled, as ANN-Benchmarks does), Euclidean distance. Read from the IDX files of the
    Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).

    Raises:
        DataNotFoundError: the IDX files are not there.
    """
    directory = Path(directory)
    arrays = {}
    for part, fname in FASHION_MNIST_FILES.items():
        a = read_idx(directory / fname)
        if a.ndim != 3:
            raise DataError(f"{directory / fname}: expected images (n, 28, 28); got shape {a.shape}")
        arrays[part] = a.reshape(len(a), -1).astype(np.float32)
    return Dataset(FASHION_MNIST_NAME, arrays["train"], arrays["test"], "euclidean",
                   source=f"{directory} (IDX)", meta={"origin": "Fashion-MNIST IDX (Xiao et al. 2017)"})


# --------------------------------------------------------------------------- .npy and Embeddings
def from_embeddings(path: str | os.PathLike, *, queries: str = "auto", n_queries: int | None = None,
                    seed: int = 0) -> Dataset:
    """A data set from an annrec Embeddings artifact: its items are the base set, its metric the metric.

    Args:
        queries: ``"users"`` (the artifact's query vectors), ``"items"`` (a held-out random sample of
            items, removed from the base set) or ``"auto"`` (users when the artifact has them).
        n_queries: how many queries (a random sample; default: all users, or 1,000 held-out items).
        seed: seed of the samples.

    Raises:
        DataNotFoundError / ArtifactError: no or a broken artifact. InputError: ``queries="users"`` on an
            artifact without query vectors, or a bad ``n_queries``.
    """
    from annrec.embeddings import Embeddings

    emb = Embeddings.load(path)
    name = Path(path).resolve().name
    if queries not in ("auto", "users", "items"):
        raise InputError(f"queries must be 'auto', 'users' or 'items'; got {queries!r}")
    if queries == "auto":
        queries = "users" if emb.queries is not None else "items"
    rng = np.random.default_rng(seed)
    meta = {"embeddings": str(path), "trainer": emb.manifest.get("trainer"),
            "embeddings_dataset": emb.manifest.get("dataset"), "data_hash": emb.manifest.get("data_hash"),
            "queries": queries}
    if queries == "users":
        if emb.queries is None:
            raise InputError(f"{path} has no query (user) vectors: use queries='items' (held-out items)")
        q = emb.queries
        if n_queries is not None and n_queries < len(q):
            q = q[np.sort(rng.choice(len(q), n_queries, replace=False))]
        return Dataset(name, emb.vectors, q, emb.metric, source=str(path), meta=meta)
    n = len(emb)
    n_queries = min(1000, max(1, n // 10)) if n_queries is None else n_queries
    if not 1 <= n_queries < n:
        raise InputError(f"cannot hold out {n_queries} of {n} items as queries: choose 1..{n - 1}")
    held = np.zeros(n, dtype=bool)
    held[rng.choice(n, n_queries, replace=False)] = True
    meta["held_out_item_ids"] = emb.ids[held].tolist()
    return Dataset(f"{name}-items", emb.vectors[~held], emb.vectors[held], emb.metric, source=str(path), meta=meta)


# --------------------------------------------------------------------------- download
def download(name: str, cache_dir: str | os.PathLike | None = None, *, timeout: float = 30.0,
             url: str | None = None) -> Path:
    """Download ANN-Benchmarks' ``NAME.hdf5`` into ``cache_dir/data/`` (atomically) and return its path.

    An existing file is kept (delete it to download again).

    Raises:
        InputError: a malformed name. DataNotFoundError: no network, or no such file on the server.
        DataError: the downloaded file is not a valid ANN-Benchmarks HDF5 file.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise InputError(f"bad data set name {name!r}: use one of {', '.join(ANN_BENCHMARKS_DATASETS)}")
    dest = Path(cache_dir or default_cache_dir()) / "data" / f"{name}.hdf5"
    if dest.exists():
        return dest
    url = url or ANN_BENCHMARKS_URL.format(name=name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            shutil.copyfileobj(resp, out, length=1 << 20)
        read_hdf5(tmp, name)  # validate before it gets its final name
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        Path(tmp).unlink(missing_ok=True)
        raise DataNotFoundError(f"{url} answered HTTP {e.code}: {name!r} is not an ANN-Benchmarks file; known "
                                f"names: {', '.join(ANN_BENCHMARKS_DATASETS)}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise DataNotFoundError(f"cannot download {url} ({reason}): this machine seems to be offline. Download "
                                f"the file elsewhere and copy it to {dest}"
                                + (", or use the offline copy: `--dataset fashion-mnist-784-euclidean` reads "
                                   "the Debian IDX files" if name == FASHION_MNIST_NAME else "")) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


# --------------------------------------------------------------------------- one entry point
def load_dataset(source: str | os.PathLike, *, queries: str | os.PathLike | None = None,
                 groundtruth: str | os.PathLike | None = None, metric: str | None = None,
                 n_queries: int | None = None, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Open a data set by name or path.

    ``source`` is one of
      * an ANN-Benchmarks name (``fashion-mnist-784-euclidean``, ``glove-100-angular``, …): the file in
        ``cache_dir/data/`` (see :func:`download`); Fashion-MNIST is built from the Debian IDX files when
        it has not been downloaded (and cached there as HDF5);
      * an ``.hdf5`` / ``.h5`` file in ANN-Benchmarks format;
      * a base-vector file ``.fvecs`` / ``.bvecs`` / ``.npy``, with ``queries`` (a file of the same kinds)
        or, without it, ``n_queries`` (default 1,000) vectors held out of the base set (seed ``seed``);
        ``metric`` is required (``l2`` / ``euclidean``, ``cosine`` / ``angular``, ``ip``);
      * an annrec Embeddings folder (``queries``: ``users``/``items``/``auto``, see :func:`from_embeddings`).

    ``groundtruth`` (``.ivecs`` / ``.npy`` of neighbour rows, nearest first) replaces the file's own.

    Raises:
        DataNotFoundError: nothing at ``source``. DataError: unknown format, truncated file, mismatched
            ground truth. InputError: missing ``metric`` for raw vector files.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    path = Path(source)
    limit = True  # n_queries limits the query set, except where it sizes a sample
    if path.is_dir():
        limit = False
        if not (path / "manifest.json").exists():
            raise DataError(f"{path} is a folder without manifest.json: give an annrec Embeddings folder or a "
                            f"data set file (.hdf5, .fvecs, .bvecs, .npy)")
        ds = from_embeddings(path, queries=str(queries or "auto"), n_queries=n_queries, seed=seed)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".hdf5", ".h5"):
            ds = read_hdf5(path)
            if metric is not None and metric_of(metric) != ds.metric:
                raise InputError(f"{path} is a {ds.distance} data set; --metric {metric} contradicts it")
        elif suffix in (".fvecs", ".bvecs", ".npy"):
            if metric is None:
                raise InputError(f"{path} carries no metric: pass --metric l2|cosine|ip")
            base = read_vectors(path)
            name = path.stem.removesuffix("_base")
            if queries is not None:
                ds = Dataset(name, base, read_vectors(queries), metric, source=str(path))
            else:
                limit = False
                n_q = 1000 if n_queries is None else n_queries
                if not 1 <= n_q < len(base):
                    raise InputError(f"cannot hold out {n_q} of {len(base)} vectors as queries")
                held = np.zeros(len(base), dtype=bool)
                held[np.random.default_rng(seed).choice(len(base), n_q, replace=False)] = True
                ds = Dataset(name, base[~held], base[held], metric, source=str(path),
                             meta={"queries": f"{n_q} held out of the base file (seed {seed})"})
        else:
            raise DataError(f"{path}: unknown data set format {suffix or '(no suffix)'!r}: use .hdf5 "
                            f"(ANN-Benchmarks), .fvecs/.bvecs (TEXMEX), .npy, or an Embeddings folder")
    else:
        name = str(source)
        cached = cache_dir / "data" / f"{name}.hdf5"
        if cached.is_file():
            ds = read_hdf5(cached, name)
        elif name == FASHION_MNIST_NAME:
            ds = fashion_mnist()
        elif os.sep in name or "." in Path(name).name:
            raise DataNotFoundError(f"no data set file at {name}: check the path")
        else:
            raise DataNotFoundError(f"unknown data set {name!r}: it is neither a file nor in {cache_dir / 'data'}. "
                                    f"Run `annrec bench download {name}` (ANN-Benchmarks names: "
                                    f"{', '.join(ANN_BENCHMARKS_DATASETS)}) or pass a path")
    if groundtruth is not None:
        gt = read_vectors(groundtruth)
        if gt.dtype.kind not in "iu":
            raise DataError(f"{groundtruth}: ground truth must hold integer neighbour ids (.ivecs or an int .npy)")
        ds = Dataset(ds.name, ds.train, ds.test, ds.metric, gt, None, ds.source,
                     dict(ds.meta, groundtruth=str(groundtruth)))
    if limit:
        ds = ds.limit_queries(n_queries)
    return ds
