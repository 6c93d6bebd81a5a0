#!/usr/bin/env python
"""Served latency through ``annrec serve --ray`` against the unsharded server (Fashion-MNIST, one worker each).

Builds (once, under ``index/built/``) the Fashion-MNIST training images as one hnswlib index and as a
2-shard index (M=16, efConstruction=100, ef=32, ``id % 2`` partition), both served under the name
``fmnist-hnsw``; serves each with one worker — the sharded one with its shards in Ray actors on a local Ray
(``ANNREC_SHARD_BACKEND=ray``) — and runs ``service/loadtest.py`` (raw client) at each concurrency: p50 / p99
latency, requests/s and the server's CPU per request (the Ray processes are not the server's children,
so their CPU is not in that figure; the load average is).

    python bench/ray_serve.py --json bench/results/ray_serve.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from service_loadtest import FMNIST, build, read_idx_images, serve_levels  # noqa: E402


def build_sharded_dir(model_dir: Path, shards: int) -> Path:
    from annrec.index.sharded import build_sharded

    path = model_dir / "fmnist-hnsw"
    if (path / "manifest.json").exists():
        return path
    x = read_idx_images(FMNIST / "train-images-idx3-ubyte.gz", 60_000)
    build_sharded(x, np.arange(len(x)), "l2", path, shards=shards, backend="hnswlib", M=16, ef_construction=100,
                  ef=32, source={"dataset": "fashion-mnist-784-euclidean (train)"})
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--client", choices=("httpx", "raw"), default="raw")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.repeats, args.warmup = 1, 200
    plain = ROOT / "index" / "built" / "service-fmnist"
    sharded = ROOT / "index" / "built" / f"service-fmnist-{args.shards}shards"
    build(plain, 16, 100, 32)
    build_sharded_dir(sharded, args.shards)
    out = {"benchmark": "ray_serve", "shards": args.shards, "load_average_start": os.getloadavg(), "runs": []}
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    try:
        for label, model_dir, env in (("one index", plain, {}),
                                      (f"{args.shards} shards on Ray", sharded,
                                       {"ANNREC_SHARD_BACKEND": "ray", "ANNREC_RAY_TMP": ray_tmp})):
            for row in serve_levels(model_dir, 18200 + len(out["runs"]), args, label.replace(" ", "-"), env,
                                    configuration=label):
                out["runs"].append(row)
                print(f"{label:18s} c={row['concurrency']:3d}  {row['rps']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                      f"p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    by = {(r["configuration"], r["concurrency"]): r for r in out["runs"]}
    for c in [int(x) for x in args.concurrency.split(",")]:
        a, b = by.get(("one index", c)), by.get((f"{args.shards} shards on Ray", c))
        if a and b:
            out[f"p50_ratio_c{c}"] = round(b["p50_ms"] / a["p50_ms"], 2)
            print(f"c={c}: p50 through --ray / one index = {out[f'p50_ratio_c{c}']}")
    out["load_average_end"] = os.getloadavg()
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
