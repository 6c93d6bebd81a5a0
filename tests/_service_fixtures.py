"""Fixtures of the service tests: small artifact folders, a fake query encoder, a real uvicorn server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from annrec.embeddings import Embeddings
from annrec.index import build_index

READ_KEY = "read-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
RH = {"X-API-Key": READ_KEY}
AH = {"X-API-Key": ADMIN_KEY}

N_ITEMS, N_USERS, DIM = 320, 40, 16  # 320 >= 39 x 8: enough to train IVF8 without a FAISS warning


def make_model_dir(root: Path, *, with_text: bool = True, with_sequence: bool = True) -> Path:
    """A model dir like `annrec quickstart` writes, on synthetic data.

    * ``mf`` (embeddings, trainer "mf", metric ip, user vectors, seen CSR, titles) + ``mf-hnsw``
      (hnswlib) and ``mf-ivf`` (FAISS IVF) built from it with ``source`` pointing back;
    * ``words`` (trainer "text", cosine, string ids) + ``words-flat`` (FAISS Flat);
    * ``seq`` (trainer "sequence", cosine) with no index: served as an in-memory Flat index.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    items = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    users = rng.normal(size=(N_USERS, DIM)).astype(np.float32)
    ids = np.arange(1000, 1000 + N_ITEMS)
    seen = sp.random(N_USERS, N_ITEMS, density=0.05, random_state=0, format="csr")
    seen.data[:] = 1
    meta = {int(i): {"title": f"Movie {i}", "genres": ["Drama"] if i % 2 else ["Comedy"]} for i in ids}
    emb = Embeddings(items, ids, "ip", queries=users, query_ids=np.arange(1, N_USERS + 1), items=meta,
                     manifest={"trainer": "mf", "params": {"factors": DIM}}, seen=seen)
    emb.save(root / "mf")
    src = {"embeddings": str((root / "mf").resolve()), "embeddings_name": "mf"}
    hnsw = build_index(items, ids, "ip", backend="hnswlib", M=16, ef_construction=100, ef=64)
    hnsw.source = src
    hnsw.save(root / "mf-hnsw")
    ivf = build_index(items, ids, "ip", backend="faiss", factory="IVF8,Flat", nprobe=8)
    ivf.source = src
    ivf.save(root / "mf-ivf")
    if with_text:
        words = [f"w{i}" for i in range(50)]
        wv = rng.normal(size=(50, 8)).astype(np.float32)
        Embeddings(wv, words, "cosine", items={w: {"word": w} for w in words},
                   manifest={"trainer": "text"}).save(root / "words")
        flat = build_index(wv, words, "cosine", backend="faiss", factory="Flat")
        flat.source = {"embeddings": str((root / "words").resolve()), "embeddings_name": "words"}
        flat.save(root / "words-flat")
    if with_sequence:
        sv = rng.normal(size=(60, 8)).astype(np.float32)
        Embeddings(sv, np.arange(60), "cosine", manifest={"trainer": "sequence"}).save(root / "seq")
    return root


class FakeTextEncoder:
    """Deterministic text -> vector (hash seeded), in the text encoder contract."""

    def __init__(self, emb: Embeddings) -> None:
        self.dim = emb.dim

    def encode(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(abs(hash(t)) % (2**32))
            out.append(rng.normal(size=self.dim))
        return np.asarray(out, dtype=np.float32)


class FakeSequenceEncoder:
    """Mean of the item vectors of one sequence, in the contract of annrec.train.sequence.SequenceQueryEncoder:
    ``encode(item_ids, timestamps, now) -> (vector (dim,), warnings)``, ``rows(item_ids) -> (rows, positions,
    unknown ids)``; unknown ids -> UnknownIdError."""

    def __init__(self, emb: Embeddings) -> None:
        self.emb = emb

    def rows(self, item_ids):
        rows = [self.emb.row_of(i) for i in item_ids]
        return np.asarray(rows, dtype=np.int64), list(range(len(rows))), []

    def encode(self, item_ids, timestamps=None, now=None):
        rows = self.rows(item_ids)[0]
        warnings = [] if timestamps is not None else ["no timestamps: every event is taken as recent"]
        return self.emb.vectors[rows].mean(0).astype(np.float32), warnings


def register_fake_encoders() -> None:
    from annrec.service import register_query_encoder

    register_query_encoder("text", FakeTextEncoder)
    register_query_encoder("sequence", FakeSequenceEncoder)


def unregister_fake_encoders() -> None:
    from annrec.service import register_query_encoder

    register_query_encoder("text", None)
    register_query_encoder("sequence", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``annrec serve`` in a subprocess on 127.0.0.1 (a real uvicorn), waited for through /health."""

    def __init__(self, model_dir: Path, *extra: str, env: dict | None = None, keys: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-c", "from annrec.cli import main; main()", "serve", "--model-dir", str(model_dir),
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *extra]
        if keys:
            args += ["--read-key", READ_KEY, "--admin-key", ADMIN_KEY]
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300", **(env or {})}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True)
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.output))
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(self.url + "/ready", timeout=1.0)
                if r.status_code == 200 and r.json().get("status") == "ready":  # annrec's answer, not another's
                    return self
            time.sleep(0.1)
        raise TimeoutError("server did not become ready:\n" + "".join(self.output))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        return " ".join("".join(self.output).split())  # one line: rich may wrap long messages

    def __enter__(self) -> ServerProcess:
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()


class ThreadServer:
    """A real uvicorn server on 127.0.0.1 running ``app`` in a thread of this process (encoders registered in
    this process apply), waited for through /ready."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/ready", timeout=1.0).status_code == 200:
                    return self
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn thread exited")
            time.sleep(0.05)
        raise TimeoutError("server did not become ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
