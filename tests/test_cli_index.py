"""``annrec index build`` / ``annrec index query`` on a small synthetic Embeddings folder (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import annrec.cli  # noqa: F401  (registers every command)
from annrec.cli.apps import app
from annrec.cli.index_cmds import parse_param
from annrec.embeddings import Embeddings
from annrec.errors import InputError
from annrec.index import load_index

from _mf_fixtures import REPO, run_main

N, DIM = 600, 12


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    ids = np.arange(N) * 3 + 1
    emb = Embeddings(vectors=rng.normal(size=(N, DIM)).astype(np.float32), ids=ids, metric="ip",
                     queries=rng.normal(size=(5, DIM)).astype(np.float32), query_ids=[1, 2, 3, 4, 5],
                     items={int(i): {"title": f"Film {i} [{i % 7}]", "genres": ["Drama"]} for i in ids},
                     manifest={"trainer": "mf", "dataset": "synthetic", "fingerprint": "f" * 64})
    return emb.save(tmp_path_factory.mktemp("emb") / "vecs")


@pytest.fixture(scope="module")
def hnsw_dir(emb_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "vecs-hnsw"
    res = CliRunner().invoke(app, ["index", "build", "--embeddings", str(emb_dir), "--spec",
                                   str(REPO / "index" / "hnsw.yaml"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_build_from_spec_sets_source_and_titles(emb_dir, hnsw_dir):
    idx = load_index(hnsw_dir)
    assert idx.backend == "hnswlib" and len(idx) == N and idx.dim == DIM and idx.metric == "ip"
    assert idx.params["M"] == 16 and idx.params["ef_construction"] == 200 and idx.params["ef"] == 64
    assert idx.source == {"embeddings": str(emb_dir.resolve()), "embeddings_name": "vecs", "data_hash": "f" * 64,
                          "embeddings_count": N, "trainer": "mf", "dataset": "synthetic", "embeddings_metric": "ip"}
    assert idx.items[4]["title"] == "Film 4 [4]"


def test_build_from_flags_with_json(emb_dir, tmp_path):
    out, report = tmp_path / "ivf", tmp_path / "build.json"
    res = CliRunner().invoke(app, ["index", "build", "--embeddings", str(emb_dir), "--backend", "faiss",
                                   "--param", "factory=IVF{nlist},Flat", "--param", "nlist=8", "--param", "nprobe=2",
                                   "--out", str(out), "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert "build" in res.output and "600 items" in res.output
    fig = json.loads(report.read_text())
    assert fig["backend"] == "faiss" and fig["count"] == N and fig["params"]["factory_resolved"] == "IVF8,Flat"
    assert fig["folder_bytes"] == sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert fig["folder_bytes"] > N * DIM * 4  # the vectors alone take that much
    assert load_index(out).params["nprobe"] == 2


def test_spec_with_param_override(emb_dir, tmp_path):
    out = tmp_path / "h"
    res = CliRunner().invoke(app, ["index", "build", "--embeddings", str(emb_dir), "--spec",
                                   str(REPO / "index" / "hnsw.yaml"), "--param", "M=8", "--metric", "cosine",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    idx = load_index(out)
    assert idx.params["M"] == 8 and idx.metric == "cosine"


def test_query_by_item_vector_and_file(emb_dir, tmp_path):
    flat = tmp_path / "flat"
    assert CliRunner().invoke(app, ["index", "build", "--embeddings", str(emb_dir), "--spec",
                                    str(REPO / "index" / "flat.yaml"), "--out", str(flat)]).exit_code == 0
    emb = Embeddings.load(emb_dir)
    # --item: the item's own vector, the item itself left out, titles shown (brackets survive rich markup)
    report = tmp_path / "q.json"
    res = CliRunner().invoke(app, ["index", "query", "--index", str(flat), "--item", "4", "-k", "5",
                                   "--json", str(report)])
    assert res.exit_code == 0, res.output
    got = [r["id"] for r in json.loads(report.read_text())["results"][0]]
    scores = emb.vectors @ emb.vectors[emb.row_of(4)]
    scores[emb.row_of(4)] = -np.inf
    assert got == emb.ids[np.argsort(-scores)[:5]].tolist()
    assert f"Film {got[0]} [{got[0] % 7}]" in res.output
    # --vector
    v = ",".join(str(x) for x in emb.queries[0])
    res = CliRunner().invoke(app, ["index", "query", "--index", str(flat), "--vector", v, "-k", "3",
                                   "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(report.read_text())["results"][0]] == \
        emb.ids[np.argsort(-(emb.vectors @ emb.queries[0]))[:3]].tolist()
    # --vectors FILE.npy (a batch)
    np.save(tmp_path / "q.npy", emb.queries)
    res = CliRunner().invoke(app, ["index", "query", "--index", str(flat), "--vectors", str(tmp_path / "q.npy"),
                                   "-k", "4", "--json", str(report)])
    assert res.exit_code == 0, res.output
    results = json.loads(report.read_text())["results"]
    assert len(results) == 5 and all(len(r) == 4 for r in results)
    assert "QPS" in res.output


def test_query_params_per_backend(emb_dir, hnsw_dir, tmp_path):
    """--ef reaches hnswlib and --nprobe reaches FAISS IVF: a wide search returns the exact lists, probing one
    IVF list of eight misses some of them."""
    emb = Embeddings.load(emb_dir)
    np.save(tmp_path / "q.npy", emb.queries)
    exact = [emb.ids[np.argsort(-(emb.vectors @ q), kind="stable")[:10]].tolist() for q in emb.queries]

    def query(index, *opts):
        report = tmp_path / "q.json"
        res = CliRunner().invoke(app, ["index", "query", "--index", str(index), "--vectors", str(tmp_path / "q.npy"),
                                       "-k", "10", *opts, "--json", str(report)])
        assert res.exit_code == 0, res.output
        fig = json.loads(report.read_text())
        found = [[r["id"] for r in row] for row in fig["results"]]
        return fig["params"], np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])

    params, recall = query(hnsw_dir, "--ef", "200")
    assert params == {"ef": 200} and recall == 1.0
    ivf = tmp_path / "ivf"
    res = CliRunner().invoke(app, ["index", "build", "--embeddings", str(emb_dir), "--backend", "faiss",
                                   "--param", "factory=IVF8,Flat", "--out", str(ivf)])
    assert res.exit_code == 0, res.output
    params, full = query(ivf, "--nprobe", "8")
    assert params == {"nprobe": 8} and full == 1.0
    params, narrow = query(ivf, "--nprobe", "1")
    assert params == {"nprobe": 1} and narrow < 0.9


@pytest.mark.parametrize("text, expected", [("M=16", ("M", 16)),
                                            ("factory=IVF{nlist},Flat", ("factory", "IVF{nlist},Flat")),
                                            ("gpu=false", ("gpu", False)), ("nlist=auto", ("nlist", "auto")),
                                            ("x=0.5", ("x", 0.5)), (" ef = 32 ", ("ef", 32))])
def test_parse_param(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["M", "=16", "M=", "1x=2", "a b=3"])
def test_parse_param_malformed(text):
    with pytest.raises(InputError, match="malformed --param"):
        parse_param(text)


def test_bad_input(emb_dir, hnsw_dir, tmp_path, monkeypatch, capsys):
    def fails(args, *needles):
        code, out = run_main(args, monkeypatch, capsys)
        assert code == 2, out
        assert out.startswith("error:") and all(n in out for n in needles), out

    build = ["index", "build", "--embeddings", emb_dir, "--out", tmp_path / "x"]
    fails(build + ["--backend", "hnswlib", "--param", "M"], "malformed --param")
    fails(build + ["--backend", "annoy"], "unknown index backend")
    fails(build, "--spec", "--backend")
    fails(build + ["--backend", "faiss", "--spec", REPO / "index" / "hnsw.yaml"], "contradicts")
    fails(build + ["--backend", "hnswlib", "--param", "nprobe=4"], "unknown hnswlib parameter")
    fails(build + ["--backend", "faiss", "--param", "factory=IVF4096,Flat"], "training vectors")
    fails(build + ["--spec", tmp_path / "none.yaml"], "no index spec")
    fails(["index", "build", "--embeddings", tmp_path / "missing", "--backend", "hnswlib", "--out", tmp_path / "x"],
          "no artifact folder")
    fails(["index", "build", "--embeddings", hnsw_dir, "--backend", "hnswlib", "--out", tmp_path / "x"],
          "'annrec.index' artifact, not 'annrec.embeddings'")
    assert not (tmp_path / "x").exists()

    query = ["index", "query", "--index", hnsw_dir]
    fails(query, "exactly one query")
    fails(query + ["--item", "1", "--vector", "1,2"], "exactly one query")
    fails(query + ["--item", "2"], "unknown id")
    fails(query + ["--item", "1", "-k", "0"], "k must be >= 1")
    fails(query + ["--item", "1", "--nprobe", "4"], "--nprobe applies to FAISS IVF")
    fails(query + ["--vector", "1,2,3"], "dimension 3", "expects 12")
    fails(query + ["--vector", "1,x"], "comma-separated numbers")
    fails(query + ["--vectors", tmp_path / "nope.npy"], "no query file")
    fails(["index", "query", "--index", emb_dir, "--item", "1"], "'annrec.embeddings' artifact, not 'annrec.index'")
    fails(["index", "query", "--index", tmp_path / "missing", "--item", "1"], "no artifact folder")

    # an index folder whose manifest names another backend than its files hold, or an unknown backend
    import shutil

    wrong = tmp_path / "wrong"
    shutil.copytree(hnsw_dir, wrong)
    from annrec.index.storage import snapshot_folder

    snap = snapshot_folder(wrong)
    manifest = json.loads((snap / "manifest.json").read_text())
    (snap / "manifest.json").write_text(json.dumps({**manifest, "backend": "faiss"}))
    fails(["index", "query", "--index", wrong, "--item", "1"], "is corrupt", "rebuild it")
    (snap / "manifest.json").write_text(json.dumps({**manifest, "backend": "annoy"}))
    fails(["index", "query", "--index", wrong, "--item", "1"], "backend 'annoy'")
    (wrong / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    fails(["index", "query", "--index", wrong, "--item", "1"], "newer than")
