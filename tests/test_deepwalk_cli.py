"""`annrec train deepwalk`: artifact + --json from an edge list and from MovieLens, clear errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from annrec.embeddings import Embeddings
from annrec.errors import DataError, InputError

from _deepwalk_fixtures import require_real_data

CHEAP = ["--preset", "small", "--factors", "8", "--epochs", "2", "--num-threads", "1", "--eval-repeats", "1",
         "--no-progress"]


def _run(args):
    from annrec.cli import app

    return CliRunner().invoke(app, args, catch_exceptions=True)


@pytest.fixture
def clique_files(tmp_path):
    edges = ["source,target,weight"]
    items = ["movieId,title,genres"]
    for base, genre in ((0, "Drama"), (100, "Comedy")):
        for i in range(8):
            items.append(f"{base + i},Film {base + i},{genre}|{'Short' if i % 2 else 'Long'}")
            for j in range(i + 1, 8):
                edges.append(f"{base + i},{base + j},1")
    edges.append("0,100,1")
    e, it = tmp_path / "edges.csv", tmp_path / "items.csv"
    e.write_text("\n".join(edges) + "\n")
    it.write_text("\n".join(items) + "\n")
    return e, it


def test_cli_edgelist_writes_artifact_and_json(clique_files, tmp_path):
    edges, items = clique_files
    out, js = tmp_path / "dw", tmp_path / "fig.json"
    r = _run(["train", "deepwalk", "--graph", "edgelist", "--edges", str(edges), "--items", str(items),
              "--p", "0.5", "--q", "2", *CHEAP, "--out", str(out), "--json", str(js)])
    assert r.exit_code == 0, r.output
    emb = Embeddings.load(out)
    assert sorted(emb.ids.tolist()) == list(range(8)) + list(range(100, 108))
    assert emb.metric == "cosine" and emb.dim == 8
    assert emb.items[3]["title"] == "Film 3" and emb.items[3]["genres"] == ["Drama", "Short"]
    man = emb.manifest
    assert man["trainer"] == "deepwalk" and man["params"]["p"] == 0.5 and man["params"]["q"] == 2.0
    assert man["gensim"]["walks"] == "second-order (node2vec)"
    assert "genre_classification" in man["figures"] and man["graph"]["kind"] == "edgelist"
    fig = json.loads(js.read_text())
    assert fig["command"] == "train deepwalk" and fig["graph"]["edges"] == 57
    assert fig["genre_classification"] == man["figures"]["genre_classification"] and fig["out"] == str(out)


def test_cli_bad_inputs(clique_files, tmp_path):
    edges, _ = clique_files
    out = tmp_path / "dw"
    bad = tmp_path / "bad.csv"
    bad.write_text("source,weight\n1,2\n")
    r = _run(["train", "deepwalk", "--graph", "edgelist", "--edges", str(bad), *CHEAP, "--out", str(out)])
    assert isinstance(r.exception, DataError) and "no target column" in str(r.exception)
    bad.write_text("source,target,weight\n1,2,x\n")
    r = _run(["train", "deepwalk", "--graph", "edgelist", "--edges", str(bad), *CHEAP, "--out", str(out)])
    assert isinstance(r.exception, DataError) and "non-numeric" in str(r.exception)
    r = _run(["train", "deepwalk", "--graph", "edgelist", "--edges", str(edges), "--p", "0", *CHEAP,
              "--out", str(out)])
    assert isinstance(r.exception, InputError) and "p must be" in str(r.exception)
    r = _run(["train", "deepwalk", "--graph", "edgelist", *CHEAP, "--out", str(out)])
    assert isinstance(r.exception, InputError) and "--edges" in str(r.exception)
    r = _run(["train", "deepwalk", "--graph", "tree", *CHEAP, "--out", str(out)])
    assert isinstance(r.exception, InputError) and "unknown --graph" in str(r.exception)
    r = _run(["train", "deepwalk", "--graph", "edgelist", "--edges", str(edges), "--topn", *CHEAP, "--out", str(out)])
    assert isinstance(r.exception, InputError) and "--topn" in str(r.exception)
    assert not out.exists()  # nothing half-written


def test_cli_error_is_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "e.csv"
    bad.write_text("source,target\n1,1\n")
    proc = subprocess.run([sys.executable, "-c", "from annrec.cli import main; main()", "train", "deepwalk",
                           "--graph", "edgelist", "--edges", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error:" in proc.stdout and "no edges" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_cli_movielens_cooccurrence_and_topn(tmp_path):
    require_real_data()
    out, js = tmp_path / "dw", tmp_path / "fig.json"
    r = _run(["train", "deepwalk", "--graph", "cooccurrence", "--walks-per-node", "2", *CHEAP, "--topn",
              "--out", str(out), "--json", str(js)])
    assert r.exit_code == 0, r.output
    emb = Embeddings.load(out)
    assert len(emb) == 9724 and emb.items[1]["title"] == "Toy Story (1995)"
    assert emb.manifest["dataset"] == "ml-latest-small" and len(emb.manifest["data_hash"]) == 64
    fig = json.loads(js.read_text())
    tn = fig["topn_item_to_item"]
    # 10 picks from 9,724 movies find ~0.001 of a user's test items by chance
    assert tn["users"] == 610 and tn["recall@10"] > 0.01 and "popularity" in tn
    assert {"micro_f1", "macro_f1"} <= set(fig["genre_classification"])
