#!/usr/bin/env python
"""What served writes cost with ``--persist sync``: latency, bytes written, reads during writes, RSS over reloads.

Serves an hnswlib index of the Fashion-MNIST training images (60,000 x 784, l2, M=16, efConstruction=100,
ef=64) with ``annrec serve --persist sync`` on 127.0.0.1 and measures, in one server run:

1. ``single``: acknowledged single-item upserts, one after another (``--n-single``, default 200; new ids
   and existing ids alternate; vectors are Fashion-MNIST test images): client latency p50/p95/max, and
   the bytes written per upsert — by the server process (``/proc/<pid>/io`` ``write_bytes``, plus the
   child processes seen under ``/proc/<pid>/task/*/children`` while the phase ran) and by the block
   device holding the model dir (``/proc/diskstats``, sectors written x 512: this counts everything
   written on the machine, so other activity inflates it; it also catches writes by processes the
   sampler missed). ``os.sync()`` runs before and after the phase so the device figure includes the
   write-back of the phase's dirty pages; the sync is outside every latency.
2. ``batch``: upserts of 100 items per request, one request after another (``--batches``, default 20):
   vectors per second.
3. ``reads``: 2 client threads send single-vector searches (k=10) on keep-alive connections for
   ``--read-seconds`` (default 10) without writes, then as long again while one writer thread upserts
   single items without pause: p50/p99/max of both, p99 ratio, searches slower than 250 ms.
4. ``reload``: ``--reloads`` (default 30) ``POST /v1/admin/reload`` calls; VmRSS of the server process
   after the first and after the last.

The index is built once with the Python API (``annrec.index.build_index`` + ``Index.save``) and cached
under ``bench/cache/``; every run copies the whole index folder into a fresh temporary model dir, so the
cache never changes and the folder layout is the engine's own business. ``--env NAME=VALUE`` (repeated)
passes settings to the server process, so the same command measures several engine configurations; the
server is started as ``python -c 'from annrec.cli import main; main()' serve ...``, so ``PYTHONPATH``
chooses the code under test.

    python bench/storage_writes.py --json bench/results/storage-writes-before.json
    python bench/storage_writes.py --n 5000 --n-single 20 --batches 3 --read-seconds 3 --reloads 3  # smoke test

Timings are only comparable between runs on an equally loaded machine: the load average at start and end
is in the output.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "cache"
INDEX_NAME = "fmnist-hnsw"
READ_KEY = "bench-read-key-0123456789"
ADMIN_KEY = "bench-admin-key-0123456789"
PHASES = ("single", "batch", "reads", "reload")
NEW_ID_BASE = 1_000_000
# the server: `annrec serve`, saying first which annrec package it imported
SERVE = ("import sys, annrec; print('annrec package:', annrec.__file__, file=sys.stderr, flush=True); "
         "from annrec.cli import main; main()")


# ----------------------------------------------------------------------------- data and index
def fmnist(split: str, n: int | None = None) -> np.ndarray:
    """The first ``n`` Fashion-MNIST images of ``split`` (train/test) as float32 ``(n, 784)``."""
    from annrec.bench.datasets import FASHION_MNIST_DIR, FASHION_MNIST_FILES, read_idx

    x = read_idx(FASHION_MNIST_DIR / FASHION_MNIST_FILES[split])
    x = x[:n] if n else x
    return x.reshape(len(x), -1).astype(np.float32)


def code_under_test() -> dict:
    """Where the imported ``annrec`` lives and its git commit (``+dirty`` when ``annrec/`` has changes)."""
    import annrec

    pkg = Path(annrec.__file__).resolve().parent
    out: dict = {"annrec_package": os.path.relpath(pkg, ROOT) if pkg.is_relative_to(ROOT) else pkg.name}
    try:
        commit = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=True).stdout.strip()
        out["commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["commit"] = None
    return out


def cached_index(n: int, M: int = 16, efc: int = 100, ef: int = 64, rebuild: bool = False) -> Path:
    """A model dir under ``bench/cache/`` holding the index folder ``fmnist-hnsw`` of the first ``n`` training
    images, built once per version of the code that writes it (the key hashes the sources of ``annrec.index``,
    so a change of the folder layout builds a new one)."""
    import hashlib

    import annrec.index
    from annrec.index import build_index

    h = hashlib.sha1()
    src = Path(annrec.index.__file__).parent
    for f in sorted(src.rglob("*.py")):
        h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes())
    model_dir = CACHE / f"storage-fmnist-n{n}-M{M}-efc{efc}-ef{ef}-{h.hexdigest()[:10]}"
    path = model_dir / INDEX_NAME
    done = model_dir / "built.ok"
    if done.exists() and path.exists() and not rebuild:
        return model_dir
    shutil.rmtree(model_dir, ignore_errors=True)
    x = fmnist("train", n)
    t0 = time.perf_counter()
    idx = build_index(x, np.arange(len(x)), "l2", backend="hnswlib", M=M, ef_construction=efc, ef=ef)
    idx.items = {}
    idx.source = {"dataset": f"fashion-mnist-784-euclidean (train, first {len(x)})"}
    idx.save(path)
    done.write_text("ok\n")
    print(f"built hnswlib M={M} efConstruction={efc} over {len(x)} x {x.shape[1]} in "
          f"{time.perf_counter() - t0:.1f} s (cached in {os.path.relpath(model_dir, ROOT)})", flush=True)
    return model_dir


def fresh_copy(model_dir: Path, work: Path) -> Path:
    """Copy the cached model dir's index folder (whole, whatever its layout) into ``work/models``."""
    dest = work / "models"
    dest.mkdir(parents=True)
    shutil.copytree(model_dir / INDEX_NAME, dest / INDEX_NAME, symlinks=True)
    return dest


def folder_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


# ----------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for it in items or []:
        name, sep, value = it.partition("=")
        if not sep or not name:
            sys.exit(f"--env takes NAME=VALUE, got {it!r}")
        env[name] = value
    return env


class Server:
    """A running ``annrec serve`` (stdout and stderr to a log file); :meth:`kill` signals the server together
    with the children it forked."""

    def __init__(self, model_dir: Path, port: int, extra_env: dict[str, str], log_path: Path,
                 persist: str = "sync") -> None:
        self.model_dir, self.port, self.log_path = model_dir, port or free_port(), log_path
        env = {**os.environ, "OMP_NUM_THREADS": "1", **extra_env}
        cmd = [sys.executable, "-c", SERVE, "serve", "--model-dir", str(model_dir),
               "--host", "127.0.0.1", "--port", str(self.port), "--read-key", READ_KEY, "--admin-key", ADMIN_KEY,
               "--persist", persist, "--log-level", "warning"]
        self.log = open(log_path, "ab")
        # cwd: the log's folder, so that the code on PYTHONPATH (not a checkout in the current folder) is served
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=log_path.parent)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> tuple[bool, float, str]:
        """(ready, seconds, why not): ready when ``/ready`` answers 200 before ``timeout`` and the process lives."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                return False, time.monotonic() - t0, f"exited with status {self.proc.returncode}"
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/ready")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return True, time.monotonic() - t0, ""
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        return False, time.monotonic() - t0, f"not ready within {timeout:.0f} s"

    def kill(self) -> None:
        """SIGKILL the whole process group (uvicorn and anything it forked) and reap the server."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self._wait_group_gone()
        self.log.close()

    def stop(self) -> None:
        """SIGTERM (graceful shut-down flushes pending saves), SIGKILL after 60 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stragglers in the group
        except ProcessLookupError:
            pass
        self._wait_group_gone()
        self.log.close()

    def _wait_group_gone(self, timeout: float = 10.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def same_code(self) -> bool | None:
        """Whether the server imported the same annrec package as this process."""
        import annrec

        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("annrec package:"):
                return Path(line.split(":", 1)[1].strip()).resolve() == Path(annrec.__file__).resolve()
        return None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Conn:
    """One keep-alive HTTP/1.1 connection (``http.client``) with JSON bodies; reconnects after an error."""

    def __init__(self, port: int, key: str, timeout: float = 120.0) -> None:
        self.port, self.timeout = port, timeout
        self.headers = {"X-API-Key": key, "Content-Type": "application/json"}
        self.c: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | dict | None = None) -> tuple[int, bytes]:
        """(status, body); raises OSError / http.client.HTTPException on a connection failure."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        if self.c is None:
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.c.request(method, path, body=body, headers=self.headers)
            r = self.c.getresponse()
            return r.status, r.read()
        except BaseException:
            self.close()
            raise

    def json(self, method: str, path: str, body=None) -> dict:
        status, data = self.request(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status} {data[:300]!r}")
        return json.loads(data)

    def close(self) -> None:
        if self.c is not None:
            self.c.close()
            self.c = None


# ----------------------------------------------------------------------------- /proc figures
def proc_io(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k.strip()] = int(v)
    except (OSError, ValueError):
        pass
    return out


def children(pid: int) -> set[int]:
    kids: set[int] = set()
    try:
        for t in Path(f"/proc/{pid}/task").iterdir():
            try:
                kids.update(int(c) for c in (t / "children").read_text().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


def vm_kib(pid: int, field: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def block_device(path: Path) -> str | None:
    """The /proc/diskstats name of the block device holding ``path`` (None when it has none, e.g. tmpfs)."""
    st = os.stat(path)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    sys_dev = Path(f"/sys/dev/block/{major}:{minor}")
    if sys_dev.exists():
        return sys_dev.resolve().name
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if int(f[0]) == major and int(f[1]) == minor:
            return f[2]
    return None


def sectors_written(device: str | None) -> int | None:
    if device is None:
        return None
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if f[2] == device:
            return int(f[9])
    return None


class WriteMeter:
    """Bytes written during a phase: server process (+ sampled children) and the block device."""

    def __init__(self, pid: int, device: str | None) -> None:
        self.pid, self.device = pid, device
        self.kids0: dict[int, dict] = {}
        self.kids_last: dict[int, dict] = {}
        self._stop = threading.Event()

    def __enter__(self) -> WriteMeter:
        os.sync()
        self.io0, self.sec0, self.t0 = proc_io(self.pid), sectors_written(self.device), time.monotonic()
        self.kids0 = {k: proc_io(k) for k in children(self.pid)}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            for k in children(self.pid):
                io = proc_io(k)
                if io:
                    self.kids_last[k] = io

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.io1 = proc_io(self.pid)
        os.sync()
        self.sec1, self.t1 = sectors_written(self.device), time.monotonic()

    def figures(self, n_ops: int) -> dict:
        d = {k: self.io1.get(k, 0) - self.io0.get(k, 0) for k in ("write_bytes", "cancelled_write_bytes", "wchar")}
        # a child alive at the start counts from its figure then; one born during the phase from 0
        kid = sum(io.get("write_bytes", 0) - self.kids0.get(k, {}).get("write_bytes", 0)
                  for k, io in self.kids_last.items())
        dev = None if self.sec0 is None or self.sec1 is None else (self.sec1 - self.sec0) * 512
        n = max(n_ops, 1)
        return {"server_write_bytes": d["write_bytes"], "server_cancelled_write_bytes": d["cancelled_write_bytes"],
                "server_wchar": d["wchar"], "children_seen": len(self.kids_last), "children_write_bytes": kid,
                "device": self.device, "device_bytes_written": dev,
                "server_write_bytes_per_op": round((d["write_bytes"] + kid) / n),
                "server_wchar_per_op": round(d["wchar"] / n),
                "device_bytes_per_op": None if dev is None else round(dev / n),
                "device_note": "all writes to this block device by every process on the machine, phase start to "
                               "end, with os.sync() at both ends"}


def pct(lat: list[float], p: float) -> float | None:
    return round(float(np.percentile(np.asarray(lat), p)) * 1000, 2) if lat else None


def lat_stats(lat: list[float]) -> dict:
    return {"n": len(lat), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
            "max_ms": round(max(lat) * 1000, 2) if lat else None}


# ----------------------------------------------------------------------------- phases
class Ids:
    """Upsert targets: new ids (from NEW_ID_BASE up) and existing ids, alternating."""

    def __init__(self, n_existing: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_existing, self.next_new, self.i = n_existing, NEW_ID_BASE, 0
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            self.i += 1
            if self.i % 2:
                self.next_new += 1
                return self.next_new
            return int(self.rng.integers(self.n_existing))


def item(i: int, vec: np.ndarray, tag: str) -> dict:
    return {"id": i, "vector": vec.tolist(), "metadata": {"bench": tag}}


def phase_single(srv: Server, device, ids: Ids, test: np.ndarray, n: int) -> dict:
    c = Conn(srv.port, ADMIN_KEY)
    lat, persisted = [], 0
    bodies = [json.dumps({"items": [item(ids.take(), test[j % len(test)], "single")]}).encode() for j in range(n)]
    with WriteMeter(srv.pid, device) as m:
        for b in bodies:
            t0 = time.perf_counter()
            r = c.json("PUT", f"/v1/indexes/{INDEX_NAME}/items", b)
            lat.append(time.perf_counter() - t0)
            persisted += bool(r.get("persisted"))
    c.close()
    return {"upserts": n, "latency": lat_stats(lat), "answered_persisted_true": persisted,
            "seconds": round(m.t1 - m.t0, 2), "writes": m.figures(n)}


def phase_batch(srv: Server, device, ids: Ids, test: np.ndarray, batches: int, size: int = 100) -> dict:
    c = Conn(srv.port, ADMIN_KEY)
    bodies = []
    for b in range(batches):
        rows = [(b * size + j + 7919) % len(test) for j in range(size)]
        bodies.append(json.dumps({"items": [item(ids.take(), test[r], "batch") for r in rows]}).encode())
    lat = []
    with WriteMeter(srv.pid, device) as m:
        t0 = time.perf_counter()
        for body in bodies:
            t1 = time.perf_counter()
            c.json("PUT", f"/v1/indexes/{INDEX_NAME}/items", body)
            lat.append(time.perf_counter() - t1)
        secs = time.perf_counter() - t0
    c.close()
    n = batches * size
    return {"batches": batches, "batch_size": size, "vectors": n, "seconds": round(secs, 2),
            "vectors_per_s": round(n / secs, 1), "batch_latency": lat_stats(lat), "writes": m.figures(n)}


def phase_reads(srv: Server, ids: Ids, test: np.ndarray, seconds: float, threads: int = 2) -> dict:
    queries = [json.dumps({"vector": test[-1 - j].tolist(), "k": 10}).encode() for j in range(500)]
    path = f"/v1/indexes/{INDEX_NAME}/search"

    def searchers(stop: threading.Event) -> tuple[list[float], list[threading.Thread], list[int]]:
        lat: list[float] = []
        errors = [0]
        lk = threading.Lock()

        def run(t: int) -> None:
            c = Conn(srv.port, READ_KEY, timeout=60)
            mine, j = [], t * 250
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    status, _ = c.request("POST", path, queries[j % len(queries)])
                    ok = status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                if ok:
                    mine.append(time.perf_counter() - t0)
                else:
                    errors[0] += 1
                j += 1
            c.close()
            with lk:
                lat.extend(mine)

        ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        return lat, ts, errors

    def measure(with_writes: bool) -> dict:
        stop = threading.Event()
        wlat: list[float] = []
        writer = None
        if with_writes:
            def write() -> None:
                c = Conn(srv.port, ADMIN_KEY)
                j = 0
                while not stop.is_set():
                    body = json.dumps({"items": [item(ids.take(), test[(j * 31) % len(test)], "during-reads")]})
                    t0 = time.perf_counter()
                    c.json("PUT", f"/v1/indexes/{INDEX_NAME}/items", body.encode())
                    wlat.append(time.perf_counter() - t0)
                    j += 1
                c.close()

            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(0.2)  # the writer's first request is in flight
        lat, ts, errors = searchers(stop)
        t0 = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for t in ts:
            t.join()
        secs = time.perf_counter() - t0
        if writer:
            writer.join()
        out = {"searches": len(lat), "searches_per_s": round(len(lat) / secs, 1), "errors": errors[0],
               "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": round(max(lat) * 1000, 2) if lat else None,
               "over_250ms": int(sum(x > 0.25 for x in lat))}
        if with_writes:
            out["upserts"] = len(wlat)
            out["upsert_latency"] = lat_stats(wlat)
        return out

    c = Conn(srv.port, READ_KEY)
    for q in queries[:30]:  # warm-up
        c.request("POST", path, q)
    c.close()
    without = measure(False)
    before = storage_state(srv)
    during = measure(True)
    after = storage_state(srv)
    if before is not None and after is not None:  # engines that report their snapshots (GET /v1/indexes/{name})
        during["snapshots_written"] = after.get("snapshots_written", 0) - before.get("snapshots_written", 0)
    ratio = round(during["p99_ms"] / without["p99_ms"], 2) if without["p99_ms"] and during["p99_ms"] else None
    return {"search_threads": threads, "k": 10, "seconds_each": seconds, "without_writes": without,
            "during_writes": during, "p99_ratio_during_over_without": ratio}


def storage_state(srv: Server) -> dict | None:
    """The served index's ``storage`` block (write-ahead log and snapshot counters), if the engine has one."""
    c = Conn(srv.port, READ_KEY)
    try:
        status, body = c.request("GET", f"/v1/indexes/{INDEX_NAME}")
        return json.loads(body).get("storage") if status == 200 else None
    finally:
        c.close()


def phase_reload(srv: Server, reloads: int) -> dict:
    c = Conn(srv.port, ADMIN_KEY, timeout=600)
    lat, rss, gens = [], [], []
    rss0 = vm_kib(srv.pid)
    for _ in range(reloads):
        t0 = time.perf_counter()
        r = c.json("POST", "/v1/admin/reload")
        lat.append(time.perf_counter() - t0)
        gens.append(r.get("generation"))
        rss.append(vm_kib(srv.pid))
    c.close()
    first, last = rss[0], rss[-1]
    return {"reloads": reloads, "rss_before_kib": rss0, "rss_after_first_kib": first, "rss_after_last_kib": last,
            "rss_ratio_last_over_first": round(last / first, 3) if first and last else None,
            "rss_max_kib": max(x for x in rss if x is not None) if any(rss) else None,
            "vmhwm_kib": vm_kib(srv.pid, "VmHWM"), "reload_latency": lat_stats(lat), "last_generation": gens[-1]}


# ----------------------------------------------------------------------------- main
def mib(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:,.2f} MiB"


def report(res: dict) -> None:
    ph = res["phases"]
    print(f"\n== storage writes: {res['index']['items']} x 784 hnswlib, persist=sync, code {res['code']['commit']}, "
          f"env {res['settings']['env'] or '{}'}")
    if "single" in ph:
        s, w = ph["single"], ph["single"]["writes"]
        print(f"single upserts ({s['upserts']}, sequential):  p50 {s['latency']['p50_ms']} ms  p95 "
              f"{s['latency']['p95_ms']} ms  max {s['latency']['max_ms']} ms")
        print(f"  written per upsert: server {mib(w['server_write_bytes_per_op'])} (write_bytes; children seen "
              f"{w['children_seen']}), wchar {mib(w['server_wchar_per_op'])}, device {w['device']} "
              f"{mib(w['device_bytes_per_op'])} (whole machine)")
    if "batch" in ph:
        b = ph["batch"]
        print(f"batches of {b['batch_size']} ({b['batches']}): {b['vectors_per_s']} vectors/s, batch p50 "
              f"{b['batch_latency']['p50_ms']} ms; written per vector: server "
              f"{mib(b['writes']['server_write_bytes_per_op'])}, device {mib(b['writes']['device_bytes_per_op'])}")
    if "reads" in ph:
        r = ph["reads"]
        print(f"{'searches (2 threads)':<24} {'n':>6} {'/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9} {'>250ms':>7}")
        for name, key in (("without writes", "without_writes"), ("during writes", "during_writes")):
            x = r[key]
            print(f"{name:<24} {x['searches']:>6} {x['searches_per_s']:>7} {x['p50_ms']:>8} {x['p99_ms']:>8} "
                  f"{x['max_ms']:>9} {x['over_250ms']:>7}")
        if "snapshots_written" in r["during_writes"]:
            print(f"  snapshots written during the writes: {r['during_writes']['snapshots_written']}")
        print(f"  p99 during/without: {r['p99_ratio_during_over_without']}; upserts during: "
              f"{r['during_writes'].get('upserts')} (p50 {r['during_writes']['upsert_latency']['p50_ms']} ms)")
    if "reload" in ph:
        x = ph["reload"]
        print(f"reloads ({x['reloads']}): VmRSS after first {x['rss_after_first_kib'] / 1024:,.0f} MiB, after last "
              f"{x['rss_after_last_kib'] / 1024:,.0f} MiB (ratio {x['rss_ratio_last_over_first']}); reload p50 "
              f"{x['reload_latency']['p50_ms']} ms")
    print(f"index folder: {mib(res['index']['folder_bytes_start'])} at start, {mib(res['index']['folder_bytes_end'])}"
          f" at end; load average {res['load_average_start']} -> {res['load_average_end']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--n", type=int, default=60_000, help="training images indexed (60000: all)")
    p.add_argument("--n-single", type=int, default=200, help="single upserts in phase single")
    p.add_argument("--batches", type=int, default=20, help="batches of 100 upserts in phase batch")
    p.add_argument("--read-seconds", type=float, default=10.0, help="seconds of searches without / with writes")
    p.add_argument("--reloads", type=int, default=30)
    p.add_argument("--port", type=int, default=0, help="port to serve on (0: a free one)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment variable for the server (repeatable), e.g. ANNREC_SAVE_DELAY_S=1")
    p.add_argument("--work-dir", type=Path, default=None, help="where the temporary model dir goes "
                                                                "(default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary model dir (and the server log)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached index")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    phases = [x for x in args.phases.split(",") if x]
    if bad := [x for x in phases if x not in PHASES]:
        sys.exit(f"unknown phase(s) {bad}: choose from {PHASES}")
    extra_env = parse_env(args.env)
    load_start = [round(x, 2) for x in os.getloadavg()]
    code = code_under_test()
    cache = cached_index(args.n)
    test = fmnist("test")
    work = Path(tempfile.mkdtemp(prefix="annrec-storage-writes-", dir=args.work_dir))
    res: dict = {"benchmark": "storage_writes", "code": code, "load_average_start": load_start,
                 "cpus": os.cpu_count(),
                 "settings": {"persist": "sync", "env": extra_env, "workers": 1, "n_single": args.n_single,
                              "batches": args.batches, "batch_size": 100, "read_seconds": args.read_seconds,
                              "reloads": args.reloads, "phases": phases},
                 "index": {"backend": "hnswlib", "metric": "l2", "M": 16, "ef_construction": 100, "ef": 64,
                           "items": args.n, "dataset": "fashion-mnist-784-euclidean train; upserts: test images"},
                 "phases": {}}
    srv = None
    try:
        models = fresh_copy(cache, work)
        device = block_device(models)
        res["index"]["folder_bytes_start"] = folder_bytes(models / INDEX_NAME)
        srv = Server(models, args.port, extra_env, work / "server.log")
        ok, secs, why = srv.wait_ready()
        if not ok:
            print(srv.log_tail(), file=sys.stderr)
            sys.exit(f"the server did not become ready: {why}")
        res["startup_seconds"] = round(secs, 2)
        res["code"]["server_imports_same_package"] = srv.same_code()
        print(f"server pid {srv.pid} ready in {secs:.1f} s on port {srv.port}; block device {device}", flush=True)
        ids = Ids(args.n)
        c = Conn(srv.port, ADMIN_KEY)  # warm-up: one upsert (first save) and a few searches, not measured
        c.json("PUT", f"/v1/indexes/{INDEX_NAME}/items", {"items": [item(ids.take(), test[0], "warm-up")]})
        for j in range(10):
            c.json("POST", f"/v1/indexes/{INDEX_NAME}/search", {"vector": test[j].tolist(), "k": 10})
        c.close()
        res["rss_start_kib"] = vm_kib(srv.pid)
        for ph in phases:
            print(f"-- phase {ph}", flush=True)
            if ph == "single":
                res["phases"][ph] = phase_single(srv, device, ids, test, args.n_single)
            elif ph == "batch":
                res["phases"][ph] = phase_batch(srv, device, ids, test, args.batches)
            elif ph == "reads":
                res["phases"][ph] = phase_reads(srv, ids, test, args.read_seconds)
            elif ph == "reload":
                res["phases"][ph] = phase_reload(srv, args.reloads)
            res["phases"][ph]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        srv.stop()
        res["index"]["folder_bytes_end"] = folder_bytes(models / INDEX_NAME)
        res["model_dir_entries_end"] = sorted(e.name for e in models.iterdir())
    finally:
        if srv is not None and srv.proc.poll() is None:
            srv.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report(res)
    if args.json:
        from annrec._io import write_json

        write_json(args.json, res)
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
