#!/usr/bin/env python
"""Dynamic batching on and off, side by side: one ``annrec serve`` worker, Fashion-MNIST 60,000 x 784 hnswlib.

Starts the server twice per round (``search_batching`` false, then true; ``--rounds`` rounds, interleaved so
the machine's load weighs on both alike) and runs ``service/loadtest.py`` (raw keep-alive client) at each
concurrency: requests/s, p50/p99 latency and the server's CPU per request (``/proc``, the server and its
children). The index is the one ``bench/service_loadtest.py`` builds (M=16, efConstruction=100, ef=32).

    python bench/service_batching.py --json bench/results/service-batching.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from service_loadtest import build, serve_levels  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=ROOT / "index" / "built" / "service-fmnist")
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--requests", type=int, default=8000)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--client", choices=("httpx", "raw"), default="raw")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.repeats, args.warmup = 1, 200
    build(args.model_dir, 16, 100, 32)
    out = {"benchmark": "service_batching", "index": "fashion-mnist 60000x784 hnswlib M16 efC100 ef32, k=10",
           "load_average_start": os.getloadavg(), "runs": []}
    for rnd in range(args.rounds):
        for batching in (False, True):
            rows = serve_levels(args.model_dir, 18100 + 2 * rnd + int(batching), args, f"batching-{batching}-{rnd}",
                                {"ANNREC_SEARCH_BATCHING": str(batching).lower()}, round=rnd, batching=batching)
            for row in rows:
                out["runs"].append(row)
                print(f"round {rnd} batching={str(batching):5s} c={row['concurrency']:3d}  {row['rps']:8.1f} req/s  "
                      f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  server CPU "
                      f"{row['server_cpu_ms_per_request']} ms/req  errors {row['errors']}")
    out["load_average_end"] = os.getloadavg()
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
