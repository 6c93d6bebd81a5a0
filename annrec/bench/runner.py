"""The benchmark runner: build each configuration, sweep its query arguments, time and score every run.

Protocol (ANN-Benchmarks' ``runner.py``, DESIGN.md "Evaluation protocols"):

* **single** mode: one thread, one query at a time (``query(q, k)`` per test vector), each call timed
  with ``time.perf_counter``; QPS = queries / sum of the per-query times; latency percentiles from
  the same times. This is what ANN-Benchmarks reports.
* **batch** mode: all queries in one ``batch_query(Q, k)`` call on all cores; QPS = queries / wall
  time of the call (no per-query latencies exist).
* Before timing, ``warmup`` queries are run once; then ``runs`` timed passes over all queries and
  the fastest is kept ("best of N"); a pass longer than ``long_run_s`` is not repeated.
* Scores: recall@k by neighbour ids, and ANN-Benchmarks' distance-threshold recall (a result counts
  when its distance is within the true k-th distance + 1e-3), from distances recomputed on the data.
* Per build: build time (wall, all cores), index size on disk (the adapter's saved files), in
  memory (the adapter's estimate) and the process' RSS growth during the build.

Every finished run is appended to a JSON-lines file at once (flushed and fsynced), so Ctrl-C or a
crash keeps what finished; a re-run skips runs whose key is already there (``force`` re-runs them).
A build or query that raises is recorded with ``status: "failed"`` and the sweep goes on.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annrec._io import _json_default
from annrec.bench.algorithms import ADAPTERS, Algorithm, available, n_cores
from annrec.bench.datasets import Dataset
from annrec.bench.definitions import MODES, Definition
from annrec.bench.groundtruth import GroundTruth, ground_truth, knn_recall, pair_distances, threshold_recall
from annrec.errors import InputError

RESULT_FORMAT = 1


@dataclass
class RunConfig:
    """How to run: ``count`` (k), ``runs`` (best of N), ``warmup`` queries, ``modes``, threads of batch
    mode (``None``: all cores), ``force`` (re-run finished runs), ``retry_failed`` (re-run failed ones),
    ``long_run_s`` (a pass slower than this is not repeated)."""

    count: int = 10
    runs: int = 3
    warmup: int = 500
    modes: tuple[str, ...] = MODES
    batch_threads: int | None = None
    force: bool = False
    retry_failed: bool = False
    long_run_s: float = 60.0

    def __post_init__(self) -> None:
        if self.count < 1 or self.count > 100:
            raise InputError(f"count (k) must be between 1 and 100; got {self.count}")
        if self.runs < 1:
            raise InputError(f"runs must be >= 1; got {self.runs}")
        if self.warmup < 0:
            raise InputError(f"warmup must be >= 0; got {self.warmup}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise InputError(f"unknown mode(s) {bad}: use {', '.join(MODES)}")


@dataclass
class RunSummary:
    """What a call to :func:`run_benchmark` did."""

    results_path: Path
    done: int = 0
    skipped: int = 0
    failed: int = 0
    unavailable: list[str] = field(default_factory=list)
    interrupted: bool = False


# --------------------------------------------------------------------------- machine and versions
def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python, BLAS and library versions (stored with every result)."""
    import importlib.metadata as md

    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "python": platform.python_version(), "cores_usable": n_cores(),
                            "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = sorted({f"{p.get('internal_api')} {p.get('version') or ''}".strip()
                               for p in threadpool_info() if p.get("user_api") == "blas"})
    except Exception:  # pragma: no cover - informational only
        pass
    versions = {}
    for pkg in ("annrec", "numpy", "faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "hnswlib", "annoy", "pynndescent",
                "usearch"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    info["versions"] = versions
    return info


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- keys and result files
def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_key(ds: Dataset, count: int, d: Definition) -> str:
    """Identity of one build: data set (hash and query count), k, label, algorithm, build arguments."""
    return _key(ds.hash(), len(ds.test), count, d.label, d.algorithm, d.build_args)


def run_key(ds: Dataset, count: int, d: Definition, query_args: dict, mode: str) -> str:
    """Identity of one run: :func:`build_key` plus query arguments and mode."""
    return _key(build_key(ds, count, d), query_args, mode)


def default_results_path(ds: Dataset, count: int, results_dir: str | os.PathLike = "bench/results") -> Path:
    """``bench/results/<data set>-k<count>.jsonl``."""
    return Path(results_dir) / f"{ds.name}-k{count}.jsonl"


def read_results(path: str | os.PathLike, *, warn: Callable[[str], None] | None = None) -> list[dict]:
    """Read a JSON-lines result file; lines that are not complete JSON objects (a crash mid-write) are
    skipped with a warning.

    Raises:
        DataNotFoundError: no such file.
    """
    from annrec.errors import DataNotFoundError

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no results at {path}: run `annrec bench run` first")
    out, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
        else:
            bad += 1
    if bad and warn:
        warn(f"{path}: skipped {bad} incomplete line(s)")
    return out


def _append(path: Path, record: dict) -> None:
    line = json.dumps(record, default=_json_default, allow_nan=False)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _clean(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


# --------------------------------------------------------------------------- measurement
def _thread_limits(n: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n)


def _set_global_threads(n: int) -> None:
    try:
        import faiss

        faiss.omp_set_num_threads(int(n))
    except ImportError:  # pragma: no cover
        pass


def measure(algo: Algorithm, Q: np.ndarray, k: int, mode: str, *, runs: int = 3, warmup: int = 500,
            threads: int | None = None, long_run_s: float = 60.0) -> dict[str, Any]:
    """Time ``algo`` on queries ``Q`` in ``mode`` (see the module docstring).

    Besides wall-clock time, the CPU time of the queries is recorded (``time.thread_time`` around each
    query in single mode; ``time.process_time``, all threads, around the batch call): on a machine
    shared with other work, CPU time is far less disturbed than wall time, which makes it the better
    basis for comparing two implementations of the same search (the overhead ratios).

    Returns:
        ``{"ids": int64 (nq, k), "search_time_s", "run_times_s", "cpu_time_s" (minimum over passes),
        "latencies_s" (single mode), "threads"}``.
    """
    threads = 1 if mode == "single" else (threads or n_cores())
    nq = len(Q)
    algo.set_threads(threads)
    _set_global_threads(threads)
    best_total, best_ids, best_lat, times, best_cpu = np.inf, None, None, [], np.inf
    with _thread_limits(threads):
        if mode == "single":
            for i in range(min(warmup, nq)):
                algo.query(Q[i], k)
            perf, cpu = time.perf_counter, time.thread_time
            for _ in range(runs):
                ids = np.full((nq, k), -1, dtype=np.int64)
                lat = np.empty(nq, dtype=np.float64)
                cpus = np.empty(nq, dtype=np.float64)
                gc.collect(1)  # young generations: cheap, clears the last pass's garbage
                for i in range(nq):
                    q = Q[i]
                    c0 = cpu()
                    t0 = perf()
                    r = algo.query(q, k)
                    t1 = perf()
                    cpus[i] = cpu() - c0
                    lat[i] = t1 - t0
                    r = np.asarray(r).ravel()[:k]
                    ids[i, :len(r)] = r
                total = float(lat.sum())
                best_cpu = min(best_cpu, float(cpus.sum()))
                times.append(total)
                if total < best_total:
                    best_total, best_ids, best_lat = total, ids, lat
                if total > long_run_s:
                    break
        elif mode == "batch":
            if warmup:
                algo.batch_query(Q[:min(warmup, nq)], k)
            for _ in range(runs):
                gc.collect(1)
                c0 = time.process_time()
                t0 = time.perf_counter()
                res = algo.batch_query(Q, k)
                total = time.perf_counter() - t0
                best_cpu = min(best_cpu, time.process_time() - c0)
                res = np.asarray(res)
                ids = np.full((nq, k), -1, dtype=np.int64)
                ids[:, :min(k, res.shape[1])] = res[:, :k]
                times.append(total)
                if total < best_total:
                    best_total, best_ids = total, ids
                if total > long_run_s:
                    break
        else:
            raise InputError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    return {"ids": best_ids, "search_time_s": best_total, "run_times_s": times, "latencies_s": best_lat,
            "cpu_time_s": best_cpu, "threads": threads}


def score(ds: Dataset, gt: GroundTruth, ids: np.ndarray, k: int) -> dict[str, float]:
    """Mean recall@k (ids) and distance-threshold recall of returned rows ``ids`` ``(nq, k)``."""
    rec = knn_recall(ids, gt.neighbors, k)
    dist = pair_distances(ds.train, ds.test, ids, ds.metric)
    thr = threshold_recall(dist, gt.distances, k)
    return {"recall": float(rec.mean()), "recall_threshold": float(thr.mean())}


def _record_base(ds: Dataset, cfg: RunConfig, d: Definition, machine: dict) -> dict[str, Any]:
    return {"format": RESULT_FORMAT, "dataset": ds.name, "dataset_info": ds.describe(), "count": cfg.count,
            "n_queries": len(ds.test), "label": d.label, "algorithm": d.algorithm, "build_args": d.build_args,
            "build_key": None, "machine": machine}


# --------------------------------------------------------------------------- the sweep
def run_benchmark(ds: Dataset, definitions: Iterable[Definition], results_path: str | os.PathLike,
                  cfg: RunConfig | None = None, *, gt: GroundTruth | None = None,
                  cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> RunSummary:
    """Run every definition on ``ds`` and append one JSON line per (build, query arguments, mode).

    Args:
        ds: the data set; gt: its ground truth (computed or loaded from the cache when ``None``).
        definitions: from :func:`annrec.bench.definitions.load_definitions`.
        results_path: JSON-lines file (created if missing; appended to).

    Returns:
        A :class:`RunSummary`. ``KeyboardInterrupt`` is re-raised after the current adapter is freed;
        every run that finished before it is already in the file.

    Raises:
        InputError: bad configuration. DataError: ground truth that does not match the data set.
    """
    cfg = cfg or RunConfig()
    definitions = list(definitions)
    results_path = Path(results_path)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(results_path)
    if gt is None:
        gt = ground_truth(ds, cfg.count, cache_dir=cache_dir)
    if gt.neighbors.shape[0] != len(ds.test) or gt.k < cfg.count:
        raise InputError(f"ground truth has shape {gt.neighbors.shape} but the data set has {len(ds.test)} "
                         f"queries and k={cfg.count}")
    ok_keys, failed_keys = set(), set()
    if results_path.exists():
        for rec in read_results(results_path, warn=log):
            (ok_keys if rec.get("status") == "ok" else failed_keys).add(rec.get("key"))
    machine = machine_info()
    Q = np.ascontiguousarray(ds.test, dtype=np.float32)
    k = cfg.count
    batch_threads = cfg.batch_threads or n_cores()
    # Move everything alive now out of the collector's way: the collections before each timed pass then
    # only scan objects made since (cheap), and fewer collections interrupt the timed loops.
    gc.collect()
    gc.freeze()
    try:
        _sweep(ds, definitions, results_path, cfg, gt, summary, ok_keys, failed_keys, machine, Q, k,
               batch_threads, log)
    finally:
        gc.unfreeze()
    return summary


def _sweep(ds, definitions, results_path, cfg, gt, summary, ok_keys, failed_keys, machine, Q, k, batch_threads,
           log) -> None:
    for d in definitions:
        cls = ADAPTERS[d.algorithm]
        if not available(cls):
            msg = f"skipping {d.label}: the optional package {cls.package!r} is not installed (pip install {cls.package})"
            if d.label not in summary.unavailable:
                summary.unavailable.append(d.label)
                log(msg)
            continue
        bkey = build_key(ds, k, d)
        modes = [m for m in cfg.modes if m in d.modes]
        todo = []
        for qa in d.query_args:
            for mode in modes:
                rk = run_key(ds, k, d, qa, mode)
                if not cfg.force and (rk in ok_keys or (rk in failed_keys and not cfg.retry_failed)):
                    summary.skipped += 1
                    continue
                todo.append((qa, mode, rk))
        name = f"{d.label}({', '.join(f'{a}={v}' for a, v in d.build_args.items())})"
        if not todo:
            log(f"{name}: all runs done, skipped (use --force to re-run)")
            continue
        if bkey in failed_keys and not cfg.force and not cfg.retry_failed:
            log(f"{name}: its build failed in an earlier run, skipped (use --retry-failed)")
            summary.skipped += len(todo)
            continue
        base = _record_base(ds, cfg, d, machine)
        base["build_key"] = bkey
        algo = cls(ds.metric, **d.build_args)
        algo.set_threads(batch_threads)
        _set_global_threads(batch_threads)
        try:
            log(f"{name}: building ...")
            gc.collect(1)
            rss0 = _rss()
            t0 = time.perf_counter()
            try:
                with _thread_limits(batch_threads):
                    algo.fit(ds.train)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - a failing backend is recorded, the sweep goes on
                _append(results_path, {**base, "key": bkey, "status": "failed", "stage": "build",
                                       "query_args": None, "mode": None, "error": f"{type(e).__name__}: {e}",
                                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                summary.failed += 1
                log(f"{name}: build FAILED ({type(e).__name__}: {e}); recorded, going on")
                continue
            build_time = time.perf_counter() - t0
            rss_growth = max(0, _rss() - rss0)
            mem = algo.memory_bytes()
            disk = None
            tmp = Path(tempfile.mkdtemp(prefix="annrec-bench-"))
            try:
                algo.save(tmp)
                disk = _dir_size(tmp) or None
            except Exception as e:  # noqa: BLE001 - size on disk is informational
                log(f"{name}: could not save the index to measure its size ({type(e).__name__}: {e})")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log(f"{name}: built in {build_time:.1f} s"
                + (f", {disk / 2**20:.1f} MB on disk" if disk else ""))
            base.update(build_time_s=build_time, index_disk_bytes=disk,
                        index_memory_bytes=mem if mem is not None else rss_growth,
                        index_memory_source="adapter" if mem is not None else "rss", rss_growth_bytes=rss_growth)
            for qa, mode, rk in todo:
                started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                load = os.getloadavg() if hasattr(os, "getloadavg") else None
                try:
                    algo.set_query_arguments(**qa)
                    m = measure(algo, Q, k, mode, runs=d.runs or cfg.runs, warmup=cfg.warmup, threads=batch_threads,
                                long_run_s=cfg.long_run_s)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001
                    _append(results_path, {**base, "key": rk, "status": "failed", "stage": "query",
                                           "query_args": qa, "mode": mode, "error": f"{type(e).__name__}: {e}",
                                           "timestamp": started})
                    summary.failed += 1
                    log(f"{name} {qa} [{mode}]: FAILED ({type(e).__name__}: {e}); recorded, going on")
                    continue
                sc = score(ds, gt, m["ids"], k)
                nq = len(Q)
                lat = m["latencies_s"]
                latency = {"mean": 1e3 * m["search_time_s"] / nq}
                if lat is not None:
                    latency.update(p50=1e3 * float(np.percentile(lat, 50)), p95=1e3 * float(np.percentile(lat, 95)),
                                   p99=1e3 * float(np.percentile(lat, 99)))
                else:
                    latency.update(p50=None, p95=None, p99=None)
                rec = {**base, "key": rk, "status": "ok", "query_args": qa, "mode": mode,
                       "name": algo.describe(), **sc, "qps": nq / m["search_time_s"],
                       "latency_ms": latency, "search_time_s": m["search_time_s"], "run_times_s": m["run_times_s"],
                       "cpu_time_s": m["cpu_time_s"], "qps_cpu": nq / max(m["cpu_time_s"], 1e-12),
                       "runs": len(m["run_times_s"]), "warmup_queries": min(cfg.warmup, nq), "threads": m["threads"],
                       "gt_origin": gt.origin, "load_avg_before": list(load) if load else None, "timestamp": started}
                rec["latency_ms"] = {a: _clean(b) for a, b in latency.items()}
                _append(results_path, rec)
                summary.done += 1
                log(f"{name} {qa} [{mode}]: recall {sc['recall']:.4f}, {rec['qps']:,.0f} QPS")
        except KeyboardInterrupt:
            summary.interrupted = True
            log(f"interrupted: {summary.done} run(s) of this session are saved in {results_path}")
            raise
        finally:
            try:
                algo.done()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
            gc.collect(1)
