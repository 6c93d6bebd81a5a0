"""``annrec recommend`` / ``annrec similar`` on the quickstart's real ml-latest-small artifacts (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import annrec.cli  # noqa: F401  (registers every command)
from annrec.cli.apps import app
from annrec.data import load_movielens
from annrec.embeddings import Embeddings

from _mf_fixtures import DATA_DIR, have_movielens, quickstart_dir, run_main

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_movielens(), reason="ml-latest-small not found (set ANNREC_DATA_DIR)")]


@pytest.fixture(scope="module")
def qs():
    return quickstart_dir()


@pytest.fixture(scope="module")
def rated_by_user_1():
    ml = load_movielens("ml-latest-small", data_dir=DATA_DIR)
    return set(ml.item_ids[ml.item_idx[ml.user_idx == ml.user_index(1)]].tolist())


def _results(path):
    return json.loads(path.read_text())["results"]


def test_recommend_shows_titles_and_excludes_rated_items(qs, rated_by_user_1, tmp_path):
    report = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["recommend", "1", "--embeddings", str(qs / "mf"), "-k", "10", "--json", str(report)])
    assert res.exit_code == 0, res.output
    rows = _results(report)
    assert len(rows) == 10 and not {r["id"] for r in rows} & rated_by_user_1
    assert all(r["title"] for r in rows) and rows[0]["title"][:12] in res.output
    assert all(0.5 <= r["predicted_rating"] <= 5.0 for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert "232 rated items excluded" in " ".join(res.output.split())
    # through each index: the same items as exact search at a generous ef / nprobe
    exact = [r["id"] for r in rows]
    for index, flag in (("mf-hnsw", ["--ef", "400"]), ("mf-ivf", ["--nprobe", "64"])):
        res = CliRunner().invoke(app, ["recommend", "1", "--embeddings", str(qs / "mf"), "--index", str(qs / index),
                                       *flag, "--json", str(report)])
        assert res.exit_code == 0, res.output
        got = [r["id"] for r in _results(report)]
        assert not set(got) & rated_by_user_1
        assert len(set(got) & set(exact)) >= 9, (index, got, exact)


def test_recommend_include_seen(qs, rated_by_user_1, tmp_path):
    report = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["recommend", "1", "--embeddings", str(qs / "mf"), "-k", "300", "--include-seen",
                                   "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert {r["id"] for r in _results(report)} & rated_by_user_1


def test_similar(qs, tmp_path):
    report = tmp_path / "s.json"
    res = CliRunner().invoke(app, ["similar", "1", "--embeddings", str(qs / "mf"), "--index", str(qs / "mf-hnsw"),
                                   "-k", "5", "--json", str(report)])
    assert res.exit_code == 0, res.output
    rows = _results(report)
    assert len(rows) == 5 and 1 not in {r["id"] for r in rows} and all(r["title"] for r in rows)
    assert "Toy Story (1995)" in res.output
    emb = Embeddings.load(qs / "mf")
    scores = emb.vectors @ emb.vectors[emb.row_of(1)]
    scores[emb.row_of(1)] = -np.inf
    assert len({r["id"] for r in rows} & set(emb.ids[np.argsort(-scores)[:5]].tolist())) >= 4


def test_bad_input(qs, tmp_path, monkeypatch, capsys):
    def fails(args, *needles):
        code, out = run_main(args, monkeypatch, capsys)
        assert code == 2, out
        assert out.startswith("error:") and all(n in out for n in needles), out

    mf = qs / "mf"
    fails(["recommend", "999999", "--embeddings", mf], "unknown user id '999999'")
    fails(["recommend", "1", "--embeddings", mf, "-k", "0"], "k must be >= 1")
    fails(["recommend", "1", "--embeddings", mf, "-k", "-2"], "k must be >= 1")
    fails(["recommend", "1", "--embeddings", mf, "-k", "100000"], "larger than")
    fails(["recommend", "1", "--embeddings", tmp_path / "missing"], "no artifact folder")
    fails(["recommend", "1", "--embeddings", qs / "mf-hnsw"], "'annrec.index' artifact, not 'annrec.embeddings'")
    fails(["recommend", "1", "--embeddings", mf, "--index", mf], "'annrec.embeddings' artifact, not 'annrec.index'")
    fails(["recommend", "1", "--embeddings", mf, "--index", tmp_path / "missing"], "no artifact folder")
    fails(["recommend", "1", "--embeddings", mf, "--index", qs / "mf-ivf", "--ef", "10"], "--ef", "--nprobe")
    fails(["similar", "999999", "--embeddings", mf], "unknown item id '999999'")
    fails(["similar", "Toy Story", "--embeddings", mf], "unknown item id")
    fails(["similar", "1", "--embeddings", mf, "-k", "0"], "k must be >= 1")
    # an index built from other vectors of the same dimension is refused
    emb = Embeddings.load(mf)
    other = Embeddings(vectors=np.random.default_rng(0).normal(size=emb.vectors.shape).astype(np.float32),
                       ids=emb.ids, metric="ip").save(tmp_path / "other")
    assert CliRunner().invoke(app, ["index", "build", "--embeddings", str(other), "--backend", "hnswlib",
                                    "--out", str(tmp_path / "other-hnsw")]).exit_code == 0
    fails(["recommend", "1", "--embeddings", mf, "--index", tmp_path / "other-hnsw"], "was not built from")


def test_console_script_exit_code_and_one_line_error(qs):
    exe = [sys.executable, "-c", "from annrec.cli import main; main()"]
    p = subprocess.run(exe + ["recommend", "999999", "--embeddings", str(qs / "mf")], capture_output=True, text=True,
                       timeout=120, env={**__import__("os").environ, "COLUMNS": "200"})
    assert p.returncode == 2
    lines = [ln for ln in p.stdout.splitlines() + p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown user id '999999'"), lines


def test_old_model_flag_still_works_with_a_deprecation_warning(qs, tmp_path, monkeypatch, capsys):
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    code, _ = run_main(["recommend", "1", "--embeddings", str(qs / "mf"), "-k", "5", "--json", str(new)],
                       monkeypatch, capsys)
    assert code == 0
    code, out = run_main(["recommend", "1", "--model", str(qs / "mf"), "-k", "5", "--json", str(old)],
                         monkeypatch, capsys)
    assert code == 0
    assert "--model is deprecated" in out
    assert json.loads(new.read_text())["results"] == json.loads(old.read_text())["results"]
