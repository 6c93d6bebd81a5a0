"""`annrec bench run/table/plot/export/download/overhead` and `annrec index tune` end to end (small data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from annrec.bench.datasets import read_hdf5
from annrec.bench.runner import read_results
from annrec.cli import app
from annrec.embeddings import Embeddings

from _bench_fixtures import synthetic

runner = CliRunner()


def _invoke(args, env=None):
    result = runner.invoke(app, args, env=env, catch_exceptions=True)
    return result


@pytest.fixture
def small(tmp_path):
    ds = synthetic(n=800, nq=60, dim=16)
    np.save(tmp_path / "base.npy", ds.train)
    np.save(tmp_path / "queries.npy", ds.test)
    (tmp_path / "algos.yaml").write_text(
        "algorithms:\n"
        "  bf: {algorithm: bruteforce-blas, modes: [batch], runs: 1}\n"
        "  hnsw(annrec): {algorithm: annrec-hnswlib, build: {M: 8, ef_construction: 64}, query: {ef: [10, 80]}}\n"
        "  hnsw(raw): {algorithm: hnswlib, build: {M: 8, ef_construction: 64}, query: {ef: [10, 80]}}\n"
        "  ivf: {algorithm: annrec-faiss, build: {factory: 'IVF8,Flat'}, query: {nprobe: [1, 8]}}\n"
        "  broken: {algorithm: annrec-faiss, build: {factory: 'IVF100000,Flat'}}\n")
    return tmp_path


def test_run_table_plot_end_to_end(small):
    res = small / "res.jsonl"
    args = ["bench", "run", str(small / "base.npy"), "--queries", str(small / "queries.npy"), "--metric", "l2",
            "-d", str(small / "algos.yaml"), "--runs", "1", "--warmup", "10", "--results", str(res),
            "--cache-dir", str(small / "cache"), "--json", str(small / "run.json")]
    r = _invoke(args)
    assert r.exit_code == 0, r.output
    recs = read_results(res)
    ok = [x for x in recs if x["status"] == "ok"]
    assert len(ok) == 1 + 2 * 2 * 3  # bf batch + 3 entries x 2 query args x 2 modes
    assert [x["label"] for x in recs if x["status"] == "failed"] == ["broken"]
    figures = json.loads((small / "run.json").read_text())
    assert figures["done"] == 13 and figures["failed"] == 1 and "single" in figures["tables"]
    assert {(o["library"], o["mode"]) for o in figures["overhead"]} == {("hnswlib", "single"), ("hnswlib", "batch")}
    # resume: nothing left to do
    r = _invoke(args)
    flat = " ".join(r.output.split())
    assert r.exit_code == 0 and "0 run(s) done, 15 skipped, 0 failed" in flat, flat[:2000]

    r = _invoke(["bench", "table", str(res), "--mode", "single", "--json", str(small / "t.json")])
    assert r.exit_code == 0, r.output
    assert "| recall ≥ |" in r.output and "hnsw(annrec)" in r.output and "QPS ratio" in r.output
    assert "broken" in r.output  # failures are listed
    best = json.loads((small / "t.json").read_text())["best"]
    assert best and all(b["recall"] >= b["threshold"] for b in best)

    r = _invoke(["bench", "plot", str(res), "--out", str(small / "p.png")])
    assert r.exit_code == 0, r.output
    assert (small / "p-single.png").exists() and (small / "p-batch.png").exists()


def test_cli_bad_inputs_exit_with_clear_errors(small, capsys):
    from annrec.cli import main

    def run(args):
        import sys

        old = sys.argv
        sys.argv = ["annrec", *args]
        try:
            with pytest.raises(SystemExit) as e:
                main()
        finally:
            sys.argv = old
        return e.value.code, capsys.readouterr().out

    (small / "bad.yaml").write_text("algorithms:\n  x: {algorithm: scann}\n")
    code, out = run(["bench", "run", str(small / "base.npy"), "--metric", "l2", "-d", str(small / "bad.yaml")])
    assert code == 2 and "unknown algorithm 'scann'" in out and "hnswlib" in out
    code, out = run(["bench", "run", str(small / "missing.hdf5"), "-d", str(small / "algos.yaml")])
    assert code == 2 and "no data set file" in out
    (small / "trunc.fvecs").write_bytes(b"\x04\x00\x00\x00\x00\x00")
    code, out = run(["bench", "run", str(small / "trunc.fvecs"), "--metric", "l2", "-d", str(small / "algos.yaml")])
    assert code == 2 and "truncated" in out
    code, out = run(["bench", "download", "glove-25-angular", "--cache-dir", str(small / "c"),
                     "--url", "http://127.0.0.1:9/x.hdf5"])
    assert code == 2 and "offline" in out
    code, out = run(["bench", "table", str(small / "none.jsonl")])
    assert code == 2 and "no results" in out


def test_export_writes_ann_benchmarks_hdf5(small):
    out = small / "x.hdf5"
    r = _invoke(["bench", "export", str(small / "base.npy"), str(out), "--queries", str(small / "queries.npy"),
                 "--metric", "cosine", "--k", "20", "--cache-dir", str(small / "cache")])
    assert r.exit_code == 0, r.output
    ds = read_hdf5(out)
    assert ds.distance == "angular" and ds.neighbors.shape == (60, 20)
    # the written ground truth is exact and passes the consistency check when read back
    from annrec.bench.groundtruth import ground_truth

    assert ground_truth(ds, 20, cache_dir=small / "cache2").origin == "file"


def test_index_tune_writes_a_buildable_spec(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 16)).astype(np.float32) * 3
    items = (centers[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, 16))).astype(np.float32)
    users = (centers[rng.integers(0, 20, 300)] + rng.standard_normal((300, 16))).astype(np.float32)
    Embeddings(items, np.arange(3000), "ip", queries=users, query_ids=np.arange(300)).save(tmp_path / "emb")
    out = tmp_path / "tuned.yaml"
    r = _invoke(["index", "tune", str(tmp_path / "emb"), "--target-recall", "0.95", "--out", str(out),
                 "--sample", "200", "--M", "8", "--runs", "1", "--candidates", "hnswlib,faiss-ivf",
                 "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "tune.json")])
    assert r.exit_code == 0, r.output
    from annrec.index.spec import IndexSpec

    assert IndexSpec.from_yaml(out).backend in ("hnswlib", "faiss")  # what `annrec index build --spec` reads
    spec = yaml.safe_load(out.read_text())
    assert spec["backend"] in ("hnswlib", "faiss") and spec["metric"] == "ip" and spec["params"]
    figures = json.loads((tmp_path / "tune.json").read_text())
    assert figures["winner"]["recall"] >= 0.95
    reached = [c for c in figures["candidates"] if c["reached"]]
    assert figures["winner"]["qps"] == max(c["qps"] for c in reached)
    # the spec builds an index through annrec's index layer and meets the target on the same queries
    from annrec.index import build_index

    params = dict(spec["params"])
    idx = build_index(items, np.arange(3000), metric=spec["metric"], backend=spec["backend"], **params)
    from annrec.bench.groundtruth import exact_knn, knn_recall

    sample = np.sort(np.random.default_rng(0).choice(300, 200, replace=False))
    truth, _ = exact_knn(items, users[sample], 10, "ip")
    ids, _ = idx.search(users[sample], 10)
    assert knn_recall(ids, truth, 10).mean() >= 0.95 - 0.02  # same build up to thread nondeterminism


def test_index_tune_rejects_bad_target(tmp_path):
    ds = synthetic(n=200, nq=10)
    np.save(tmp_path / "b.npy", ds.train)
    r = _invoke(["index", "tune", str(tmp_path / "b.npy"), "--metric", "l2", "--target-recall", "1.5",
                 "--out", str(tmp_path / "o.yaml"), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code != 0 and not (tmp_path / "o.yaml").exists()


def test_overhead_command_on_a_shared_index(small):
    # a tiny HDF5 data set, then the interleaved annrec-vs-raw measurement
    r = _invoke(["bench", "export", str(small / "base.npy"), str(small / "d.hdf5"), "--queries",
                 str(small / "queries.npy"), "--metric", "l2", "--k", "10", "--cache-dir", str(small / "cache")])
    assert r.exit_code == 0, r.output
    r = _invoke(["bench", "overhead", str(small / "d.hdf5"), "--M", "8", "--ef-construction", "32", "--ef", "20",
                 "--factory", "IVF8,Flat", "--nprobe", "4", "--rounds", "2", "--cache-dir", str(small / "cache"),
                 "--json", str(small / "o.json")])
    assert r.exit_code == 0, r.output
    rows = json.loads((small / "o.json").read_text())["rows"]
    assert {(x["library"], x["mode"]) for x in rows} == {("hnswlib", "single"), ("hnswlib", "batch"),
                                                         ("faiss", "single"), ("faiss", "batch")}
    assert all(x["same_results"] and x["ratio"] > 0 and x["recall_annrec"] == x["recall_raw"] for x in rows)


@pytest.mark.slow
def test_fashion_mnist_slice_runs(tmp_path):
    """Real data: fashion-mnist-784-euclidean by name (Debian IDX files; 100 queries, exact search against all
    60,000 images), then a slice (10,000 images, 100 queries) with IVF at two nprobe values."""
    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    from annrec.bench.datasets import Dataset, load_dataset
    from annrec.bench.definitions import parse_definitions
    from annrec.bench.runner import RunConfig, run_benchmark

    fm = load_dataset("fashion-mnist-784-euclidean", n_queries=100, cache_dir=tmp_path / "cache")
    assert fm.train.shape == (60000, 784) and fm.test.shape == (100, 784) and fm.metric == "l2"
    cfg = RunConfig(runs=1, warmup=0, modes=("batch",))
    run_benchmark(fm, parse_definitions({"algorithms": {"bruteforce-blas": {}}}), tmp_path / "r.jsonl", cfg,
                  cache_dir=tmp_path / "cache", log=lambda m: None)
    (rec,) = read_results(tmp_path / "r.jsonl")
    assert rec["recall"] == 1.0 and rec["dataset_info"]["n_train"] == 60000

    ds = Dataset("fm-slice", fm.train[:10000], fm.test, "euclidean")
    defs = parse_definitions({"algorithms": {"ivf": {"algorithm": "annrec-faiss", "build": {"factory": "IVF32,Flat"},
                                                     "query": {"nprobe": [1, 16]}}}})
    run_benchmark(ds, defs, tmp_path / "s.jsonl", cfg, cache_dir=tmp_path / "cache", log=lambda m: None)
    got = {x["query_args"]["nprobe"]: x for x in read_results(tmp_path / "s.jsonl")}
    assert got[16]["recall"] > 0.95 > got[1]["recall"] > 0.3  # more lists probed, higher recall
    assert got[16]["recall_threshold"] >= got[16]["recall"]
