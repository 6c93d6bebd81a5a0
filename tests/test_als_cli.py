"""``annrec train als`` on a small CSV log (fast): artifact, JSON figures, search isolation, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import annrec.cli.train_als  # noqa: F401  (registers the command)
from annrec.cli.apps import app
from annrec.data import load_interactions, temporal_user_split
from annrec.embeddings import Embeddings
from annrec.errors import DataError, InputError
from annrec.train import search as search_mod

from _als_fixtures import make_log


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    log = make_log(seed=1)
    df = pd.DataFrame({"user_id": log.user_ids[log.user_idx], "item_id": log.item_ids[log.item_idx],
                       "rating": log.rating, "timestamp": log.timestamp})
    path = tmp_path_factory.mktemp("als_cli") / "ratings.csv"
    df.to_csv(path, index=False)
    return path


def csv_args(path) -> list[str]:
    return ["train", "als", "--ratings", str(path), "--rating-col", "rating", "--timestamp-col", "timestamp"]


def test_cli_writes_artifact_and_figures(ratings_csv, tmp_path):
    out, report = tmp_path / "emb", tmp_path / "als.json"
    res = CliRunner().invoke(app, csv_args(ratings_csv) + ["--factors", "8", "--iterations", "5", "--out", str(out),
                                                          "--json", str(report)])
    assert res.exit_code == 0, res.output
    emb = Embeddings.load(out)
    inter = load_interactions(ratings_csv, rating_col="rating", timestamp_col="timestamp")
    # default --fit-on all: every user and item of the file, factors as asked
    assert emb.metric == "ip" and emb.dim == 8 and len(emb) == inter.n_items
    assert emb.query_ids.tolist() == inter.user_ids.tolist() and emb.seen.nnz == inter.to_csr().nnz
    fig = json.loads(report.read_text())
    table = fig["figures"]["topn"]["table"]
    assert set(table) == {"als", "popularity", "item_knn"}
    for row in table.values():
        assert {"recall@10", "ndcg@10", "mrr", "map@10", "precision@10", "coverage@10", "users"} <= set(row)
    assert fig["params"]["factors"] == 8 and fig["data_hash"] == inter.fingerprint()
    assert emb.manifest["figures"]["topn"]["table"] == table and emb.manifest["trainer"] == "als"
    assert "als" in res.output and "popularity" in res.output


def test_cli_fit_on_train_exports_the_evaluated_model(ratings_csv, tmp_path):
    out = tmp_path / "emb"
    res = CliRunner().invoke(app, csv_args(ratings_csv) + ["--factors", "4", "--iterations", "3", "--fit-on", "train",
                                                          "--baselines", "", "--out", str(out)])
    assert res.exit_code == 0, res.output
    inter = load_interactions(ratings_csv, rating_col="rating", timestamp_col="timestamp")
    train, _ = temporal_user_split(inter, 0.2)
    emb = Embeddings.load(out)
    assert emb.manifest["data_hash"] == train.fingerprint() and emb.seen.nnz == train.to_csr().nnz
    assert list(emb.manifest["figures"]["topn"]["table"]) == ["als"]


def test_cli_search_only_sees_the_training_part(ratings_csv, tmp_path, monkeypatch):
    got = {}
    tiny = (({"alpha": 0.0}, {"alpha": 2.0}),)

    def spy(train, **kwargs):
        got["fingerprint"] = train.fingerprint()
        return real(train, **{**kwargs, "stages": tiny})

    real = search_mod.search_als
    monkeypatch.setattr(search_mod, "search_als", spy)
    report = tmp_path / "r.json"
    res = CliRunner().invoke(app, csv_args(ratings_csv) + ["--factors", "4", "--iterations", "3", "--search",
                                                          "--out", str(tmp_path / "e"), "--json", str(report)])
    assert res.exit_code == 0, res.output
    inter = load_interactions(ratings_csv, rating_col="rating", timestamp_col="timestamp")
    train, _ = temporal_user_split(inter, 0.2)
    assert got["fingerprint"] == train.fingerprint()
    fig = json.loads(report.read_text())["figures"]
    assert fig["search"]["n_fits"] == 3 and fig["search"]["split"]["train_fingerprint"] == train.fingerprint()
    assert fig["topn"]["als_params"]["alpha"] == fig["search"]["best_params"]["alpha"]


@pytest.mark.parametrize("flags,error,text", [
    (["--factors", "0"], InputError, "factors"),
    (["--iterations", "-2"], InputError, "iterations"),
    (["--alpha", "-1"], InputError, "alpha"),
    (["--weighting", "bm15"], InputError, "weighting"),
    (["--fit-on", "test"], InputError, "fit-on"),
    (["--baselines", "random"], InputError, "baseline"),
    (["--min-rating", "9"], DataError, "min_rating"),
    (["--min-rating", "5", "--on-empty", "error"], DataError, "without any event"),
])
def test_cli_bad_input(ratings_csv, tmp_path, flags, error, text):
    out = tmp_path / "emb"
    res = CliRunner().invoke(app, csv_args(ratings_csv) + ["--iterations", "2"] + flags + ["--out", str(out)])
    assert isinstance(res.exception, error), res.output
    assert text in str(res.exception)
    assert not out.exists()


def test_cli_main_prints_one_line_error(ratings_csv, tmp_path, monkeypatch, capsys):
    import sys

    from annrec.cli import main

    monkeypatch.setattr(sys, "argv", ["annrec"] + csv_args(ratings_csv) + ["--factors", "0", "--out",
                                                                             str(tmp_path / "e")])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    assert "factors must be an integer >= 1" in capsys.readouterr().out


def test_cli_min_rating_drop_reports_counts(ratings_csv, tmp_path):
    out = tmp_path / "emb"
    res = CliRunner().invoke(app, csv_args(ratings_csv) + ["--iterations", "2", "--min-rating", "4", "--no-eval",
                                                          "--out", str(out)])
    assert res.exit_code == 0, res.output
    emb = Embeddings.load(out)
    counts = emb.manifest["counts"]
    inter = load_interactions(ratings_csv, rating_col="rating", timestamp_col="timestamp")
    kept = inter.rating >= 4
    assert counts["n_users_emptied_by_min_rating"] == inter.n_users - np.unique(inter.user_idx[kept]).size
    assert len(emb.query_ids) == np.unique(inter.user_idx[kept]).size
    assert len(emb) == np.unique(inter.item_idx[kept]).size
    assert "emptied by --min-rating" in res.output
