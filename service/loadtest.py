#!/usr/bin/env python
"""Load test of ``annrec serve``: throughput and p50/p99 latency of vector search at several concurrencies.

Loopback only (127.0.0.0/8, ::1, localhost) and bounded: at most ``--requests`` requests and
``--duration`` seconds per concurrency level, after a short warm-up. Each of C workers keeps one
request in flight on its own keep-alive connection (a closed loop), so C is the number of concurrent
requests. Query bodies are serialised before the clock starts, so the client spends its CPU on HTTP
only — it shares the machine with the server.

Clients: ``httpx`` (default; ``httpx.AsyncClient``) or ``raw`` (a minimal HTTP/1.1 keep-alive client on
asyncio streams, ~10x less client CPU per request: use it when client and server share few cores).

    python service/loadtest.py --url http://127.0.0.1:8000 --index fmnist-hnsw --key $KEY \\
        --fashion-mnist /usr/share/datasets/fashion-mnist --concurrency 1,8,16,32 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


def check_loopback(url: str) -> tuple[str, int]:
    """Return (host, port) of ``url``; exit unless every address it resolves to is loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        sys.exit(f"--url must be http://HOST:PORT on this machine; got {url!r}")
    try:
        port = parts.port or 80
    except ValueError as e:
        sys.exit(f"--url {url!r}: {e}")
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        sys.exit(f"cannot resolve {parts.hostname}: {e}")
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            sys.exit(f"refusing to load-test {parts.hostname} ({info[4][0]}): only loopback addresses are allowed")
    return parts.hostname, port


def read_idx_images(path: Path, limit: int) -> np.ndarray:
    """The first ``limit`` Fashion-MNIST/MNIST IDX3 images (gzip or plain) as float32 ``(n, 784)``.

    Reads with :func:`annrec.bench.datasets.read_idx` (which raises DataNotFoundError / DataError).
    """
    from annrec.bench.datasets import read_idx

    x = read_idx(path)[:limit]
    return x.reshape(len(x), -1).astype(np.float32)


def percentile(lat: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(lat), p)) * 1000.0 if lat else float("nan")


class RawClient:
    """One HTTP/1.1 keep-alive connection on asyncio streams (enough for JSON request/response)."""

    def __init__(self, host: str, port: int, headers: dict[str, str],
                 content_type: str = "application/json") -> None:
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.content_type = content_type
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        req = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.head}"
               f"Content-Type: {self.content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self.writer.write(req)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def run_level(args, host, port, path, bodies: list[bytes], concurrency: int) -> dict:
    headers = {"X-API-Key": args.key} if args.key else {}
    latencies: list[float] = []
    errors = 0
    error_samples: list[str] = []
    sent = 0
    budget = args.requests
    warm = args.warmup

    if args.client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.AsyncClient(base_url=f"http://{host}:{port}", headers={**headers,
                                   "Content-Type": content_type(args)}, limits=limits, timeout=30.0)

        async def call(i, body):
            r = await client.post(path, content=body)
            return r.status_code, r.content

        async def close_all():
            await client.aclose()
    else:
        conns = [RawClient(host, port, headers, content_type(args)) for _ in range(concurrency)]

        async def call(i, body):
            return await conns[i].request("POST", path, body)

        async def close_all():
            for c in conns:
                await c.close()

    # warm-up: every connection opened, caches warm
    async def warm_worker(i):
        for j in range(max(1, warm // concurrency)):
            await call(i, bodies[(i + j) % len(bodies)])

    await asyncio.gather(*(warm_worker(i) for i in range(concurrency)))
    deadline = time.perf_counter() + args.duration

    async def worker(i):
        nonlocal sent, errors
        while sent < budget and time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            try:
                status, data = await call(i, body)
            except Exception as e:  # noqa: BLE001 - counted as an error
                errors += 1
                if len(error_samples) < 3:
                    error_samples.append(f"{type(e).__name__}: {e}")
                continue
            dt = time.perf_counter() - t0
            if status != 200:
                errors += 1
                if len(error_samples) < 3:
                    error_samples.append(f"HTTP {status}: {data[:200]!r}")
            else:
                latencies.append(dt)

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    await close_all()
    done = len(latencies)
    return {"concurrency": concurrency, "requests": done + errors, "ok": done, "errors": errors,
            "seconds": round(elapsed, 3), "throughput_rps": round(done / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": round(percentile(latencies, 50), 3), "p90_ms": round(percentile(latencies, 90), 3),
            "p99_ms": round(percentile(latencies, 99), 3),
            "client_cpu_ms_per_request": round(client_cpu / max(done + errors, 1) * 1000, 3), "max_ms": round(max(latencies) * 1000, 3) if latencies
            else None, "error_samples": error_samples}


def content_type(args) -> str:
    """``application/json``, or ``application/octet-stream`` for ``--body binary`` (raw float32 rows)."""
    return "application/octet-stream" if args.body == "binary" else "application/json"


def search_path(args) -> str:
    """The search URL; a binary body carries k, ef and include_metadata in the query string."""
    path = f"/v1/indexes/{args.index}/search"
    if args.body != "binary":
        return path
    query = [f"k={args.k}"] + ([f"ef={args.ef}"] if args.ef else []) + ([] if args.metadata else
                                                                          ["include_metadata=false"])
    return path + "?" + "&".join(query)


def build_bodies(args, dim: int) -> list[bytes]:
    if args.fashion_mnist:
        x = read_idx_images(Path(args.fashion_mnist) / "t10k-images-idx3-ubyte.gz", args.n_queries)
        if x.shape[1] != dim:
            sys.exit(f"Fashion-MNIST vectors have dim {x.shape[1]} but index {args.index} has dim {dim}")
    else:
        x = np.random.default_rng(0).normal(size=(args.n_queries, dim)).astype(np.float32)
    if args.body == "binary":
        return [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in x]
    out = []
    for v in x:
        body = {"vector": [float(f) for f in v], "k": args.k}
        if args.ef:
            body["ef"] = args.ef
        if not args.metadata:
            body["include_metadata"] = False
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--index", required=True)
    p.add_argument("--key", default=os.environ.get("ANNREC_READ_KEY"), help="read key (default $ANNREC_READ_KEY)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ef", type=int, default=None)
    p.add_argument("--metadata", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--concurrency", default="1,8,16,32", help="comma-separated levels")
    p.add_argument("--requests", type=int, default=5000, help="most requests per level")
    p.add_argument("--duration", type=float, default=10.0, help="most seconds per level")
    p.add_argument("--warmup", type=int, default=200, help="warm-up requests per level")
    p.add_argument("--n-queries", type=int, default=1000, help="distinct query bodies, cycled")
    p.add_argument("--fashion-mnist", default=None, help="folder with t10k-images-idx3-ubyte.gz (else random)")
    p.add_argument("--client", choices=("httpx", "raw"), default="httpx")
    p.add_argument("--body", choices=("json", "binary"), default="json", help="JSON bodies, or the query vector "
                   "as raw float32 (Content-Type: application/octet-stream; k, ef in the query string)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    host, port = check_loopback(args.url)
    if args.requests <= 0 or args.duration <= 0:
        sys.exit("--requests and --duration must be positive (the test is bounded)")
    import httpx

    headers = {"X-API-Key": args.key} if args.key else {}
    r = httpx.get(f"http://{host}:{port}/v1/indexes/{args.index}", headers=headers, timeout=10)
    if r.status_code != 200:
        sys.exit(f"GET /v1/indexes/{args.index}: HTTP {r.status_code} {r.text[:300]}")
    info = r.json()
    bodies = build_bodies(args, info["dim"])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    path = search_path(args)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    results = []
    print(f"{args.client} client -> {args.url}{path}  (index {args.index}: {info['backend']}, {info['count']} x "
          f"{info['dim']}, k={args.k})")
    print(f"{'conc':>5} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'client CPU ms/req':>18}")
    for c in levels:
        res = asyncio.run(run_level(args, host, port, path, bodies, c))
        results.append(res)
        print(f"{c:>5} {res['requests']:>9} {res['errors']:>7} {res['throughput_rps']:>9.1f} {res['p50_ms']:>8.2f} "
              f"{res['p90_ms']:>8.2f} {res['p99_ms']:>8.2f} {res['client_cpu_ms_per_request']:>18.3f}", flush=True)
        for s in res["error_samples"]:
            print("      error:", s)
    out = {"url": args.url, "index": args.index, "index_info": info, "k": args.k, "client": args.client,
           "levels": results, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
