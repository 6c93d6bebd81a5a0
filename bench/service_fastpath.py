"""Is a search fast path beside the FastAPI route worth its code? Side by side on real uvicorn servers.

Two servers on 127.0.0.1 serve the same HNSW index (synthetic, 5,000 x 784, M=16, ef=32):

* ``route`` (``fast_search: false``): ``POST /v1/indexes/{name}/search`` through Starlette routing,
  dependency injection, FastAPI's body handling and response serialisation;
* ``fast`` (``fast_search: true``, the default): the same request answered by
  :mod:`annrec.service.fastpath` before routing, with the route's own parsing, checks, search and
  response model.

One keep-alive client sends the same single-vector searches (k=10) to both, interleaved in rounds, a
bounded number of requests each. Reported: the server process's CPU time per request (from
``/proc/<pid>/stat``: robust to other load on the machine) and the client's median latency. Also, in
this process, the per-request cost of building and serialising the response model against ``orjson``.

    python bench/service_fastpath.py --requests 1500 --json bench/results/service-fastpath.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KEY = "bench-read-key-0123456789"
DIM, N_ITEMS = 784, 5000

SERVER = r'''
import sys, uvicorn
from annrec.service import create_app, load_settings

settings = load_settings(model_dir=sys.argv[1], read_key=sys.argv[3], fast_search=sys.argv[4] == "fast")
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False,
            lifespan="on")
'''


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _model_dir(root: Path) -> Path:
    from annrec.index import build_index

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    idx = build_index(x, np.arange(N_ITEMS), "l2", backend="hnswlib", M=16, ef_construction=100, ef=32)
    idx.save(root / "synth-hnsw")
    return root


def _start(model_dir: Path, mode: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model_dir), str(port), KEY, mode], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"{mode} server did not start")


def _round(client, proc: subprocess.Popen, bodies: list[bytes]) -> tuple[float, list[float]]:
    lat = []
    cpu0 = _cpu_seconds(proc.pid)
    for b in bodies:
        t0 = time.perf_counter()
        r = client.post("/v1/indexes/synth-hnsw/search", content=b)
        lat.append(time.perf_counter() - t0)
        if r.status_code != 200 or len(r.json()["hits"]) != 10:
            raise RuntimeError(f"bad answer: {r.status_code} {r.text[:200]}")
    return _cpu_seconds(proc.pid) - cpu0, lat


def _serialisation_cost(n: int = 2000) -> dict[str, float]:
    """µs per response: the pydantic response model (build + model_dump_json) against orjson of dicts."""
    import orjson

    from annrec.recommend import Recommendation
    from annrec.service import schemas as S
    from annrec.service.routers.indexes import hit_list

    hits = [Recommendation(i, 0.5 + i, {"title": f"Movie {i}", "genres": ["Drama"]}) for i in range(10)]
    t0 = time.perf_counter()
    for _ in range(n):
        S.SearchResponse(index="x", k=10, hits=hit_list(hits, True)).model_dump_json()
    model = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(n):
        orjson.dumps({"index": "x", "k": 10, "hits": [h.to_dict(True) for h in hits]})
    raw = (time.perf_counter() - t0) / n * 1e6
    return {"response_model_us": round(model, 1), "orjson_dicts_us": round(raw, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1500, help="requests per server (bounded)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import httpx

    rng = np.random.default_rng(1)
    per_round = max(1, args.requests // args.rounds)
    bodies = [json.dumps({"vector": rng.normal(size=DIM).round(5).tolist(), "k": 10}).encode()
              for _ in range(per_round)]
    out: dict = {"dim": DIM, "items": N_ITEMS, "requests_per_server": per_round * args.rounds,
                 "load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _model_dir(Path(tmp))
        servers = {mode: _start(model_dir, mode) for mode in ("route", "fast")}
        clients = {mode: httpx.Client(base_url=url, headers={"X-API-Key": KEY, "Content-Type": "application/json"},
                                      timeout=30) for mode, (_, url) in servers.items()}
        cpu = {m: 0.0 for m in servers}
        lat: dict[str, list[float]] = {m: [] for m in servers}
        try:
            for m in servers:  # warm-up
                _round(clients[m], servers[m][0], bodies[:50])
            for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
                for m in servers:
                    c, lt = _round(clients[m], servers[m][0], bodies)
                    cpu[m] += c
                    lat[m] += lt
        finally:
            for m, (proc, _) in servers.items():
                clients[m].close()
                proc.terminate()
                proc.wait(30)
    n = per_round * args.rounds
    for m in servers:
        out[m] = {"server_cpu_us_per_request": round(cpu[m] / n * 1e6, 1),
                  "client_p50_ms": round(float(np.median(lat[m])) * 1e3, 3)}
    out["fast_saves_cpu_pct"] = round(100 * (1 - out["fast"]["server_cpu_us_per_request"]
                                             / out["route"]["server_cpu_us_per_request"]), 1)
    out["serialisation"] = _serialisation_cost()
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
