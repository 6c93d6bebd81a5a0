#!/usr/bin/env python
"""Served vs in-process vector search on Fashion-MNIST (60,000 x 784, HNSW, k=10) and what the service layer costs.

1. builds (once) an hnswlib index of the Fashion-MNIST training images under ``--model-dir``;
2. measures in-process single-query QPS (``Index.search`` one query at a time, one thread — the
   ANN-Benchmarks protocol) and recall@10 against exact neighbours;
3. starts ``annrec serve`` on 127.0.0.1 with ``--workers`` 1 and 2 and runs ``service/loadtest.py``
   (concurrency 1, 8, 16, 32) against each;
4. prints the figures and writes them as JSON (``--json``).

    python bench/service_loadtest.py --json bench/results/service-loadtest.json

The load generator shares the machine with the server: compare figures taken side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))
from loadtest import read_idx_images  # noqa: E402  (annrec.bench.datasets.read_idx, first n images as float32)

from annrec.bench.algorithms import n_cores  # noqa: E402
from annrec.bench.datasets import FASHION_MNIST_DIR as FMNIST  # noqa: E402
KEY = "bench-read-key-0123456789"
ADMIN = "bench-admin-key-0123456789"


def build(model_dir: Path, M: int, efc: int, ef: int) -> Path:
    from annrec.index import build_index, load_index

    path = model_dir / "fmnist-hnsw"
    if (path / "manifest.json").exists():
        idx = load_index(path)
        if idx.params.get("M") == M and idx.params.get("ef_construction") == efc:
            if idx.params.get("ef") != ef:
                idx.set_query_params(ef=ef)
                idx.save(path)
            return path
    x = read_idx_images(FMNIST / "train-images-idx3-ubyte.gz", 60_000)
    t0 = time.perf_counter()
    idx = build_index(x, np.arange(len(x)), "l2", backend="hnswlib", M=M, ef_construction=efc, ef=ef)
    idx.items = {}
    idx.source = {"dataset": "fashion-mnist-784-euclidean (train)"}
    print(f"built HNSW M={M} efConstruction={efc} over {len(x)} x {x.shape[1]} in {time.perf_counter() - t0:.1f} s")
    idx.save(path)
    return path


def in_process(path: Path, n: int, k: int) -> dict:
    from annrec.bench.groundtruth import brute_force_knn
    from annrec.index import load_index

    idx = load_index(path)
    q = read_idx_images(FMNIST / "t10k-images-idx3-ubyte.gz", n)
    for v in q[:200]:
        idx.search(v, k, threads=1)
    best = None
    for _ in range(3):  # best of 3, like the served figures
        t0, c0 = time.perf_counter(), time.process_time()
        got = [idx.search(v, k, threads=1)[0][0] for v in q]
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or secs < best[0]:
            best = (secs, cpu)
    secs, cpu = best
    x = read_idx_images(FMNIST / "train-images-idx3-ubyte.gz", 60_000)
    truth, _ = brute_force_knn(x, q, k, "l2")
    recall = float(np.mean([len(set(g.tolist()) & set(t.tolist())) / k for g, t in zip(got, truth)]))
    return {"queries": n, "qps_single_thread": round(n / secs, 1), "mean_latency_ms": round(secs / n * 1000, 3),
            "cpu_ms_per_query": round(cpu / n * 1000, 3),
            "recall_at_10": round(recall, 4), "ef": idx.params.get("ef")}


def lock_overhead(path: Path, n: int, k: int, threads: int | None = None) -> dict:
    """Searches per second from ``threads`` threads (default: all cores), bare ``Index.search`` vs under the
    service's RWLock."""
    import threading

    from annrec.index import load_index
    from annrec.service.rwlock import RWLock

    threads = threads or n_cores()
    idx = load_index(path)
    q = read_idx_images(FMNIST / "t10k-images-idx3-ubyte.gz", n)
    lock = RWLock()

    def run(locked: bool) -> float:
        def work(part):
            for v in part:
                if locked:
                    with lock.read():
                        idx.search(v, k, threads=1)
                else:
                    idx.search(v, k, threads=1)

        parts = np.array_split(q, threads)
        ts = [threading.Thread(target=work, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return n / (time.perf_counter() - t0)

    run(False)
    plain, locked = [], []
    for _ in range(3):  # interleaved, so machine noise hits both alike
        plain.append(run(False))
        locked.append(run(True))
    t0 = time.perf_counter()
    for _ in range(100_000):
        with lock.read():
            pass
    per = (time.perf_counter() - t0) / 100_000
    return {"threads": threads, "qps_plain": round(max(plain), 1), "qps_rwlock": round(max(locked), 1),
            "ratio": round(max(locked) / max(plain), 3), "uncontended_read_lock_us": round(per * 1e6, 2)}


def _start(model_dir: Path, workers: int, port: int, extra_env: dict | None = None) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    cmd = [sys.executable, "-c", "from annrec.cli import main; main()", "serve", "--model-dir", str(model_dir),
           "--port", str(port), "--workers", str(workers), "--read-key", KEY, "--admin-key", ADMIN,
           "--log-level", "warning"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    else:
        server.terminate()
        raise RuntimeError("server did not become ready")
    time.sleep(1.0 if workers == 1 else 3.0)  # every worker loaded
    return server


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux /proc)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return total
    return total + sum(_tree_cpu(int(c)) for c in children)


def _load(port: int, args, concurrency: str, name: str, requests: int | None = None,
          duration: float | None = None, server_pid: int | None = None) -> dict:
    """Run service/loadtest.py once per concurrency level; add the CPU time the server and the load generator
    spent per request (machine noise inflates wall-clock figures far more than CPU time)."""
    levels, last = [], None
    for c in concurrency.split(","):
        tries = []
        for rep in range(max(1, getattr(args, "repeats", 1))):
            out = ROOT / "bench" / "cache" / f"service-load-{name}-c{c}-{rep}.json"
            lt = [sys.executable, str(ROOT / "service" / "loadtest.py"), "--url", f"http://127.0.0.1:{port}",
                  "--index", "fmnist-hnsw", "--key", KEY, "--fashion-mnist", str(FMNIST), "--concurrency", c,
                  "--requests", str(requests or args.requests), "--duration", str(duration or args.duration),
                  "--client", args.client, "--body", getattr(args, "body", "json"), "--json", str(out)]
            s0 = _tree_cpu(server_pid) if server_pid else None
            subprocess.run(lt, check=False)
            s1 = _tree_cpu(server_pid) if server_pid else None
            last = json.loads(out.read_text())
            lv = last["levels"][0]
            n = max(lv["requests"] + args_warmup(args) + 1, 1)  # + warm-up requests + GET /v1/indexes/{name}
            if server_pid:
                lv["server_cpu_ms_per_request"] = round((s1 - s0) / n * 1e3, 3)
                lv["projected_rps_on_2_idle_cores"] = round(2000.0 / (lv["server_cpu_ms_per_request"]
                                                                      + lv["client_cpu_ms_per_request"]), 0)
            lv["load_average_1m"] = round(os.getloadavg()[0], 2)
            tries.append(lv)
        # best of the repeats (highest throughput), as ANN-Benchmarks keeps the best run: on a shared machine
        # the other runs measure the neighbours' load as much as the server
        best = dict(max(tries, key=lambda t: t["throughput_rps"]))
        best["repeats"] = [{k: t[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "errors", "load_average_1m")}
                           for t in tries]
        best["errors"] = sum(t["errors"] for t in tries)
        levels.append(best)
    last["levels"] = levels
    return last


def serve_levels(model_dir: Path, port: int, args, name: str, env: dict | None = None, **labels) -> list[dict]:
    """Start one ``annrec serve`` worker over ``model_dir`` (``env``: extra environment), run :func:`_load` at
    every ``args.concurrency`` level, stop it; one row per level (``labels`` first): concurrency, req/s, p50 /
    p99 ms, errors, server CPU ms per request, 1-minute load average."""
    server = _start(model_dir, 1, port, env)
    try:
        res = _load(port, args, args.concurrency, name, server_pid=server.pid)
    finally:
        server.terminate()
        server.wait(60)
    return [{**labels, "concurrency": lv["concurrency"], "rps": lv["throughput_rps"], "p50_ms": lv["p50_ms"],
             "p99_ms": lv["p99_ms"], "errors": lv["errors"],
             "server_cpu_ms_per_request": lv.get("server_cpu_ms_per_request"),
             "load_average_1m": lv["load_average_1m"]} for lv in res["levels"]]


def args_warmup(args) -> int:
    return int(getattr(args, "warmup", 200))


def serve_and_load(model_dir: Path, workers: int, args) -> dict:
    port = 18000 + workers
    server = _start(model_dir, workers, port)
    try:
        return _load(port, args, args.concurrency, f"w{workers}-{args.client}", server_pid=server.pid)
    finally:
        server.terminate()
        server.wait(30)


def reads_during_writes(model_dir: Path, args, every_s: float = 0.5) -> dict:
    """Search latency at concurrency 8 with and without one upsert every ``every_s`` seconds (persist=async).

    Works on a copy of the index folder, so the benchmark's index stays as built.
    """
    import shutil
    import threading

    import httpx

    copy = ROOT / "bench" / "cache" / "service-fmnist-writes"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model_dir, copy)
    port = 18010
    server = _start(copy, 1, port, {"ANNREC_PERSIST": "async", "ANNREC_SAVE_DELAY_S": "5"})
    try:
        args = argparse.Namespace(**{**vars(args), "repeats": 1})  # one run each: a best-of would hide the stalls
        base = _load(port, args, "8", "rw-base", duration=8)["levels"][0]
        stop = threading.Event()
        lat: list[float] = []

        def writer():
            rng = np.random.default_rng(0)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                              headers={"X-API-Key": ADMIN}) as c:
                i = 0
                while not stop.is_set():
                    v = (rng.random(784) * 255).round().tolist()
                    t0 = time.perf_counter()
                    r = c.put("/v1/indexes/fmnist-hnsw/items", json={"items": [{"id": 100_000 + i, "vector": v}]})
                    r.raise_for_status()
                    lat.append(time.perf_counter() - t0)
                    i += 1
                    stop.wait(every_s)

        t = threading.Thread(target=writer)
        t.start()
        try:
            during = _load(port, args, "8", "rw-writes", duration=8)["levels"][0]
        finally:
            stop.set()
            t.join(60)
        return {"concurrency": 8, "upsert_every_s": every_s, "upserts": len(lat),
                "upsert_p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1) if lat else None,
                "reads_without_writes": {k: base[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "errors")},
                "reads_during_writes": {k: during[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "errors")}}
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(copy, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=ROOT / "index" / "built" / "service-fmnist")
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef", type=int, default=32)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--concurrency", default="1,8,16,32")
    p.add_argument("--requests", type=int, default=8000)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--client", choices=("httpx", "raw"), default="raw")
    p.add_argument("--repeats", type=int, default=3, help="runs per level; the best is reported, all are kept")
    p.add_argument("--in-process-queries", type=int, default=2000)
    p.add_argument("--writes", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure search latency while upserts run")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    path = build(args.model_dir, args.M, args.ef_construction, args.ef)
    ip = in_process(path, args.in_process_queries, 10)
    print(f"in-process: {ip['qps_single_thread']} QPS single-thread (one query at a time), recall@10 "
          f"{ip['recall_at_10']} at ef={ip['ef']}")
    lo = lock_overhead(path, args.in_process_queries, 10)
    print(f"readers-writer lock: {lo['qps_rwlock']} vs {lo['qps_plain']} QPS bare with {lo['threads']} threads "
          f"(ratio {lo['ratio']}); {lo['uncontended_read_lock_us']} us per uncontended read lock")
    runs = {}
    for w in [int(x) for x in args.workers.split(",")]:
        print(f"--- annrec serve --workers {w}")
        runs[w] = serve_and_load(args.model_dir, w, args)
        print(f"{'conc':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'server CPU ms/req':>18} "
              f"{'client CPU ms/req':>18} {'projected req/s, 2 idle cores':>30} {'load 1m':>8}")
        for lv in runs[w]["levels"]:
            print(f"{lv['concurrency']:>5} {lv['throughput_rps']:>8.1f} {lv['p50_ms']:>7.2f} {lv['p99_ms']:>7.2f} "
                  f"{lv['errors']:>6} {lv.get('server_cpu_ms_per_request', float('nan')):>18.3f} "
                  f"{lv['client_cpu_ms_per_request']:>18.3f} {lv.get('projected_rps_on_2_idle_cores', 0):>30.0f} "
                  f"{lv['load_average_1m']:>8.2f}")
        c1 = next((lv for lv in runs[w]["levels"] if lv["concurrency"] == 1), None)
        if c1:
            c1["ratio_to_in_process_qps"] = round(c1["throughput_rps"] / ip["qps_single_thread"], 3)
            c1["cpu_ratio_to_in_process"] = round(ip["cpu_ms_per_query"] / (c1["server_cpu_ms_per_request"]
                                                                          + c1["client_cpu_ms_per_request"]), 3)
            print(f"served/in-process single-query QPS ratio (concurrency 1): {c1['ratio_to_in_process_qps']:.3f} "
                  f"measured; {c1['cpu_ratio_to_in_process']:.3f} in CPU time per query (in-process "
                  f"{ip['cpu_ms_per_query']} ms vs served {c1['server_cpu_ms_per_request']} + client "
                  f"{c1['client_cpu_ms_per_request']} ms)")
    rw = None
    if args.writes:
        rw = reads_during_writes(args.model_dir, args)
        print(f"reads at concurrency 8: {rw['reads_without_writes']} without writes, {rw['reads_during_writes']} "
              f"with one upsert every {rw['upsert_every_s']} s ({rw['upserts']} upserts, p50 {rw['upsert_p50_ms']} ms)")
    figures = {"in_process": ip, "rwlock": lo, "reads_during_writes": rw, "served": {str(w): r for w, r in runs.items()},
               "ratio_served_c1_over_in_process": {str(w): round(next(lv["throughput_rps"] for lv in r["levels"]
                                                                      if lv["concurrency"] == 1)
                                                                 / ip["qps_single_thread"], 3)
                                                   for w, r in runs.items()
                                                   if any(lv["concurrency"] == 1 for lv in r["levels"])},
               "load_average_end": os.getloadavg(), "client": args.client}
    if args.json:
        from annrec._io import write_json

        write_json(args.json, figures)
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
