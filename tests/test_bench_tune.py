"""`tune_index` across backends: every candidate is measured, the fastest that reaches the target wins,
and its spec (fixed query parameters included) builds an index that meets the target."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.bench.datasets import Dataset
from annrec.bench.groundtruth import exact_knn, ground_truth, knn_recall
from annrec.bench.tune import SQ8_K_FACTOR, tune_index
from annrec.index import build_index


def test_tune_measures_every_backend_and_picks_the_fastest(tmp_path):
    pytest.importorskip("usearch")
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((30, 24)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 30, 4000)] + rng.standard_normal((4000, 24))).astype(np.float32)
    q = (centers[rng.integers(0, 30, 150)] + rng.standard_normal((150, 24))).astype(np.float32)
    ds = Dataset("clusters", x, q, "l2")
    gt = ground_truth(ds, 10, cache_dir=tmp_path)
    lines: list[str] = []
    winner, cands = tune_index(ds, gt, 0.95, backends=("hnswlib", "usearch", "faiss-hnsw-sq8"), M_values=(8,),
                               ef_construction=64, runs=1, log=lines.append)
    kinds = {(c.backend, c.build.get("factory")) for c in cands}
    assert kinds == {("hnswlib", None), ("usearch", None), ("faiss", "HNSW16,SQ8,RFlat"), ("faiss", "Flat")}
    reached = [c for c in cands if c.reached]
    assert all(c.recall >= 0.95 for c in reached) and winner.qps == max(c.qps for c in reached)
    sq8 = next(c for c in cands if c.build.get("factory") == "HNSW16,SQ8,RFlat")
    assert sq8.query["k_factor"] == SQ8_K_FACTOR and "efSearch" in sq8.query
    for c in reached:  # each reached spec rebuilds into an index that meets the target
        spec = c.spec("l2")
        idx = build_index(x, np.arange(len(x)), spec["metric"], backend=spec["backend"], **spec["params"])
        truth, _ = exact_knn(x, q, 10, "l2")
        assert knn_recall(idx.search(q, 10)[0], truth, 10).mean() >= 0.95 - 0.02, spec
    assert len(lines) == len(cands)


def test_tune_can_choose_pynndescent_and_its_float_epsilon_spec_builds(tmp_path):
    pytest.importorskip("pynndescent")
    from annrec.bench.tune import EPSILON_STEPS, PYNNDESCENT_NEIGHBORS, write_spec
    from annrec.index.spec import IndexSpec

    rng = np.random.default_rng(1)
    centers = rng.standard_normal((30, 48)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 30, 10_000)] + rng.standard_normal((10_000, 48))).astype(np.float32)
    q = (centers[rng.integers(0, 30, 150)] + rng.standard_normal((150, 48))).astype(np.float32)
    ds = Dataset("clusters", x, q, "l2")
    gt = ground_truth(ds, 10, cache_dir=tmp_path)
    winner, cands = tune_index(ds, gt, 0.95, backends=("pynndescent",), runs=2, log=lambda s: None)
    pnd = [c for c in cands if c.backend == "pynndescent"]
    assert sorted(c.build["n_neighbors"] for c in pnd) == sorted(PYNNDESCENT_NEIGHBORS)
    assert all(isinstance(t["epsilon"], float) and t["epsilon"] in EPSILON_STEPS for c in pnd for t in c.trace)
    # single queries on 10,000 x 48: the graph is ~2.5x faster than exact search, so it wins
    assert winner.backend == "pynndescent" and winner.reached and isinstance(winner.query["epsilon"], float)
    path = write_spec(tmp_path / "best.yaml", winner, "l2", target=0.95, k=10, n_queries=len(q), source="clusters",
                      mode="single")
    spec = IndexSpec.from_yaml(path)
    assert spec.backend == "pynndescent" and spec.params == {**winner.build, **winner.query}
    idx = build_index(x, np.arange(len(x)), "l2", backend=spec.backend, **spec.params)
    truth, _ = exact_knn(x, q, 10, "l2")
    assert knn_recall(idx.search(q, 10)[0], truth, 10).mean() >= 0.95 - 0.02
