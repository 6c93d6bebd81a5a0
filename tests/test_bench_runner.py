"""YAML definitions, the runner (resume, Ctrl-C, failures), Pareto frontier, tables, plots, overhead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from annrec.bench import algorithms
from annrec.bench.algorithms import ADAPTERS, Algorithm
from annrec.bench.definitions import load_definitions, parse_definitions
from annrec.bench.results import best_at_recall, markdown_table, overhead_ratios, pareto_frontier, plot
from annrec.bench.runner import RunConfig, read_results, run_benchmark
from annrec.errors import DataNotFoundError, InputError

from _bench_fixtures import ExactNumpy, synthetic


@pytest.fixture
def test_adapter(monkeypatch):
    monkeypatch.setitem(ADAPTERS, ExactNumpy.name, ExactNumpy)
    ExactNumpy.calls = 0
    return ExactNumpy


# ------------------------------------------------------------------ definitions
def test_definitions_expand_grids():
    defs = parse_definitions({"algorithms": {
        "h": {"algorithm": "hnswlib", "build": {"M": [8, 16], "ef_construction": 100}, "query": {"ef": [10, 20]}},
        "f": {"algorithm": "faiss", "build": [{"factory": "HNSW16"}, {"factory": ["IVF8,Flat", "Flat"]}],
              "query": [{"efSearch": [16]}, {"nprobe": [1, 2]}], "modes": ["batch"], "runs": 1},
        "off": {"algorithm": "annoy", "disabled": True}}})
    assert [(d.label, d.build_args) for d in defs] == [
        ("h", {"M": 8, "ef_construction": 100}), ("h", {"M": 16, "ef_construction": 100}),
        ("f", {"factory": "HNSW16"}), ("f", {"factory": "IVF8,Flat"}), ("f", {"factory": "Flat"})]
    assert defs[0].query_args == [{"ef": 10}, {"ef": 20}] and defs[0].modes == ("single", "batch")
    assert defs[2].query_args == [{"efSearch": 16}, {"nprobe": 1}, {"nprobe": 2}]
    assert defs[2].modes == ("batch",) and defs[2].runs == 1


@pytest.mark.parametrize("doc,match", [
    ({"algorithms": {"x": {"algorithm": "scann"}}}, "unknown algorithm 'scann'.*hnswlib"),
    ({"algorithms": {"h": {"algorithm": "hnswlib", "build": {"m": 16}}}}, "unknown build parameter 'm'.*M, ef_construction"),
    ({"algorithms": {"h": {"algorithm": "hnswlib", "query": {"efSearch": [10]}}}}, "unknown query parameter 'efSearch'.*ef"),
    ({"algorithms": {"h": {"algorithm": "hnswlib", "querry": {}}}}, "unknown key.*querry"),
    ({"algorithms": {"h": {"algorithm": "hnswlib", "build": {"M": -4}}}}, "positive"),
    ({"algorithms": {"h": {"algorithm": "hnswlib", "build": {"M": "16"}}}}, "must be a positive int"),
    ({"algorithms": {"h": {"algorithm": "hnswlib", "modes": ["fast"]}}}, "modes"),
    ({"algos": {}}, "algorithms"),
    ({"algorithms": {"bruteforce-blas": {"query": {"ef": 10}}}}, "valid query parameters are none"),
])
def test_bad_definitions_name_the_valid_ones(doc, match):
    with pytest.raises(InputError, match=match):
        parse_definitions(doc)


def test_definitions_file_errors(tmp_path):
    with pytest.raises(DataNotFoundError):
        load_definitions(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("algorithms: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_definitions(tmp_path / "bad.yaml")
    (tmp_path / "ok.yaml").write_text("algorithms:\n  hnswlib: {build: {M: 8}}\n")
    with pytest.raises(InputError, match="no algorithm labelled or named usearch"):
        load_definitions(tmp_path / "ok.yaml", only=["usearch"])


def test_shipped_definitions_are_valid():
    root = Path(__file__).resolve().parents[1] / "bench"
    for f in ("algos.yaml", "fashion-mnist.yaml", "rec.yaml"):
        defs = load_definitions(root / f, include_disabled=True)
        assert defs and all(d.algorithm in ADAPTERS and d.query_args for d in defs), f
        # an X(raw) entry runs the library directly on points of its X(annrec) twin (the overhead ratio)
        by_label: dict[str, list] = {}
        for d in defs:
            by_label.setdefault(d.label, []).append(d)
        for label, raws in by_label.items():
            if not label.endswith("(raw)"):
                continue
            twins = by_label.get(label[:-len("(raw)")] + "(annrec)")
            assert twins, f"{f}: {label} has no (annrec) twin"
            for d in raws:
                same = [t for t in twins if t.build_args == d.build_args]
                assert same and all(q in same[0].query_args for q in d.query_args), (f, label, d.build_args)


# ------------------------------------------------------------------ runner
def _defs(**entries):
    return parse_definitions({"algorithms": entries})


def test_run_records_recall_qps_sizes(tmp_path, test_adapter):
    ds = synthetic()
    out = tmp_path / "r.jsonl"
    s = run_benchmark(ds, _defs(t={"algorithm": "test-exact", "query": {"shift": [0, 5]}}), out,
                      RunConfig(runs=2, warmup=5), cache_dir=tmp_path, log=lambda m: None)
    assert (s.done, s.failed, s.skipped) == (4, 0, 0)
    recs = read_results(out)
    assert {(r["query_args"]["shift"], r["mode"]) for r in recs} == {(0, "single"), (0, "batch"), (5, "single"), (5, "batch")}
    exact = [r for r in recs if r["query_args"]["shift"] == 0]
    assert all(r["recall"] == 1.0 and r["recall_threshold"] == 1.0 for r in exact)
    shifted = [r for r in recs if r["query_args"]["shift"] == 5]
    assert all(r["recall"] == pytest.approx(0.5) for r in shifted)  # ranks 6..15 of the true top 10
    single = next(r for r in exact if r["mode"] == "single")
    assert single["threads"] == 1 and single["runs"] == len(single["run_times_s"]) == 2
    for r in recs:  # QPS = queries / the best of the timed passes
        assert r["search_time_s"] == min(r["run_times_s"])
        assert r["qps"] == pytest.approx(r["n_queries"] / r["search_time_s"])
    assert 0 < single["latency_ms"]["p50"] <= single["latency_ms"]["p95"] <= single["latency_ms"]["p99"]
    assert single["index_memory_bytes"] == ds.train.nbytes * 2
    # one build serves every query argument and mode
    assert len({(r["build_time_s"], r["index_memory_bytes"]) for r in recs}) == 1
    assert single["machine"]["cores_usable"] >= 1 and "numpy" in single["machine"]["versions"]
    assert single["dataset_info"]["hash"] == ds.hash() and single["n_queries"] == len(ds.test)
    batch = next(r for r in exact if r["mode"] == "batch")
    assert batch["latency_ms"]["p50"] is None


def test_resume_skips_finished_runs_and_force_reruns(tmp_path, test_adapter):
    ds = synthetic()
    out = tmp_path / "r.jsonl"
    defs = _defs(t={"algorithm": "test-exact", "query": {"shift": [0, 1]}})
    cfg = RunConfig(runs=1, warmup=0, modes=("single",))
    run_benchmark(ds, defs, out, cfg, cache_dir=tmp_path, log=lambda m: None)
    ExactNumpy.calls = 0
    s = run_benchmark(ds, defs, out, cfg, cache_dir=tmp_path, log=lambda m: None)
    assert (s.done, s.skipped) == (0, 2) and ExactNumpy.calls == 0  # nothing built or queried again
    defs2 = _defs(t={"algorithm": "test-exact", "query": {"shift": [0, 1, 2]}})
    s = run_benchmark(ds, defs2, out, cfg, cache_dir=tmp_path, log=lambda m: None)
    assert (s.done, s.skipped) == (1, 2)
    s = run_benchmark(ds, defs, out, RunConfig(runs=1, warmup=0, modes=("single",), force=True),
                      cache_dir=tmp_path, log=lambda m: None)
    assert s.done == 2 and len(read_results(out)) == 5
    # other k or another query count are other runs
    s = run_benchmark(ds.limit_queries(10), defs, out, cfg, cache_dir=tmp_path, log=lambda m: None)
    assert s.done == 2


def test_ctrl_c_keeps_finished_runs(tmp_path, test_adapter):
    ds = synthetic(nq=20)
    out = tmp_path / "r.jsonl"
    # 3 single-mode runs of 20 queries each (no warm-up): the 50th query call is inside the third run
    defs = _defs(t={"algorithm": "test-exact", "build": {"interrupt_at": 50}, "query": {"shift": [0, 1, 2]}})
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(ds, defs, out, RunConfig(runs=1, warmup=0, modes=("single",)), cache_dir=tmp_path,
                      log=lambda m: None)
    recs = read_results(out)
    assert [r["query_args"]["shift"] for r in recs] == [0, 1] and all(r["status"] == "ok" for r in recs)
    # resuming runs only what is missing
    ExactNumpy.calls = -10_000
    s = run_benchmark(ds, defs, out, RunConfig(runs=1, warmup=0, modes=("single",)), cache_dir=tmp_path,
                      log=lambda m: None)
    assert (s.done, s.skipped) == (1, 2)


def test_failing_backend_is_recorded_and_the_sweep_goes_on(tmp_path, test_adapter):
    ds = synthetic()
    out = tmp_path / "r.jsonl"
    logs = []
    defs = _defs(bad={"algorithm": "test-exact", "build": {"fail_build": True}},
                 badfaiss={"algorithm": "faiss", "build": {"factory": "IVF4,NoSuchCodec"}},
                 good={"algorithm": "test-exact"})
    s = run_benchmark(ds, defs, out, RunConfig(runs=1, warmup=0, modes=("single",)), cache_dir=tmp_path,
                      log=logs.append)
    assert (s.done, s.failed) == (1, 2)
    recs = read_results(out)
    failed = {r["label"]: r for r in recs if r["status"] == "failed"}
    assert failed["bad"]["stage"] == "build" and "simulated build failure" in failed["bad"]["error"]
    assert "badfaiss" in failed
    assert any("FAILED" in m for m in logs)
    # failures are not retried unless asked
    s = run_benchmark(ds, defs, out, RunConfig(runs=1, warmup=0, modes=("single",)), cache_dir=tmp_path,
                      log=lambda m: None)
    assert (s.done, s.failed) == (0, 0)
    s = run_benchmark(ds, defs, out, RunConfig(runs=1, warmup=0, modes=("single",), retry_failed=True),
                      cache_dir=tmp_path, log=lambda m: None)
    assert s.failed == 2


def test_missing_optional_package_is_skipped_with_a_message(tmp_path, monkeypatch):
    class Ghost(Algorithm):
        name = "ghost"
        package = "no_such_package_annrec_test"

        def fit(self, X):
            raise AssertionError("must not be built")

        def query(self, q, k):
            raise AssertionError

    monkeypatch.setitem(ADAPTERS, "ghost", Ghost)
    logs = []
    s = run_benchmark(synthetic(), _defs(ghost={}), tmp_path / "r.jsonl", RunConfig(runs=1, warmup=0),
                      cache_dir=tmp_path, log=logs.append)
    assert s.unavailable == ["ghost"] and any("not installed" in m for m in logs)


def test_truncated_last_line_is_ignored(tmp_path, test_adapter):
    out = tmp_path / "r.jsonl"
    run_benchmark(synthetic(), _defs(t={"algorithm": "test-exact"}), out, RunConfig(runs=1, warmup=0),
                  cache_dir=tmp_path, log=lambda m: None)
    with open(out, "a") as fh:
        fh.write('{"key": "abc", "status": "o')  # a crash in the middle of a write
    warnings = []
    assert len(read_results(out, warn=warnings.append)) == 2 and warnings


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_real_adapters_agree_with_exact_search(tmp_path, metric):
    ds = synthetic(n=500, nq=20, dim=12, metric=metric)
    entries = {
        "bf": {"algorithm": "bruteforce-blas"},
        "h": {"algorithm": "annrec-hnswlib", "build": {"M": 16, "ef_construction": 100}, "query": {"ef": 200}},
        "hr": {"algorithm": "hnswlib", "build": {"M": 16, "ef_construction": 100}, "query": {"ef": 200}},
        "f": {"algorithm": "annrec-faiss", "build": {"factory": "IVF4,Flat"}, "query": {"nprobe": 4}},
        "fr": {"algorithm": "faiss", "build": {"factory": "IVF4,Flat"}, "query": {"nprobe": 4}}}
    if metric == "l2":  # the optional libraries once
        entries.update(u={"algorithm": "usearch", "query": {"expansion_search": 200}},
                       a={"algorithm": "annoy", "build": {"n_trees": 10}, "query": {"search_k": 20000}})
    defs = _defs(**entries)
    out = tmp_path / "r.jsonl"
    s = run_benchmark(ds, defs, out, RunConfig(runs=1, warmup=5), cache_dir=tmp_path, log=lambda m: None)
    assert s.failed == 0
    recs = read_results(out)
    for r in recs:
        assert r["recall"] >= 0.97, (r["label"], r["mode"], r["recall"])
        assert r["index_disk_bytes"] and r["index_disk_bytes"] > 0
    ratios = overhead_ratios(recs)
    assert {(r["library"], r["mode"]) for r in ratios} == {("hnswlib", "single"), ("hnswlib", "batch"),
                                                            ("faiss", "single"), ("faiss", "batch")}


# ------------------------------------------------------------------ results
def test_pareto_frontier():
    pts = [(0.5, 100), (0.6, 90), (0.55, 80), (0.9, 10), (0.8, 50), (0.7, 50), (0.95, 1), (0.2, 200)]
    assert pareto_frontier(pts) == [(0.2, 200), (0.5, 100), (0.6, 90), (0.8, 50), (0.9, 10), (0.95, 1)]
    assert pareto_frontier([]) == []
    recs = [{"r": 0.9, "q": 5}, {"r": 0.9, "q": 7}]
    assert pareto_frontier(recs, x=lambda p: p["r"], y=lambda p: p["q"]) == [{"r": 0.9, "q": 7}]


def _rec(label, recall, qps, mode="single", **build):
    return {"status": "ok", "label": label, "algorithm": label, "mode": mode, "recall": recall,
            "recall_threshold": recall, "qps": qps, "build_args": build, "query_args": {"ef": int(qps)},
            "build_time_s": 1.5, "index_disk_bytes": 2**20, "index_memory_bytes": 2**21, "dataset": "d", "count": 10}


def test_best_at_recall_and_markdown_table():
    recs = [_rec("a", 0.91, 1000), _rec("a", 0.96, 500), _rec("a", 0.995, 100), _rec("b", 0.93, 2000),
            _rec("b", 0.97, 300), _rec("b", 0.999, 5000, mode="batch")]
    rows = best_at_recall(recs)
    got = {(r["threshold"], r["label"]): r["qps"] for r in rows}
    assert got == {(0.90, "a"): 1000, (0.90, "b"): 2000, (0.95, "a"): 500, (0.95, "b"): 300, (0.99, "a"): 100}
    table = markdown_table(recs)
    assert "| 0.90 | b | 2,000 | 0.9300 |" in table
    assert "not reached: b (max 0.970)" in table
    assert "| 0.99 | b | 5,000 |" in markdown_table(recs, mode="batch")


def test_plot_writes_png(tmp_path):
    recs = [_rec("a", 0.5 + i / 20, 1000 / (i + 1)) for i in range(8)] + [_rec("b", 0.9, 50)]
    p = plot(recs, tmp_path / "p.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="no successful batch-mode runs"):
        plot(recs, tmp_path / "q.png", mode="batch")


def test_result_lines_are_plain_json(tmp_path, test_adapter):
    out = tmp_path / "r.jsonl"
    run_benchmark(synthetic(), _defs(t={"algorithm": "test-exact"}), out, RunConfig(runs=1, warmup=0),
                  cache_dir=tmp_path, log=lambda m: None)
    for line in out.read_text().splitlines():
        rec = json.loads(line)  # strict JSON: no NaN/Infinity
        assert "NaN" not in line and rec["status"] == "ok"


def test_adapter_registry_lists_the_covered_libraries():
    assert {"bruteforce-blas", "annrec-faiss", "annrec-hnswlib", "faiss", "hnswlib", "annoy", "pynndescent",
            "usearch"} <= set(algorithms.ADAPTERS)
    with pytest.raises(InputError, match="unknown algorithm"):
        algorithms.get_adapter("nope")
    assert isinstance(np.int64(3), np.integer)
