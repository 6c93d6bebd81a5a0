"""Reading results back: Pareto frontiers, the "best QPS at recall >= r" table, PNG plots.

The Pareto frontier of an algorithm is ANN-Benchmarks' ``create_pointset``
(``ann_benchmarks/plotting/utils.py``): sort its runs by QPS, fastest first, and keep each run whose
recall beats every faster run's.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from annrec.errors import InputError

RECALL_KEYS = {"recall": "Recall@k (neighbour ids)", "recall_threshold": "Recall@k (distance threshold, eps 1e-3)"}
THRESHOLDS = (0.90, 0.95, 0.99)


def pareto_frontier(points: Iterable[Any], *, x=lambda p: p[0], y=lambda p: p[1]) -> list[Any]:
    """Points not dominated in (higher x, higher y), ordered by increasing x.

    Args:
        points: anything; ``x`` and ``y`` extract recall and QPS (default: items 0 and 1).

    Returns:
        The frontier, recall increasing (and QPS decreasing). Ties in QPS keep the higher recall.
    """
    pts = sorted(points, key=lambda p: (-y(p), -x(p)))
    out, best = [], float("-inf")
    for p in pts:
        if x(p) > best:
            out.append(p)
            best = x(p)
    return out


def ok_runs(records: Iterable[dict], mode: str | None = None) -> list[dict]:
    """Successful run records, optionally of one mode."""
    return [r for r in records if r.get("status") == "ok" and (mode is None or r.get("mode") == mode)]


def _params(r: dict) -> str:
    args = {**(r.get("build_args") or {}), **(r.get("query_args") or {})}
    return ", ".join(f"{k}={v}" for k, v in args.items()) or "—"


def best_at_recall(records: Iterable[dict], thresholds: Sequence[float] = THRESHOLDS, *, mode: str = "single",
                   recall_key: str = "recall") -> list[dict]:
    """For each threshold and algorithm label, the fastest run whose recall is at least the threshold.

    Returns:
        Rows ``{"threshold", "label", "qps", "recall", "params", "build_time_s", "index_disk_bytes",
        "index_memory_bytes", "record"}``; an algorithm that never reaches a threshold gets no row for it.
    """
    if recall_key not in RECALL_KEYS:
        raise InputError(f"unknown recall measure {recall_key!r}: use {', '.join(RECALL_KEYS)}")
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in ok_runs(records, mode):
        by_label[r["label"]].append(r)
    rows = []
    for t in thresholds:
        for label, runs in by_label.items():
            good = [r for r in runs if r[recall_key] >= t - 1e-12]
            if not good:
                continue
            b = max(good, key=lambda r: r["qps"])
            rows.append({"threshold": t, "label": label, "qps": b["qps"], "recall": b[recall_key],
                         "params": _params(b), "build_time_s": b.get("build_time_s"),
                         "index_disk_bytes": b.get("index_disk_bytes"),
                         "index_memory_bytes": b.get("index_memory_bytes"), "record": b})
    rows.sort(key=lambda r: (r["threshold"], -r["qps"]))
    return rows


def _mb(x: float | None) -> str:
    return "—" if x is None else f"{x / 2**20:,.1f}"


def _cpu_qps(r: dict) -> str:
    return "—" if not r.get("qps_cpu") else f"{r['qps_cpu']:,.0f}"


def markdown_table(records: Iterable[dict], *, mode: str = "single", recall_key: str = "recall",
                   thresholds: Sequence[float] = THRESHOLDS) -> str:
    """A Markdown table: per recall threshold and algorithm, the best QPS, its recall and parameters,
    build time, index size (disk / memory) and the QPS of the same run from CPU time, fastest first. Algorithms that never reach a threshold
    are listed under it as "not reached" with their best recall."""
    records = list(records)
    rows = best_at_recall(records, thresholds, mode=mode, recall_key=recall_key)
    labels = sorted({r["label"] for r in ok_runs(records, mode)})
    best_recall = {lab: max(r[recall_key] for r in ok_runs(records, mode) if r["label"] == lab) for lab in labels}
    lines = [f"| recall ≥ | algorithm | QPS ({mode}) | recall | parameters | build (s) | disk (MB) | memory (MB) "
             f"| QPS from CPU time |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    rss_used = False
    for t in thresholds:
        reached = [r for r in rows if r["threshold"] == t]
        for r in reached:
            bt = r["build_time_s"]
            rss = r["record"].get("index_memory_source") == "rss"
            rss_used |= rss
            lines.append(f"| {t:.2f} | {r['label']} | {r['qps']:,.0f} | {r['recall']:.4f} | {r['params']} | "
                         f"{'—' if bt is None else f'{bt:,.1f}'} | {_mb(r['index_disk_bytes'])} | "
                         f"{_mb(r['index_memory_bytes'])}{' *' if rss else ''} | {_cpu_qps(r['record'])} |")
        missing = [lab for lab in labels if lab not in {r["label"] for r in reached}]
        if missing:
            lines.append(f"| {t:.2f} | not reached: " + ", ".join(f"{lab} (max {best_recall[lab]:.3f})"
                                                            for lab in missing) + " | | | | | | | |")
    if rss_used:
        lines.append("\n\\* memory measured as the growth of the process' resident set during the build (the "
                     "library gives no estimate of its own)")
    return "\n".join(lines)


def plot(records: Iterable[dict], out: str | os.PathLike, *, mode: str = "single", recall_key: str = "recall",
         title: str | None = None) -> Path:
    """Write a PNG of recall (x) against QPS (y, log scale): every run faded, each algorithm's Pareto
    frontier as a line (the ANN-Benchmarks plot), with matplotlib's Agg backend.

    Raises:
        InputError: no successful runs of ``mode`` in ``records``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = ok_runs(records, mode)
    if not runs:
        raise InputError(f"no successful {mode}-mode runs to plot: run `annrec bench run` (with --modes {mode})")
    if not all(isinstance(r.get(recall_key), (int, float)) for r in runs):
        raise InputError(f"the results have no numeric {recall_key!r} field: use {', '.join(RECALL_KEYS)} for "
                         f"`bench run` results, recall@10 or ndcg@10 for `bench rec` results")
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_label[r["label"]].append(r)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    cmap = plt.get_cmap("tab10" if len(by_label) <= 10 else "tab20")
    markers = "o^sDvP*Xh<>p"
    for i, (label, rs) in enumerate(sorted(by_label.items())):
        color = cmap(i % cmap.N)
        ax.scatter([r[recall_key] for r in rs], [r["qps"] for r in rs], color=color, alpha=0.25, s=14)
        front = pareto_frontier(rs, x=lambda r: r[recall_key], y=lambda r: r["qps"])
        ax.plot([r[recall_key] for r in front], [r["qps"] for r in front], marker=markers[i % len(markers)],
                color=color, label=label, linewidth=1.6, markersize=5)
    ax.set_yscale("log")
    ax.set_xlabel(RECALL_KEYS.get(recall_key, recall_key))
    ax.set_ylabel(f"Queries per second ({'1 thread, one query at a time' if mode == 'single' else 'batch, all cores'})")
    xs = [r[recall_key] for r in runs]
    pad = 0.04 * (max(xs) - min(xs)) + 0.005
    ax.set_xlim(max(0.0, min(xs) - pad), min(1.005, max(xs) + pad) if max(xs) <= 1 else max(xs) + pad)
    ax.grid(True, which="both", alpha=0.3)
    ds = runs[0].get("dataset", "")
    k = runs[0].get("count", "")
    ax.set_title(title or f"{ds} (k={k}, {mode} mode) — up and to the right is better")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def overhead_ratios(records: Iterable[dict], pairs: dict[str, str] | None = None) -> list[dict]:
    """QPS of annrec's index layer over the raw library's at identical parameters and mode.

    Args:
        pairs: algorithm name of annrec's adapter -> raw adapter (default: annrec-hnswlib -> hnswlib,
            annrec-faiss -> faiss).

    Returns:
        Rows ``{"library", "mode", "params", "qps_annrec", "qps_raw", "ratio", "ratio_cpu" (from CPU time,
        when recorded), "recall_annrec", "recall_raw"}``.
    """
    pairs = pairs or {"annrec-hnswlib": "hnswlib", "annrec-faiss": "faiss"}
    idx: dict[tuple, dict] = {}
    for r in ok_runs(records):
        key = (r["algorithm"], r["mode"], repr(sorted((r.get("build_args") or {}).items())),
               repr(sorted((r.get("query_args") or {}).items())), r.get("n_queries"), r.get("count"))
        if key not in idx or r["qps"] > idx[key]["qps"]:
            idx[key] = r
    rows = []
    for (alg, mode, b, q, nq, k), r in idx.items():
        raw_alg = pairs.get(alg)
        if raw_alg is None:
            continue
        raw = idx.get((raw_alg, mode, b, q, nq, k))
        if raw is None:
            continue
        row = {"library": raw_alg, "mode": mode, "params": _params(r), "qps_annrec": r["qps"],
               "qps_raw": raw["qps"], "ratio": r["qps"] / raw["qps"], "recall_annrec": r["recall"],
               "recall_raw": raw["recall"]}
        if r.get("qps_cpu") and raw.get("qps_cpu"):
            row["ratio_cpu"] = r["qps_cpu"] / raw["qps_cpu"]
        rows.append(row)
    rows.sort(key=lambda r: (r["library"], r["mode"], r["params"]))
    return rows
