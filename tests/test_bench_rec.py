"""`annrec bench rec`: recommendation quality through exact search and index configurations (ml-latest-small)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from annrec.embeddings import Embeddings

ML_DIR = Path(os.environ.get("ANNREC_DATA_DIR", "ANNREC_DATA_DIR-is-not-set"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def svd_artifact(tmp_path_factory):
    """A truncated-SVD recommender of the train part of the temporal split (users and items of ml-latest-small)."""
    if not (ML_DIR / "ml-latest-small" / "ratings.csv").exists():
        pytest.skip("ml-latest-small is not available")
    from scipy.sparse.linalg import svds

    from annrec.data import load_movielens, temporal_user_split

    inter = load_movielens("ml-latest-small", data_dir=ML_DIR, progress=False)
    train, test = temporal_user_split(inter, 0.2)
    u, s, vt = svds(train.to_csr(binary=True).astype(np.float64), k=16, random_state=0)
    users = (u * s).astype(np.float32)
    items = vt.T.astype(np.float32)
    path = tmp_path_factory.mktemp("rec") / "svd"
    Embeddings(items, inter.item_ids, "ip", queries=users, query_ids=inter.user_ids,
               manifest={"trainer": "truncated-svd (test)", "dataset": "ml-latest-small", "fit_on": "train",
                         "data_hash": train.fingerprint()}).save(path)
    return path, users, items, train, test


def test_exact_search_matches_the_metrics_protocol(svd_artifact, tmp_path):
    from annrec.bench.definitions import parse_definitions
    from annrec.bench.rec import load_rec_task, rec_benchmark, rec_table
    from annrec.metrics import dot_recommender, evaluate_topn

    path, users, items, train, test = svd_artifact
    task = load_rec_task(path, data_dir=ML_DIR, log=lambda m: None)
    assert task.info["test_users"] == 610 and task.info["users_without_vector"] == 0
    assert not task.info["warnings"]
    defs = parse_definitions({"algorithms": {
        "hnsw": {"algorithm": "annrec-hnswlib", "build": {"M": 8, "ef_construction": 64}, "query": {"ef": [2, 400]}},
        "ivf": {"algorithm": "annrec-faiss", "build": {"factory": "IVF32,Flat"}, "query": {"nprobe": [1, 32]}}}})
    recs = rec_benchmark(task, defs, tmp_path / "rec.jsonl", k=10, runs=1, log=lambda m: None)
    by = {(r["label"], tuple(r["query_args"].values())): r for r in recs}
    exact = by[("exact", ())]
    ref = evaluate_topn(dot_recommender(users, items), train, test, k=10)  # annrec.metrics' own protocol
    assert exact["recall@10"] == pytest.approx(ref["recall@10"], abs=2e-3)
    assert exact["ndcg@10"] == pytest.approx(ref["ndcg@10"], abs=2e-3)
    assert exact["overlap@10"] == 1.0 and exact["users"] == 610
    # a wide search reproduces the exact lists; a narrow one loses some of them
    assert by[("hnsw", (400,))]["overlap@10"] > 0.98 and by[("ivf", (32,))]["overlap@10"] == pytest.approx(1.0)
    assert by[("ivf", (1,))]["overlap@10"] < by[("ivf", (32,))]["overlap@10"]
    assert by[("hnsw", (2,))]["overlap@10"] < by[("hnsw", (400,))]["overlap@10"]
    # nprobe=32 probes all 32 lists: the same lists as exact search, hence the same figures
    assert by[("ivf", (32,))]["recall@10"] == pytest.approx(exact["recall@10"], abs=1e-9)
    assert by[("ivf", (32,))]["ndcg@10"] == pytest.approx(exact["ndcg@10"], abs=1e-9)
    # the results file holds the figures that were returned
    from annrec.bench.runner import read_results

    stored = {(r["label"], tuple(r["query_args"].values())): r for r in read_results(tmp_path / "rec.jsonl")}
    assert set(stored) == set(by)
    for key, r in by.items():
        assert {m: stored[key][m] for m in ("recall@10", "ndcg@10", "overlap@10")} == \
            {m: r[m] for m in ("recall@10", "ndcg@10", "overlap@10")}, key
    table = rec_table(recs)
    assert table.splitlines()[2].startswith("| exact |") and "speed-up vs exact" in table
    # resume: finished configurations are not run again
    logs = []
    again = rec_benchmark(task, defs, tmp_path / "rec.jsonl", k=10, runs=1, log=logs.append)
    assert len(again) == len(recs) and any("skipped" in m for m in logs)


def test_rec_cli_and_warnings(svd_artifact, tmp_path):
    from typer.testing import CliRunner

    from annrec.cli import app

    path, *_ = svd_artifact
    (tmp_path / "d.yaml").write_text(
        "algorithms:\n  hnsw: {algorithm: annrec-hnswlib, build: {M: 8, ef_construction: 32}, query: {ef: [16]}}\n")
    r = CliRunner().invoke(app, ["bench", "rec", str(path), "-d", str(tmp_path / "d.yaml"), "--data-dir", str(ML_DIR),
                                 "--runs", "1", "--max-users", "100", "--results", str(tmp_path / "r.jsonl"),
                                 "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [x["label"] for x in rows] == ["exact", "hnsw"] and rows[0]["test_users"] == 100
    r = CliRunner().invoke(app, ["bench", "plot", str(tmp_path / "r.jsonl"), "--mode", "single", "--recall", "ndcg@10",
                                 "--out", str(tmp_path / "rec.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rec.png").exists()


def test_rec_needs_user_vectors(tmp_path):
    from annrec.bench.rec import load_rec_task
    from annrec.errors import InputError

    Embeddings(np.ones((3, 2), np.float32), [1, 2, 3], "ip", manifest={"dataset": "ml-latest-small"}).save(tmp_path / "e")
    with pytest.raises(InputError, match="no user"):
        load_rec_task(tmp_path / "e")
