#!/usr/bin/env python
"""JSON and binary (application/octet-stream float32) search bodies side by side: one ``annrec serve`` worker,
Fashion-MNIST 60,000 x 784 hnswlib (the index ``bench/service_loadtest.py`` builds: M=16, efConstruction=100,
ef=32), k = 10, no metadata.

Per round the server starts once and ``service/loadtest.py`` (raw keep-alive client) runs each body format at
each concurrency, the formats alternating, so the machine's load weighs on both alike: requests/s, p50/p99
latency and the server's CPU per request (``/proc``).

    python bench/service_binary.py --json bench/results/service-binary.json
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from service_loadtest import _load, _start, build  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=ROOT / "index" / "built" / "service-fmnist")
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--requests", type=int, default=6000)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.repeats, args.warmup, args.client = 1, 200, "raw"
    build(args.model_dir, 16, 100, 32)
    out = {"benchmark": "service_binary", "index": "fashion-mnist 60000x784 hnswlib M16 efC100 ef32, k=10",
           "load_average_start": os.getloadavg(), "runs": []}
    port = 18200
    server = _start(args.model_dir, 1, port, {"ANNREC_SEARCH_BATCHING": "true"})
    try:
        for rnd in range(args.rounds):
            for body in ("json", "binary"):
                a = copy.copy(args)
                a.body = body
                res = _load(port, a, args.concurrency, f"body-{body}-{rnd}", server_pid=server.pid)
                for lv in res["levels"]:
                    row = {"round": rnd, "body": body, "concurrency": lv["concurrency"], "rps": lv["throughput_rps"],
                           "p50_ms": lv["p50_ms"], "p99_ms": lv["p99_ms"], "errors": lv["errors"],
                           "server_cpu_ms_per_request": lv.get("server_cpu_ms_per_request"),
                           "load_average_1m": lv["load_average_1m"]}
                    out["runs"].append(row)
                    print(f"round {rnd} body={body:6s} c={row['concurrency']:3d}  {row['rps']:8.1f} req/s  p50 "
                          f"{row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  server CPU "
                          f"{row['server_cpu_ms_per_request']} ms/req  errors {row['errors']}", flush=True)
    finally:
        server.terminate()
        server.wait(60)
    out["load_average_end"] = os.getloadavg()
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
