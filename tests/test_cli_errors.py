"""The command line's error paths through the installed ``annrec`` console script: exit codes, one-line
messages, nothing deleted, nothing half-written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from annrec.embeddings import Embeddings

ANNREC = shutil.which("annrec", path=str(Path(sys.executable).parent)) or shutil.which("annrec")
pytestmark = pytest.mark.skipif(ANNREC is None, reason="the annrec console script is not installed")


def run(*args, cwd=None, timeout=120):
    p = subprocess.run([ANNREC, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                       env={**os.environ, "COLUMNS": "200"})
    return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("emb") / "vecs"
    rng = np.random.default_rng(0)
    Embeddings(rng.normal(size=(200, 8)).astype(np.float32), np.arange(200), "ip").save(path)
    return path


@pytest.mark.parametrize("args, needle", [
    (["quickstrat"], "No such command 'quickstrat'"),
    (["quickstart", "--epoch", "3"], "No such option: --epoch"),
    (["quickstart", "--dim", "abc"], "Invalid value for '--dim'"),
    ([], "Usage"),
])
def test_usage_errors_exit_2_with_a_short_message(args, needle):
    code, out = run(*args)
    assert code == 2, out
    assert needle in out and "Traceback" not in out and len(out.splitlines()) < 40


def test_out_never_deletes_a_users_folder(emb_dir, tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("precious")
    code, out = run("index", "build", "--embeddings", emb_dir, "--backend", "faiss", "--out", thesis)
    assert code == 2 and "not an annrec index artifact" in out and "--force" in out, out
    assert (thesis / "chapter1.tex").read_text() == "precious"
    # an Embeddings folder is not an index either
    code, out = run("index", "build", "--embeddings", emb_dir, "--backend", "faiss", "--out", emb_dir)
    assert code == 2 and (emb_dir / "vectors.npy").exists()
    # --force moves the folder aside, never deletes it
    code, out = run("index", "build", "--embeddings", emb_dir, "--backend", "faiss", "--out", thesis, "--force")
    assert code == 0, out
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("thesis.old-")]
    assert len(aside) == 1 and (aside[0] / "chapter1.tex").read_text() == "precious"
    assert (thesis / "manifest.json").exists()
    # a previous index is replaced without --force
    code, out = run("index", "build", "--embeddings", emb_dir, "--backend", "hnswlib", "--out", thesis)
    assert code == 0 and '"hnswlib"' in (thesis / "manifest.json").read_text()


def test_out_on_a_file_or_the_current_folder_is_refused(emb_dir, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    code, out = run("index", "build", "--embeddings", emb_dir, "--backend", "faiss", "--out", f)
    assert code == 2 and "is a file" in out and f.read_text() == "keep me"
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "data.csv").write_text("a,b")
    code, out = run("index", "build", "--embeddings", emb_dir, "--backend", "faiss", "--out", ".",
                    cwd=tmp_path / "work")
    assert code == 2 and "current folder" in out and (tmp_path / "work" / "data.csv").exists()


def test_json_path_is_checked_before_the_work(emb_dir, tmp_path):
    out = tmp_path / "idx"
    code, text = run("index", "build", "--embeddings", emb_dir, "--backend", "faiss", "--out", out,
                     "--json", tmp_path)
    assert code == 2 and "is a folder" in text and not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, text = run("index", "build", "--embeddings", emb_dir, "--backend", "faiss", "--out", out,
                     "--json", blocker / "r.json")
    assert code == 2 and "error:" in text and "Traceback" not in text and not out.exists()


def test_ctrl_c_exits_130_and_leaves_nothing_half_written(tmp_path):
    from _mf_fixtures import DATA_DIR, have_movielens

    if not have_movielens():
        pytest.skip("ml-latest-small not found (set ANNREC_DATA_DIR)")
    out = tmp_path / "mf"
    p = subprocess.Popen([ANNREC, "train", "mf", "--data-dir", str(DATA_DIR), "--out", str(out), "--epochs", "50"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(6)  # loading and training have started
    p.send_signal(signal.SIGINT)
    text, _ = p.communicate(timeout=60)
    assert p.returncode == 130, text
    assert "interrupted" in text and "Traceback" not in text
    assert not out.exists() and not [q for q in tmp_path.iterdir() if ".tmp-" in q.name]


def test_serve_on_a_busy_port_is_one_error_line(tmp_path, emb_dir):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = run("serve", "--model-dir", emb_dir.parent, "--port", port, "--insecure-no-auth", timeout=60)
    assert code == 2, out
    assert f"cannot listen on 127.0.0.1:{port}" in out and "Traceback" not in out
