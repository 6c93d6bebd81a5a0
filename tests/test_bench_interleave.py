"""Interleaved sweeps (``annrec bench run --interleave``): every build first, then round-robin timed passes."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.bench.algorithms import ADAPTERS
from annrec.bench.definitions import parse_definitions
from annrec.bench.runner import RunConfig, read_results, run_benchmark

from _bench_fixtures import ExactNumpy, synthetic

EVENTS: list[tuple] = []


class Logged(ExactNumpy):
    """The exact test adapter, logging builds and the query arguments of every timed pass."""

    name = "test-logged"

    def fit(self, X):
        EVENTS.append(("fit", self.build_args.get("tag")))
        super().fit(X)

    def set_query_arguments(self, **qa):
        EVENTS.append(("pass", self.build_args.get("tag"), qa["shift"]))
        super().set_query_arguments(**qa)


Logged.build_params = {**ExactNumpy.build_params, "tag": ExactNumpy.build_params["interrupt_at"]}


@pytest.fixture
def logged(monkeypatch):
    monkeypatch.setitem(ADAPTERS, Logged.name, Logged)
    EVENTS.clear()
    return Logged


def _defs(**entries):
    return parse_definitions({"algorithms": entries})


def test_interleave_builds_first_then_goes_round_robin(tmp_path, logged):
    defs = _defs(a={"algorithm": "test-logged", "build": {"tag": 1}, "query": {"shift": [0, 5]}},
                 b={"algorithm": "test-logged", "build": {"tag": 2}, "query": {"shift": [0, 5, 8]}})
    out = tmp_path / "r.jsonl"
    s = run_benchmark(synthetic(), defs, out, RunConfig(runs=2, warmup=3, modes=("single",), interleave=True),
                      cache_dir=tmp_path, log=lambda m: None)
    assert (s.done, s.failed) == (5, 0)
    assert EVENTS == [("fit", 1), ("fit", 2),
                      # position 0: one pass of each per repetition, the order rotated between repetitions
                      ("pass", 1, 0), ("pass", 2, 0), ("pass", 2, 0), ("pass", 1, 0),
                      ("pass", 1, 5), ("pass", 2, 5), ("pass", 2, 5), ("pass", 1, 5),
                      ("pass", 2, 8), ("pass", 2, 8)]  # position 2: only b has one
    recs = read_results(out)
    for r in recs:  # best of the interleaved passes, CPU time beside wall time
        assert r["runs"] == len(r["run_times_s"]) == 2 and r["search_time_s"] == min(r["run_times_s"])
        assert r["qps_cpu"] == pytest.approx(r["n_queries"] / r["cpu_time_s"])
    by = {(r["label"], r["query_args"]["shift"]): r for r in recs}
    assert by["a", 0]["recall"] == 1.0 and by["b", 5]["recall"] == pytest.approx(0.5)
    assert by["a", 0]["interleaved"] == 2 and by["b", 8]["interleaved"] == 1


def test_interleaved_and_sequential_runs_give_the_same_answers(tmp_path, logged):
    defs = _defs(a={"algorithm": "test-logged", "build": {"tag": 1}, "query": {"shift": [0, 3]}})
    recalls = []
    for inter in (False, True):
        out = tmp_path / f"r{inter}.jsonl"
        run_benchmark(synthetic(), defs, out, RunConfig(runs=1, warmup=0, interleave=inter), cache_dir=tmp_path,
                      log=lambda m: None)
        recalls.append(sorted((r["query_args"]["shift"], r["mode"], r["recall"]) for r in read_results(out)))
    assert recalls[0] == recalls[1] and len(recalls[0]) == 4


def test_a_failing_build_drops_out_of_the_round_robin(tmp_path, logged):
    defs = _defs(a={"algorithm": "test-logged", "build": {"tag": 1, "fail_build": True}, "query": {"shift": [0]}},
                 b={"algorithm": "test-logged", "build": {"tag": 2}, "query": {"shift": [0]}})
    out = tmp_path / "r.jsonl"
    s = run_benchmark(synthetic(), defs, out, RunConfig(runs=1, warmup=0, modes=("single",), interleave=True),
                      cache_dir=tmp_path, log=lambda m: None)
    assert (s.done, s.failed) == (1, 1)
    assert [e for e in EVENTS if e[0] == "pass"] == [("pass", 2, 0)]
    assert np.array([r["status"] for r in read_results(out)]).tolist() == ["failed", "ok"]
