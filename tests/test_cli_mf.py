"""``annrec train mf`` on the real ml-latest-small (few epochs) and on a ratings CSV; JSON; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import annrec.cli  # noqa: F401  (registers every command)
from annrec.cli.apps import app
from annrec.embeddings import Embeddings

from _mf_fixtures import DATA_DIR, have_movielens, make_ratings, run_main, write_ratings_csv

FEW = ["--factors", "8", "--epochs", "3", "--no-progress"]


@pytest.mark.slow
@pytest.mark.skipif(not have_movielens(), reason="ml-latest-small not found (set ANNREC_DATA_DIR)")
def test_train_mf_on_movielens_writes_artifact_and_json(tmp_path):
    out, report = tmp_path / "mf", tmp_path / "mf.json"
    res = CliRunner().invoke(app, ["train", "mf", "--data-dir", str(DATA_DIR), *FEW, "--no-refit", "--out", str(out),
                                   "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert "RMSE" in res.output and "bias-only baseline RMSE" in res.output
    fig = json.loads(report.read_text())
    rating = fig["figures"]["rating"]
    assert 0.8 < rating["rmse"] < 1.2 and 0.8 < rating["bias_baseline_rmse"] < 0.9
    assert rating["train_events"] == 90752 and rating["test_events"] == 10084  # random 90/10 of 100,836
    emb = Embeddings.load(out)
    assert emb.manifest["trainer"] == "mf" and emb.metric == "ip" and emb.dim == 9
    assert emb.manifest["figures"]["rating"]["rmse"] == rating["rmse"]
    assert emb.manifest["dataset"] == "ml-latest-small" and len(emb.manifest["fingerprint"]) == 64
    # the artifact is the evaluated model (--no-refit: the 95% of the training part left after the
    # early-stopping carve-out); seen = every rating of the data set on the exported items
    assert emb.manifest["counts"]["train_events"] == 90752 - round(0.05 * 90752)
    assert emb.seen.nnz > 90752


def test_train_mf_from_csv_full_and_topn(tmp_path):
    inter = make_ratings()
    csv = write_ratings_csv(inter, tmp_path / "ratings.csv")
    out, report = tmp_path / "mf", tmp_path / "mf.json"
    res = CliRunner().invoke(app, ["train", "mf", "--ratings", str(csv), "--user-col", "user", "--item-col", "movie",
                                   "--rating-col", "stars", "--timestamp-col", "ts", *FEW, "--topn", "--full",
                                   "--y-range", "0,5.5", "--out", str(out), "--json", str(report)])
    assert res.exit_code == 0, res.output
    fig = json.loads(report.read_text())["figures"]
    assert set(fig["topn"]["table"]) == {"mf", "bias_only", "popularity"}
    table = fig["topn"]["table"]
    assert {row["users"] for row in table.values()} == {inter.n_users}  # one protocol, the same test users
    # personalised lists reach far more of the catalogue than one global popularity list
    assert table["mf"]["coverage@10"] > 2 * table["popularity"]["coverage@10"]
    assert fig["artifact"].startswith("retrained on all")
    emb = Embeddings.load(out)
    assert len(emb) == inter.n_items and len(emb.queries) == inter.n_users  # --full: every rating
    assert emb.manifest["params"]["val_fraction"] == 0.0 and emb.manifest["y_range"] == [0.0, 5.5]
    assert emb.manifest["counts"]["train_events"] == inter.n_events
    np.testing.assert_array_equal(emb.queries[:, -1], 1.0)


def test_train_mf_bad_input(tmp_path, monkeypatch, capsys):
    inter = make_ratings(n_users=20, n_items=10, per_user=5)
    csv = write_ratings_csv(inter, tmp_path / "ratings.csv")
    base = ["train", "mf", "--ratings", csv, "--user-col", "user", "--item-col", "movie", "--out", tmp_path / "o"]
    code, out = run_main(base, monkeypatch, capsys)
    assert code == 2 and "--rating-col" in out and "annrec train als" in out
    code, out = run_main(base + ["--rating-col", "nope"], monkeypatch, capsys)
    assert code == 2 and "nope" in out
    code, out = run_main(base + ["--rating-col", "stars", "--factors", "0"], monkeypatch, capsys)
    assert code == 2 and "factors must be" in out
    # the old spelling still reaches the same check, with a deprecation message naming the new flag
    code, out = run_main(base + ["--rating-col", "stars", "--dim", "0"], monkeypatch, capsys)
    assert code == 2 and "factors must be" in out and "--dim is deprecated" in out and "--factors" in out
    code, out = run_main(base + ["--rating-col", "stars", "--y-range", "high"], monkeypatch, capsys)
    assert code == 2 and "--y-range" in out
    code, out = run_main(base[:2] + ["--ratings", tmp_path / "missing.csv", "--rating-col", "r", "--out",
                                     tmp_path / "o"], monkeypatch, capsys)
    assert code == 2 and "does not exist" in out
    # implicit feedback (every rating equal) is refused with a pointer to ALS
    write_ratings_csv(inter._replace(rating=np.ones(inter.n_events, np.float32)), tmp_path / "ones.csv")
    code, out = run_main(base[:2] + ["--ratings", tmp_path / "ones.csv", "--user-col", "user", "--item-col", "movie",
                                     "--rating-col", "stars", "--out", tmp_path / "o"], monkeypatch, capsys)
    assert code == 2 and "annrec train als" in out
    assert not (tmp_path / "o").exists()
