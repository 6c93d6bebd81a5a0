#!/usr/bin/env python
"""The memory a served index adds to one ``annrec serve`` worker: RSS with a Fashion-MNIST 60,000 x 784 model
(Embeddings + the hnswlib index built from them, M=16, efConstruction=100) minus RSS with the same model cut to
100 items, after start-up and after 300 searches (and, with ``--write``, after one upsert), against the size of
hnswlib's own index file.

    python bench/service_memory.py --json bench/results/service-memory.json
    PYTHONPATH=<older checkout> python bench/service_memory.py ...   # the same on another release

RSS is the server process's ``VmRSS`` (anonymous + file-backed pages it touched); ``RssAnon`` is reported too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from service_loadtest import ADMIN, FMNIST, KEY, _start, read_idx_images  # noqa: E402


def _model(folder: Path, n: int) -> Path:
    from annrec.embeddings import Embeddings
    from annrec.index import build_index

    if (folder / "fmnist" / "manifest.json").exists():
        return folder
    x = read_idx_images(FMNIST / "train-images-idx3-ubyte.gz", n)
    emb = Embeddings(x, np.arange(n), "l2", manifest={"trainer": "import", "data_hash": f"fmnist-{n}"})
    emb.save(folder / "fmnist")
    idx = build_index(x, np.arange(n), "l2", backend="hnswlib", M=16, ef_construction=100, ef=32)
    idx.source = {"embeddings_name": "fmnist", "data_hash": f"fmnist-{n}"}  # paired by name: the copy's own
    idx.save(folder / "fmnist-hnsw")
    return folder


def _rss(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _measure(model_dir: Path, port: int, write: bool) -> dict:
    import httpx

    server = _start(model_dir, 1, port)
    try:
        out = {"ready": _rss(server.pid)}
        q = read_idx_images(FMNIST / "t10k-images-idx3-ubyte.gz", 300)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=30) as c:
            for v in q:
                r = c.post("/v1/indexes/fmnist-hnsw/search", json={"vector": v.tolist(), "k": 10,
                                                                   "include_metadata": False})
                r.raise_for_status()
            out["searched"] = _rss(server.pid)
            if write:
                r = c.put("/v1/indexes/fmnist-hnsw/items", headers={"X-API-Key": ADMIN},
                          json={"items": [{"id": 10**7, "vector": q[0].tolist()}]})
                r.raise_for_status()
                time.sleep(1.0)
                out["written"] = _rss(server.pid)
        return out
    finally:
        server.terminate()
        server.wait(60)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "cache" / "service-memory")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    full = _model(args.cache / "full", 60_000)
    small = _model(args.cache / "small", 100)
    import shutil
    import tempfile

    res = {}
    for name, src in (("small", small), ("full", full)):
        with tempfile.TemporaryDirectory() as tmp:  # a fresh copy: no log entries from an earlier run
            dst = Path(tmp) / "m"
            shutil.copytree(src, dst)
            res[name] = _measure(dst, 18400 + len(res), args.write)
    hnsw_file = next((full / "fmnist-hnsw").rglob("index.hnsw")).stat().st_size
    out = {"benchmark": "service_memory", "load_average": os.getloadavg(), "hnswlib_file_bytes": hnsw_file,
           "rss": res}
    for stage in res["full"]:
        added = res["full"][stage]["VmRSS"] - res["small"][stage]["VmRSS"]
        out[f"added_{stage}_bytes"] = added
        out[f"added_{stage}_over_file"] = round(added / hnsw_file, 3)
        print(f"{stage:9s} RSS full {res['full'][stage]['VmRSS'] / 2**20:7.1f} MiB, small "
              f"{res['small'][stage]['VmRSS'] / 2**20:6.1f} MiB: added {added / 2**20:6.1f} MiB = "
              f"{added / hnsw_file:.2f}x hnswlib's file ({hnsw_file / 2**20:.1f} MiB)")
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
