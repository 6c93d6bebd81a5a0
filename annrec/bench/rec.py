"""Recommendation quality against QPS: what approximate search costs the recommendations.

Protocol (DESIGN.md, "Top-N"): the per-user temporal split of the interaction log the Embeddings
were trained on (each user's last 20 % of events by timestamp are the test set); for every test
user, the top ``k`` items by inner product (maximum inner product search, the artifact's metric)
among the items the user did not see in training; Recall@k and NDCG@k as in :mod:`annrec.metrics`.

Recommendations are computed the way they are served: one user per request, one thread
(ANN-Benchmarks' single-query mode), through :meth:`annrec.recommend.Recommender.recommend` over the
configuration's annrec index — the same call the CLI and the HTTP route make, the seen items of the
split's training part excluded inside the index search. Exact search is annrec's FAISS ``Flat`` index
through the same path. Other libraries' adapters (not served by annrec) are asked for
``k + |seen(u)|`` neighbours, the seen items dropped. Only the recommendation calls are timed (QPS =
users / total time, best of ``runs``). Each configuration also reports ``overlap@k``: the mean
fraction of the exact top-k list it returns.

The Embeddings should be trained on the *train* part of that split (``annrec train als --fit-on
train``); an artifact trained on all events has seen the test items and its figures are optimistic
(a warning says so).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annrec.bench.algorithms import ADAPTERS, available
from annrec.bench.definitions import Definition
from annrec.bench.runner import _append, _key, _set_global_threads, _thread_limits, machine_info, read_results
from annrec.errors import DataError, InputError


@dataclass
class RecTask:
    """Query vectors, seen and relevant item rows of the test users.

    Attributes:
        vectors: float32 ``(n_items, dim)`` item vectors; metric: the artifact's metric.
        queries: float32 ``(n_users, dim)`` vectors of the test users that have one.
        seen: per user, int array of item rows seen in training (excluded from the ranking).
        relevant: per user, int array of relevant (test) item rows; items the artifact has no vector
            for get negative placeholders (they count in the denominator, never as hits).
        n_test_users: test users in the split (users without a vector get empty lists).
        info: provenance (dataset, split, counts, warnings).
    """

    vectors: np.ndarray
    metric: str
    queries: np.ndarray
    seen: list[np.ndarray]
    relevant: list[np.ndarray]
    n_test_users: int
    info: dict[str, Any]


def load_rec_task(embeddings: str | os.PathLike, *, dataset: str | None = None,
                  data_dir: str | os.PathLike | None = None, test_fraction: float = 0.2,
                  max_users: int | None = None, log: Callable[[str], None] = print) -> RecTask:
    """Pair an Embeddings artifact (users as queries) with the test split of its data set.

    Args:
        dataset: MovieLens name or an interactions file (CSV/Parquet with user_id,item_id,timestamp
            columns); default: the artifact manifest's ``dataset``.
        max_users: evaluate only the first ``max_users`` test users (quick runs).

    Raises:
        InputError: the artifact has no user vectors, or no data set is named.
        DataNotFoundError / DataError: the data set cannot be loaded, or shares no users with the artifact.
    """
    from annrec.data import MOVIELENS, load_interactions, load_movielens, temporal_user_split
    from annrec.embeddings import Embeddings

    emb = Embeddings.load(embeddings)
    if emb.queries is None:
        raise InputError(f"{embeddings} has no user (query) vectors: `annrec bench rec` needs a recommender's "
                         f"Embeddings (e.g. `annrec train als`)")
    name = dataset or emb.manifest.get("dataset")
    if not name:
        raise InputError(f"{embeddings}/manifest.json names no data set: pass --dataset")
    if name in MOVIELENS:
        inter = load_movielens(name, data_dir=data_dir, progress=False)
    elif Path(name).is_file():
        inter = load_interactions(name, timestamp_col="timestamp")
    else:
        raise InputError(f"unknown data set {name!r}: use a MovieLens name ({', '.join(MOVIELENS)}) or an "
                         f"interactions file")
    train, test = temporal_user_split(inter, test_fraction)
    warnings = []
    fit_on = (emb.manifest.get("figures") or {}).get("fit_on") or emb.manifest.get("fit_on")
    if fit_on == "all" or emb.manifest.get("n_events") == inter.n_events:
        warnings.append("the Embeddings were trained on all events, test items included: Recall/NDCG are "
                        "optimistic (train with --fit-on train for the protocol); exact-vs-index "
                        "comparisons stay valid")
    item_row = {v: i for i, v in enumerate(emb.ids.tolist())}
    user_row = {v: i for i, v in enumerate(emb.query_ids.tolist())}
    tr = train.to_csr(binary=True)
    te = test.to_csr(binary=True)
    item_ids = inter.item_ids.tolist()
    user_ids = inter.user_ids.tolist()
    test_users = np.flatnonzero(np.diff(te.indptr) > 0)
    if max_users is not None:
        test_users = test_users[:max_users]
    q_rows, seen, relevant, missing_users = [], [], [], 0
    placeholder = -2
    for u in test_users:
        r = user_row.get(user_ids[u])
        rel = []
        for i in te.indices[te.indptr[u]:te.indptr[u + 1]]:
            row = item_row.get(item_ids[i])
            if row is None:
                row, placeholder = placeholder, placeholder - 1
            rel.append(row)
        relevant.append(np.asarray(rel, dtype=np.int64))
        s = [item_row.get(item_ids[i]) for i in tr.indices[tr.indptr[u]:tr.indptr[u + 1]]]
        seen.append(np.asarray(sorted(x for x in s if x is not None), dtype=np.int64))
        q_rows.append(-1 if r is None else r)
        missing_users += r is None
    if missing_users == len(test_users):
        raise DataError(f"none of the {len(test_users)} test users of {name} has a vector in {embeddings}: "
                        f"the artifact was trained on other data")
    q_rows = np.asarray(q_rows)
    have = q_rows >= 0
    # users without a vector get no recommendations (they still count, as in annrec.metrics.evaluate_topn)
    queries = np.zeros((len(q_rows), emb.dim), dtype=np.float32)
    queries[have] = emb.queries[q_rows[have]]
    info = {"embeddings": str(embeddings), "dataset": name, "split": f"temporal_user_split({test_fraction})",
            "test_users": int(len(test_users)), "users_without_vector": int(missing_users),
            "n_items": len(emb), "dim": emb.dim, "metric": emb.metric, "trainer": emb.manifest.get("trainer"),
            "data_hash": emb.manifest.get("data_hash"), "warnings": warnings, "has_vector": have}
    for w in warnings:
        log(f"warning: {w}")
    return RecTask(emb.vectors, emb.metric, queries, seen, relevant, len(test_users), info)


def _served(algo, task: RecTask):
    """A :class:`~annrec.recommend.Recommender` over ``algo``'s annrec index (item ids = item rows, user ids
    = test-user positions, seen items = the split's training part), or ``None`` for other libraries."""
    import scipy.sparse as sp

    from annrec.embeddings import Embeddings
    from annrec.index import Index
    from annrec.recommend import Recommender

    index = getattr(algo, "index", None)
    if not isinstance(index, Index):
        return None
    lengths = [len(s) for s in task.seen]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate(task.seen) if task.seen else np.empty(0, dtype=np.int64)
    seen = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                         shape=(len(task.queries), len(task.vectors)))
    emb = Embeddings(task.vectors, np.arange(len(task.vectors), dtype=np.int64), task.metric,
                     queries=task.queries, query_ids=np.arange(len(task.queries), dtype=np.int64))
    return Recommender(emb, index, seen=seen)


def _recommend(algo, task: RecTask, k: int, runs: int) -> tuple[np.ndarray, float]:
    """Top-k unseen item rows per user through ``algo`` (single-query mode), and the best total time."""
    n_items = len(task.vectors)
    have = task.info["has_vector"]
    served = _served(algo, task)
    best, best_recs = np.inf, None
    perf = time.perf_counter
    for _ in range(runs):
        recs = np.full((len(task.queries), k), -1, dtype=np.int64)
        total = 0.0
        gc.collect(1)  # young generations: cheap, clears the last pass's garbage
        for u in range(len(task.queries)):
            if not have[u]:
                continue
            if served is not None:
                t0 = perf()
                hits = served.recommend(u, k, threads=1)
                total += perf() - t0
                r = np.fromiter((h.item_id for h in hits), dtype=np.int64, count=len(hits))
            else:
                seen = task.seen[u]
                t0 = perf()
                r = algo.query(task.queries[u], min(n_items, k + len(seen)))
                total += perf() - t0
                r = np.asarray(r).ravel()
                r = r[(r >= 0) & ~np.isin(r, seen)][:k]
            recs[u, :len(r)] = r
        if total < best:
            best, best_recs = total, recs
    return best_recs, best


def rec_benchmark(task: RecTask, definitions: Iterable[Definition], results_path: str | os.PathLike, *,
                  k: int = 10, runs: int = 3, force: bool = False,
                  log: Callable[[str], None] = print) -> list[dict]:
    """Recall@k / NDCG@k of the recommendations and QPS, for exact search and every index configuration.

    The exact reference (annrec's FAISS ``Flat`` index) always runs first. One JSON line per (build, query
    arguments) is appended to ``results_path``; finished ones are skipped unless ``force``.

    Returns:
        The records of this data set and k (old and new), exact first.
    """
    results_path = Path(results_path)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if results_path.exists() and not force:
        done = {r.get("key") for r in read_results(results_path, warn=log) if r.get("status") == "ok"}
    machine = machine_info()
    info = {a: b for a, b in task.info.items() if a != "has_vector"}
    ident = (info["embeddings"], info["data_hash"], info["dataset"], info["split"], info["test_users"], k)
    defs = [Definition("exact", "annrec-faiss", {"factory": "Flat"}, [{}], ("single",))]
    defs += [d for d in definitions if d.label != "exact"]
    gc.collect()
    gc.freeze()  # see runner.run_benchmark: cheap collections before the timed passes
    try:
        _rec_sweep(task, defs, results_path, k, runs, force, done, ident, info, machine, log)
    finally:
        gc.unfreeze()
    wanted = {_key("rec", ident, d.label, d.algorithm, d.build_args, qa) for d in defs for qa in d.query_args}
    latest: dict[str, dict] = {}
    for r in read_results(results_path):
        if r.get("status") == "ok" and r.get("key") in wanted:  # this run's configurations only
            latest[r["key"]] = r
    return sorted(latest.values(), key=lambda r: (r["label"] != "exact", r["label"], r[f"overlap@{k}"], -r["qps"]))


def _rec_sweep(task: RecTask, defs: list[Definition], results_path: Path, k: int, runs: int, force: bool,
               done: set, ident: tuple, info: dict, machine: dict, log: Callable[[str], None]) -> None:
    from annrec.metrics import ranking_metrics

    exact_recs = None
    n_users = int(task.info["has_vector"].sum())
    for d in defs:
        cls = ADAPTERS[d.algorithm]
        if not available(cls):
            log(f"skipping {d.label}: the optional package {cls.package!r} is not installed")
            continue
        keys = {tuple(sorted(qa.items())): _key("rec", ident, d.label, d.algorithm, d.build_args, qa)
                for qa in d.query_args}
        if d.label != "exact" and all(kk in done for kk in keys.values()):
            log(f"{d.label} {d.build_args}: done, skipped (use --force)")
            continue
        algo = cls(task.metric, **d.build_args)
        try:
            t0 = time.perf_counter()
            with _thread_limits(algo.threads):
                algo.fit(task.vectors)
            build = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
            rec = {"key": _key("rec", ident, d.label, d.algorithm, d.build_args), "status": "failed",
                   "stage": "build", "label": d.label, "algorithm": d.algorithm, "build_args": d.build_args,
                   "error": f"{type(e).__name__}: {e}", **info}
            _append(results_path, rec)
            log(f"{d.label} {d.build_args}: build FAILED ({type(e).__name__}: {e}); recorded, going on")
            continue
        try:
            for qa in d.query_args:
                key = keys[tuple(sorted(qa.items()))]
                if key in done and d.label != "exact":
                    continue
                algo.set_query_arguments(**qa)
                algo.set_threads(1)
                _set_global_threads(1)
                try:
                    with _thread_limits(1):
                        for u in range(min(50, len(task.queries))):  # warm-up
                            algo.query(task.queries[u], k)
                        recs, total = _recommend(algo, task, k, runs)
                except Exception as e:  # noqa: BLE001
                    _append(results_path, {"key": key, "status": "failed", "stage": "query", "label": d.label,
                                           "algorithm": d.algorithm, "build_args": d.build_args, "query_args": qa,
                                           "error": f"{type(e).__name__}: {e}", **info})
                    log(f"{d.label} {qa}: FAILED ({type(e).__name__}: {e}); recorded, going on")
                    continue
                m = ranking_metrics(recs, task.relevant, k, n_items=len(task.vectors))
                if exact_recs is None:
                    exact_recs = recs
                overlap = _overlap(recs, exact_recs, k, task.info["has_vector"])
                rec = {"key": key, "status": "ok", "mode": "single", "label": d.label, "algorithm": d.algorithm,
                       "build_args": d.build_args, "query_args": qa, "name": algo.describe(), "count": k,
                       f"recall@{k}": m["recall"], f"ndcg@{k}": m["ndcg"], "mrr": m["mrr"], f"map@{k}": m["map"],
                       f"precision@{k}": m["precision"], f"coverage@{k}": m.get("coverage"),
                       f"overlap@{k}": overlap, "qps": n_users / total, "search_time_s": total,
                       "users": m["users"], "build_time_s": build, "runs": runs, **info, "machine": machine,
                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                if d.label != "exact" or key not in done or force:
                    _append(results_path, rec)
                log(f"{d.label} {d.build_args} {qa}: Recall@{k} {m['recall']:.4f}, NDCG@{k} {m['ndcg']:.4f}, "
                    f"overlap {overlap:.3f}, {rec['qps']:,.0f} QPS")
        finally:
            algo.done()


def _overlap(recs: np.ndarray, exact: np.ndarray, k: int, have: np.ndarray) -> float:
    vals = []
    for a, b in zip(recs[have], exact[have]):
        b = b[b >= 0]
        if len(b):
            vals.append(len(np.intersect1d(a[a >= 0], b)) / len(b))
    return float(np.mean(vals)) if vals else 0.0


def rec_table(records: list[dict], k: int = 10) -> str:
    """Markdown: per configuration Recall@k, NDCG@k, overlap with the exact lists, QPS, and the change
    against exact search (in the order given: :func:`rec_benchmark` returns exact first, then each label
    by increasing overlap)."""
    exact = next((r for r in records if r["label"] == "exact"), None)
    lines = [f"| configuration | parameters | Recall@{k} | NDCG@{k} | overlap@{k} | QPS (1 thread) | "
             f"ΔNDCG vs exact | speed-up vs exact |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        params = ", ".join(f"{a}={b}" for a, b in {**r["build_args"], **r["query_args"]}.items()) or "—"
        dn = "—" if exact is None else f"{r[f'ndcg@{k}'] - exact[f'ndcg@{k}']:+.4f}"
        sp = "—" if exact is None else f"{r['qps'] / exact['qps']:.1f}×"
        lines.append(f"| {r['label']} | {params} | {r[f'recall@{k}']:.4f} | {r[f'ndcg@{k}']:.4f} | "
                     f"{r[f'overlap@{k}']:.3f} | {r['qps']:,.0f} | {dn} | {sp} |")
    return "\n".join(lines)
