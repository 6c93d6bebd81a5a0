"""``--items`` on the train commands: a user's own catalogue metadata reaches the Embeddings, the CLI and filters."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from annrec.embeddings import Embeddings

from _mf_fixtures import make_ratings, run_main, write_ratings_csv


@pytest.fixture()
def files(tmp_path):
    inter = make_ratings()
    csv = write_ratings_csv(inter, tmp_path / "ratings.csv")
    ids = inter.item_ids.tolist()
    items = tmp_path / "catalogue.csv"
    pd.DataFrame({"sku": ids, "title": [f"Product {i}" for i in ids], "genres": ["a|b" if i % 2 else "c" for i in ids],
                  "price": [float(i) / 10 for i in ids]}).to_csv(items, index=False)
    return inter, csv, items


@pytest.mark.parametrize("command", ["als", "mf"])
def test_items_reach_the_embeddings_and_filters(files, tmp_path, monkeypatch, capsys, command):
    inter, csv, items = files
    out = tmp_path / command
    extra = ["--rating-col", "stars", "--epochs", "2"] if command == "mf" else ["--iterations", "2"]
    code, text = run_main(["train", command, "--ratings", csv, "--user-col", "user", "--item-col", "movie",
                           "--timestamp-col", "ts", *extra, "--items", items, "--items-id-col", "sku", "--out", out],
                          monkeypatch, capsys)
    assert code == 0, text
    emb = Embeddings.load(out)
    some = int(emb.ids[0])
    assert emb.items[some] == {"title": f"Product {some}", "genres": ["a", "b"] if some % 2 else ["c"],
                               "price": some / 10}
    report = tmp_path / "r.json"
    user = str(emb.query_ids[0])
    code, text = run_main(["recommend", user, "--embeddings", out, "-k", "5", "--json", report, "--filter",
                           json.dumps({"must": [{"key": "price", "range": {"lt": 3.0}}]})], monkeypatch, capsys)
    assert code == 0, text
    rows = json.loads(report.read_text())["results"]
    assert rows and all(r["id"] / 10 < 3.0 and r["title"] == f"Product {r['id']}" for r in rows)


def test_a_missing_items_id_column_is_one_error(files, tmp_path, monkeypatch, capsys):
    _, csv, items = files
    code, text = run_main(["train", "als", "--ratings", csv, "--user-col", "user", "--item-col", "movie",
                           "--items", items, "--out", tmp_path / "x"], monkeypatch, capsys)
    assert code == 2 and "has no id column 'item_id'" in text and "--items-id-col" in text
    assert not (tmp_path / "x").exists()


def test_a_split_without_timestamps_warns_and_the_report_records_it(files, tmp_path, monkeypatch, capsys):
    _, csv, _ = files
    report = tmp_path / "als.json"
    code, text = run_main(["train", "als", "--ratings", csv, "--user-col", "user", "--item-col", "movie",
                           "--iterations", "2", "--fit-on", "train", "--out", tmp_path / "als", "--json", report],
                          monkeypatch, capsys)
    assert code == 0, text
    assert "warning:" in text and "order in the file" in text
    assert any("order in the file" in w for w in json.loads(report.read_text())["warnings"])
