"""ANN-Benchmarks-style benchmarks: recall against QPS, build time and index size; rec quality against QPS.

>>> from annrec.bench import load_dataset, load_definitions, run_benchmark, RunConfig
>>> ds = load_dataset("fashion-mnist-784-euclidean")          # Debian IDX files, or an .hdf5 / .fvecs / .npy
>>> defs = load_definitions("bench/fashion-mnist.yaml")        # algorithm x parameter grids (YAML)
>>> run_benchmark(ds, defs, "bench/results/fashion-mnist-784-euclidean-k10.jsonl", RunConfig(count=10))
>>> from annrec.bench import read_results, markdown_table, plot
>>> print(markdown_table(read_results("bench/results/fashion-mnist-784-euclidean-k10.jsonl")))

Modules: :mod:`~annrec.bench.datasets` (formats), :mod:`~annrec.bench.groundtruth` (exact neighbours,
recall), :mod:`~annrec.bench.algorithms` (adapters), :mod:`~annrec.bench.definitions` (YAML),
:mod:`~annrec.bench.runner` (the protocol), :mod:`~annrec.bench.results` (Pareto, tables, plots),
:mod:`~annrec.bench.overhead` (annrec vs raw library), :mod:`~annrec.bench.rec` (recommendation quality),
:mod:`~annrec.bench.tune` (``annrec index tune``).
"""

from annrec.bench.algorithms import ADAPTERS, Algorithm, Param, get_adapter, register
from annrec.bench.datasets import (
    ANN_BENCHMARKS_DATASETS,
    Dataset,
    download,
    fashion_mnist,
    from_embeddings,
    load_dataset,
    read_hdf5,
    read_vecs,
    write_hdf5,
    write_vecs,
)
from annrec.bench.definitions import Definition, load_definitions, parse_definitions
from annrec.bench.groundtruth import GroundTruth, exact_knn, ground_truth, knn_recall, threshold_recall
from annrec.bench.results import best_at_recall, markdown_table, overhead_ratios, pareto_frontier, plot
from annrec.bench.runner import RunConfig, read_results, run_benchmark

__all__ = [
    "ADAPTERS", "Algorithm", "Param", "get_adapter", "register",
    "ANN_BENCHMARKS_DATASETS", "Dataset", "download", "fashion_mnist", "from_embeddings", "load_dataset",
    "read_hdf5", "read_vecs", "write_hdf5", "write_vecs",
    "Definition", "load_definitions", "parse_definitions",
    "GroundTruth", "exact_knn", "ground_truth", "knn_recall", "threshold_recall",
    "best_at_recall", "markdown_table", "overhead_ratios", "pareto_frontier", "plot",
    "RunConfig", "read_results", "run_benchmark",
]
