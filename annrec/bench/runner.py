"""The benchmark runner: build each configuration, sweep its query arguments, time and score every run.

Protocol (ANN-Benchmarks' ``runner.py``, DESIGN.md "Evaluation protocols"):

* **single** mode: one thread, one query at a time (``query(q, k)`` per test vector), each call timed
  with ``time.perf_counter``; QPS = queries / sum of the per-query times; latency percentiles from
  the same times. This is what ANN-Benchmarks reports.
* **batch** mode: all queries in one ``batch_query(Q, k)`` call on all cores; QPS = queries / wall
  time of the call (no per-query latencies exist).
* Before timing, ``warmup`` queries are run once; then ``runs`` timed passes over all queries and
  the fastest is kept ("best of N"); a pass longer than ``long_run_s`` is not repeated.
* CPU time: beside wall time, the CPU time of the queries (``time.thread_time`` per query in single mode,
  ``time.process_time`` around a batch call) gives ``qps_cpu``: on a shared machine it moves far less with
  the load than wall time does.
* ``interleave``: every definition is built first, then the timed passes go round-robin over the algorithms
  (per query-argument position and repetition), so cross-library ratios are measured under the same load.
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
from annrec.bench.groundtruth import GroundTruth, ground_truth
from annrec.bench.measure import _set_global_threads, _thread_limits, measure, merge, score
from annrec.errors import InputError

__all__ = ["RESULT_FORMAT", "RunConfig", "RunSummary", "build_key", "default_results_path", "machine_info",
           "measure", "read_results", "run_benchmark", "run_key", "score", "_set_global_threads", "_thread_limits"]

RESULT_FORMAT = 1


@dataclass
class RunConfig:
    """How to run: ``count`` (k), ``runs`` (best of N), ``warmup`` queries, ``modes``, threads of batch
    mode (``None``: all cores), ``force`` (re-run finished runs), ``retry_failed`` (re-run failed ones),
    ``long_run_s`` (a pass slower than this is not repeated), ``interleave`` (build everything first, then time
    the algorithms round-robin: :func:`run_benchmark`)."""

    count: int = 10
    runs: int = 3
    warmup: int = 500
    modes: tuple[str, ...] = MODES
    batch_threads: int | None = None
    force: bool = False
    retry_failed: bool = False
    long_run_s: float = 60.0
    interleave: bool = False

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


def _record_base(ds: Dataset, cfg: RunConfig, d: Definition, machine: dict) -> dict[str, Any]:
    return {"format": RESULT_FORMAT, "dataset": ds.name, "dataset_info": ds.describe(), "count": cfg.count,
            "n_queries": len(ds.test), "label": d.label, "algorithm": d.algorithm, "build_args": d.build_args,
            "build_key": None, "machine": machine}


# --------------------------------------------------------------------------- the sweep
@dataclass
class _Ctx:
    """What every step of a sweep reads: data, configuration, finished keys, the results file."""

    ds: Dataset
    cfg: RunConfig
    gt: GroundTruth
    path: Path
    summary: RunSummary
    ok_keys: set
    failed_keys: set
    machine: dict
    Q: np.ndarray
    batch_threads: int
    log: Callable[[str], None]


@dataclass
class _Job:
    """One built (or to be built) definition and its pending runs ``[(query_args, mode, run key)]``."""

    d: Definition
    name: str
    todo: list
    base: dict
    algo: Algorithm | None = None


def run_benchmark(ds: Dataset, definitions: Iterable[Definition], results_path: str | os.PathLike,
                  cfg: RunConfig | None = None, *, gt: GroundTruth | None = None,
                  cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> RunSummary:
    """Run every definition on ``ds`` and append one JSON line per (build, query arguments, mode).

    With ``cfg.interleave`` every definition is built first, then the timed passes go round-robin: for each
    mode, query-argument position and repetition, one pass of every algorithm in turn (best of the
    repetitions kept), so a shared machine's changing load hits every algorithm alike and cross-library QPS
    ratios are measured together. Otherwise each definition is built and swept in turn.

    Args:
        ds: the data set; gt: its ground truth (computed or loaded from the cache when ``None``).
        definitions: from :func:`annrec.bench.definitions.load_definitions`.
        results_path: JSON-lines file (created if missing; appended to).

    Returns:
        A :class:`RunSummary`. ``KeyboardInterrupt`` is re-raised after the adapters are freed;
        every run that finished before it is already in the file.

    Raises:
        InputError: bad configuration. DataError: ground truth that does not match the data set.
    """
    cfg = cfg or RunConfig()
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
    ctx = _Ctx(ds, cfg, gt, results_path, summary, ok_keys, failed_keys, machine_info(),
               np.ascontiguousarray(ds.test, dtype=np.float32), cfg.batch_threads or n_cores(), log)
    # Move everything alive now out of the collector's way: the collections before each timed pass then
    # only scan objects made since (cheap), and fewer collections interrupt the timed loops.
    gc.collect()
    gc.freeze()
    try:
        (_sweep_interleaved if cfg.interleave else _sweep)(ctx, list(definitions))
    except KeyboardInterrupt:
        summary.interrupted = True
        log(f"interrupted: {summary.done} run(s) of this run are saved in {results_path}")
        raise
    finally:
        gc.unfreeze()
    return summary


def _prepare(ctx: _Ctx, d: Definition) -> _Job | None:
    """The pending runs of ``d``, or ``None`` when there are none (unavailable, finished, failed build)."""
    cls, k, summary = ADAPTERS[d.algorithm], ctx.cfg.count, ctx.summary
    if not available(cls):
        if d.label not in summary.unavailable:
            summary.unavailable.append(d.label)
            ctx.log(f"skipping {d.label}: the optional package {cls.package!r} is not installed "
                    f"(pip install {cls.package})")
        return None
    todo = []
    for qa in d.query_args:
        for mode in (m for m in ctx.cfg.modes if m in d.modes):
            rk = run_key(ctx.ds, k, d, qa, mode)
            done = rk in ctx.ok_keys or (rk in ctx.failed_keys and not ctx.cfg.retry_failed)
            if done and not ctx.cfg.force:
                summary.skipped += 1
                continue
            todo.append((qa, mode, rk))
    name = f"{d.label}({', '.join(f'{a}={v}' for a, v in d.build_args.items())})"
    bkey = build_key(ctx.ds, k, d)
    if not todo:
        ctx.log(f"{name}: all runs done, skipped (use --force to re-run)")
        return None
    if bkey in ctx.failed_keys and not ctx.cfg.force and not ctx.cfg.retry_failed:
        ctx.log(f"{name}: its build failed in an earlier run, skipped (use --retry-failed)")
        summary.skipped += len(todo)
        return None
    base = _record_base(ctx.ds, ctx.cfg, d, ctx.machine)
    base["build_key"] = bkey
    return _Job(d, name, todo, base)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _build(ctx: _Ctx, job: _Job) -> bool:
    """Build ``job``'s index and record build time and sizes in ``job.base``; a failure is recorded (False)."""
    algo = job.algo = ADAPTERS[job.d.algorithm](ctx.ds.metric, **job.d.build_args)
    algo.set_threads(ctx.batch_threads)
    _set_global_threads(ctx.batch_threads)
    ctx.log(f"{job.name}: building ...")
    gc.collect(1)
    rss0 = _rss()
    t0 = time.perf_counter()
    try:
        with _thread_limits(ctx.batch_threads):
            algo.fit(ctx.ds.train)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a failing backend is recorded, the sweep goes on
        _append(ctx.path, {**job.base, "key": job.base["build_key"], "status": "failed", "stage": "build",
                           "query_args": None, "mode": None, "error": f"{type(e).__name__}: {e}", "timestamp": _now()})
        ctx.summary.failed += 1
        ctx.log(f"{job.name}: build FAILED ({type(e).__name__}: {e}); recorded, going on")
        return False
    build_time = time.perf_counter() - t0
    rss_growth = max(0, _rss() - rss0)
    mem = algo.memory_bytes()
    disk = None
    tmp = Path(tempfile.mkdtemp(prefix="annrec-bench-"))
    try:
        algo.save(tmp)
        disk = _dir_size(tmp) or None
    except Exception as e:  # noqa: BLE001 - size on disk is informational
        ctx.log(f"{job.name}: could not save the index to measure its size ({type(e).__name__}: {e})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ctx.log(f"{job.name}: built in {build_time:.1f} s" + (f", {disk / 2**20:.1f} MB on disk" if disk else ""))
    job.base.update(build_time_s=build_time, index_disk_bytes=disk,
                    index_memory_bytes=mem if mem is not None else rss_growth,
                    index_memory_source="adapter" if mem is not None else "rss", rss_growth_bytes=rss_growth)
    return True


def _free(job: _Job) -> None:
    try:
        if job.algo is not None:
            job.algo.done()
    except Exception:  # noqa: BLE001 - best effort cleanup
        pass
    job.algo = None
    gc.collect(1)


def _measure(ctx: _Ctx, job: _Job, qa: dict, mode: str, rk: str, runs: int, warmup: int) -> dict | None:
    """Time one point; a failure is recorded and gives ``None``."""
    try:
        job.algo.set_query_arguments(**qa)
        return measure(job.algo, ctx.Q, ctx.cfg.count, mode, runs=runs, warmup=warmup, threads=ctx.batch_threads,
                       long_run_s=ctx.cfg.long_run_s)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001
        _append(ctx.path, {**job.base, "key": rk, "status": "failed", "stage": "query", "query_args": qa,
                           "mode": mode, "error": f"{type(e).__name__}: {e}", "timestamp": _now()})
        ctx.summary.failed += 1
        ctx.log(f"{job.name} {qa} [{mode}]: FAILED ({type(e).__name__}: {e}); recorded, going on")
        return None


def _record(ctx: _Ctx, job: _Job, qa: dict, mode: str, rk: str, m: dict, started: str, load, **extra) -> None:
    """Score one measured point and append its result line."""
    k, nq = ctx.cfg.count, len(ctx.Q)
    sc = score(ctx.ds, ctx.gt, m["ids"], k)
    lat = m["latencies_s"]
    latency = {"mean": 1e3 * m["search_time_s"] / nq, "p50": None, "p95": None, "p99": None}
    if lat is not None:
        latency.update({f"p{p}": 1e3 * float(np.percentile(lat, p)) for p in (50, 95, 99)})
    rec = {**job.base, "key": rk, "status": "ok", "query_args": qa, "mode": mode, "name": job.algo.describe(),
           **sc, "qps": nq / m["search_time_s"], "latency_ms": {a: _clean(b) for a, b in latency.items()},
           "search_time_s": m["search_time_s"], "run_times_s": m["run_times_s"], "cpu_time_s": m["cpu_time_s"],
           "qps_cpu": nq / max(m["cpu_time_s"], 1e-12), "runs": len(m["run_times_s"]),
           "warmup_queries": min(ctx.cfg.warmup, nq), "threads": m["threads"], "gt_origin": ctx.gt.origin,
           "load_avg_before": list(load) if load else None, "timestamp": started, **extra}
    _append(ctx.path, rec)
    ctx.summary.done += 1
    ctx.log(f"{job.name} {qa} [{mode}]: recall {sc['recall']:.4f}, {rec['qps']:,.0f} QPS wall, "
            f"{rec['qps_cpu']:,.0f} QPS CPU")


def _load() -> tuple[float, ...] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def _sweep(ctx: _Ctx, definitions: list[Definition]) -> None:
    """Build each definition and run its points, one definition after the other."""
    for d in definitions:
        job = _prepare(ctx, d)
        if job is None:
            continue
        try:
            if not _build(ctx, job):
                continue
            for qa, mode, rk in job.todo:
                started, load = _now(), _load()
                m = _measure(ctx, job, qa, mode, rk, d.runs or ctx.cfg.runs, ctx.cfg.warmup)
                if m is not None:
                    _record(ctx, job, qa, mode, rk, m, started, load)
        finally:
            _free(job)


def _sweep_interleaved(ctx: _Ctx, definitions: list[Definition]) -> None:
    """Build every definition, then time round-robin (see :func:`run_benchmark`): position ``j`` of every
    job's query-argument list, one pass each per repetition, the order rotated between repetitions."""
    jobs: list[_Job] = []
    try:
        for d in definitions:
            job = _prepare(ctx, d)
            if job is not None and _build(ctx, job):
                jobs.append(job)
            elif job is not None:
                _free(job)
        for mode in ctx.cfg.modes:
            lists = [(job, [t for t in job.todo if t[1] == mode]) for job in jobs]
            for j in range(max((len(pts) for _, pts in lists), default=0)):
                _interleave_point(ctx, [(job, pts[j]) for job, pts in lists if j < len(pts)])
    finally:
        for job in jobs:
            _free(job)


def _interleave_point(ctx: _Ctx, points: list[tuple[_Job, tuple]]) -> None:
    """One position of the round-robin: ``runs`` repetitions of one pass per (job, point), then the records."""
    best: dict[int, dict] = {}
    started, load = _now(), _load()
    live = list(range(len(points)))
    reps = max((job.d.runs or ctx.cfg.runs) for job, _ in points) if points else 0
    for rep in range(reps):
        order = live[rep % len(live):] + live[:rep % len(live)] if live else []
        for i in order:
            job, (qa, mode, rk) = points[i]
            if rep >= (job.d.runs or ctx.cfg.runs) or i not in live:
                continue
            m = _measure(ctx, job, qa, mode, rk, 1, ctx.cfg.warmup if rep == 0 else min(ctx.cfg.warmup, 100))
            if m is None:
                live.remove(i)
                best.pop(i, None)
                continue
            best[i] = merge(best.get(i), m)
            if m["search_time_s"] > ctx.cfg.long_run_s:
                live.remove(i)
    for i, m in sorted(best.items()):
        job, (qa, mode, rk) = points[i]
        _record(ctx, job, qa, mode, rk, m, started, load, interleaved=len(points))
