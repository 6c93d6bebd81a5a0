"""``annrec quickstart``: the whole pipeline on MovieLens ml-latest-small, with every figure of the main job.

Steps (each also available as its own command):

1. **RMSE** (explicit-ratings protocol): ``random_split(data, 0.1, seed=0)``, biased MF fitted on the 90%,
   RMSE on the 10%, beside the regularised bias-only baseline.
2. **Top-N model** (top-N protocol): ``temporal_user_split(data, 0.2)``; a second MF with the same
   hyper-parameters is fitted on the training part. THIS model is written to ``<out>/mf`` (so the top-N
   and index figures describe exactly the artifact that is served); its ``seen`` matrix holds every
   rating of the data set, so served recommendations never repeat a rated movie.
3. **Indexes** over its item vectors ``[q_i, b_i]`` (maximum inner product search): hnswlib HNSW
   (``M=16, ef_construction=200, ef=64``, as ``index/hnsw.yaml``) -> ``<out>/mf-hnsw``, and FAISS
   ``IVF{nlist},Flat`` (``nlist`` = 4*sqrt(n) rounded to a power of two, at most n/39; ``nprobe=8``, as
   ``index/ivf-flat.yaml``) -> ``<out>/mf-ivf``. ``annrec serve --model-dir <out>`` serves them.
4. **Recall@10 / NDCG@10** on the temporal split's test part, ranking every item the user did not rate
   in training: exactly (brute-force MIPS), and through each index with the training items as the
   search's deny-list (``Index.search(..., denied_ids=...)``).
5. **recall@10 vs QPS**: ANN-Benchmarks style, every user vector as a query, recall against the exact
   top-10 inner products over all items, QPS single-threaded one query at a time, for a few ``ef`` /
   ``nprobe`` values.
6. **Example recommendations** with titles for one user, through the HNSW index.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from annrec.cli.apps import (app, console, deprecated_option, force_option, json_option, resolve_deprecated,
                             write_json_report)
from annrec.errors import InputError

HNSW_PARAMS = {"M": 16, "ef_construction": 200, "ef": 64}
IVF_PARAMS = {"factory": "IVF{nlist},Flat", "nlist": "auto", "nprobe": 8}


def _int_list(text: str, name: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name} must be comma-separated positive integers such as 10,20,40; got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise InputError(f"{name} must be comma-separated positive integers such as 10,20,40; got {text!r}")
    return vals


def exact_neighbours(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top-``k`` inner products, ``(nq, k)`` int64 (ground truth)."""
    from annrec.metrics import top_k_excluding

    return top_k_excluding(queries @ vectors.T, k)


def recall_qps(index, queries: np.ndarray, gt_ids: np.ndarray, k: int, params: dict[str, int],
               min_seconds: float = 0.2) -> dict[str, Any]:
    """recall@k against ``gt_ids`` and single-threaded one-query-at-a-time QPS (ANN-Benchmarks protocol)."""
    found = np.empty((len(queries), k), dtype=object if gt_ids.dtype == object else np.int64)
    for i in range(len(queries)):  # warm-up pass, also the results
        found[i] = index.search(queries[i], k, params=params, threads=1)[0][0]
    hits = sum(len(set(f.tolist()) & set(g.tolist())) for f, g in zip(found, gt_ids))
    reps, t0 = 0, time.perf_counter()
    while True:
        for i in range(len(queries)):
            index.search(queries[i], k, params=params, threads=1)
        reps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    qps = reps * len(queries) / elapsed
    return {**params, f"recall@{k}": round(hits / gt_ids.size, 4),
            "qps": round(qps, 1), "latency_ms": round(1e3 / qps, 4)}


def check_quickstart_out(out: Path, force: bool = False) -> None:
    """Check before any work that ``out`` can hold the quickstart's three artifacts.

    Raises:
        InputError: ``out`` is a file, or ``out/mf``, ``out/mf-hnsw``, ``out/mf-ivf`` hold something other
            than artifacts of their kind (unless ``force``: moved aside, never deleted).
    """
    from annrec._io import check_output_dir
    from annrec.embeddings import KIND as EMB_KIND
    from annrec.errors import InputError
    from annrec.index.folder import KIND as INDEX_KIND

    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is a file, not a folder: give another --out")
    for name, kind in (("mf", EMB_KIND), ("mf-hnsw", INDEX_KIND), ("mf-ivf", INDEX_KIND)):
        check_output_dir(out / name, kind, force=force)


def run_quickstart(dataset: str = "ml-latest-small", data_dir: Path | None = None,
                   out: Path = Path("artifacts/quickstart"), params: dict[str, Any] | None = None,
                   k: int = 10, user: str | None = None, ef_values: tuple[int, ...] = (10, 20, 40, 80, 160),
                   nprobe_values: tuple[int, ...] = (1, 2, 4, 8, 16, 32), progress: bool = True) -> dict[str, Any]:
    """Run the quickstart and return its report (also printed); see the module docstring for the steps."""
    from annrec.cli.train_mf import load_ratings, print_rating_figures
    from annrec.eval.rating import rating_protocol
    from annrec.eval.topn import topn_protocol
    from annrec.train.mf import MatrixFactorization

    t_start = time.perf_counter()
    params = MatrixFactorization(**(params or {})).get_params()
    if isinstance(params["y_range"], list):
        params["y_range"] = tuple(params["y_range"])
    out = Path(out)
    report: dict[str, Any] = {"command": "quickstart", "dataset": dataset, "out": str(out), "params": params}
    timings: dict[str, float] = {}

    def step(title: str) -> None:
        from rich.markup import escape

        console.rule(f"[bold]{escape(title)}", align="left")

    step(f"1/6 data: MovieLens {dataset}")
    t = time.perf_counter()
    inter = load_ratings(dataset, data_dir, None, "", "", None, None)
    timings["load"] = time.perf_counter() - t
    console.print(f"{inter.n_events:,} ratings, {inter.n_users:,} users, {inter.n_items:,} movies "
                  f"({timings['load']:.1f} s)", highlight=False, markup=False)
    if user is not None:
        inter.user_index(user)  # an unknown example user fails now, not after training
    report["data"] = {"n_events": inter.n_events, "n_users": inter.n_users, "n_items": inter.n_items,
                      "data_hash": inter.fingerprint()}

    step("2/6 RMSE: biased MF on the random 90/10 split (seed 0)")
    t = time.perf_counter()
    _, _, rating_fig = rating_protocol(inter, params, progress=progress)
    timings["rmse_protocol"] = time.perf_counter() - t
    print_rating_figures(rating_fig)
    report["rating"] = rating_fig

    step("3/6 top-N model: biased MF on the per-user temporal split (last 20% of each user = test)")
    t = time.perf_counter()
    mf, train, test, topn_fig = topn_protocol(inter, params, k=k, progress=progress)
    emb = mf.to_embeddings(seen=inter, figures={
        "rating": rating_fig, "topn": topn_fig,
        "artifact": "trained on the training part of temporal_user_split(0.2) (the top-N model); seen = every "
                    "rating of the data set"})
    emb_dir = emb.save(out / "mf")
    timings["topn_model"] = time.perf_counter() - t
    console.print(f"wrote {emb_dir}: {len(emb):,} item vectors [q_i, b_i] and {len(emb.queries):,} user vectors "
                  f"[p_u, 1] of dim {emb.dim} (fit {topn_fig['fit_seconds']} s)", highlight=False, markup=False)

    step("4/6 indexes over the item vectors (maximum inner product search)")
    indexes = _build_indexes(emb, emb_dir, out, report)
    step(f"5/6 Recall@{k} / NDCG@{k} on the temporal split: exact and through each index")
    t = time.perf_counter()
    _evaluate_through_indexes(mf, emb, indexes, train, test, topn_fig, k, report)
    timings["topn_eval"] = time.perf_counter() - t
    step(f"6/6 recall@{k} (vs exact neighbours) against QPS, {len(emb.queries)} user queries, 1 thread")
    t = time.perf_counter()
    _recall_qps_sweep(emb, indexes, k, ef_values, nprobe_values, report)
    timings["recall_qps"] = time.perf_counter() - t
    console.rule("[bold]example recommendations", align="left")
    user = _example(inter, emb, indexes["mf-hnsw"], user, k, report)
    report["timings_seconds"] = {kk: round(v, 2) for kk, v in timings.items()}
    report["seconds"] = round(time.perf_counter() - t_start, 2)
    console.print(f"quickstart finished in {report['seconds']:.1f} s. Next: annrec recommend {user} --embeddings "
                  f"{out / 'mf'} --index {out / 'mf-hnsw'}   |   annrec serve --model-dir {out}", highlight=False,
                  markup=False)
    return report


def _build_indexes(emb, emb_dir: Path, out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Step 4: an hnswlib and a FAISS IVF index over the item vectors, saved under ``out``."""
    from annrec.cli.index_cmds import build_from_embeddings, folder_bytes
    from annrec.index.spec import IndexSpec

    indexes = {}
    report["indexes"] = {}
    for name, backend, p in (("mf-hnsw", "hnswlib", HNSW_PARAMS), ("mf-ivf", "faiss", IVF_PARAMS)):
        t = time.perf_counter()
        index = build_from_embeddings(emb, emb_dir, IndexSpec(backend=backend, params=dict(p)))
        build_s = time.perf_counter() - t
        path = index.save(out / name)
        indexes[name] = index
        shown = {kk: v for kk, v in index.params.items() if kk not in ("factory", "nlist")}
        report["indexes"][name] = {"path": str(path), "backend": backend, "params": index.params,
                                   "build_seconds": round(build_s, 3), "count": len(index),
                                   "memory_bytes": index.memory_bytes(), "folder_bytes": folder_bytes(path)}
        console.print(f"{name}: {backend} {shown}, {len(index):,} items, build {build_s:.2f} s, "
                      f"{folder_bytes(path) / 2**20:.1f} MiB on disk -> {path}", highlight=False, markup=False)
    return indexes


def _evaluate_through_indexes(mf, emb, indexes, train, test, topn_fig, k: int, report: dict[str, Any]) -> None:
    """Step 5: the top-N figures of the exact model and through each index, printed and in ``report``."""
    from annrec.cli.train_mf import print_topn_figures
    from annrec.metrics import evaluate_topn
    from annrec.recommend import Recommender, topn_recommend_fn

    qv = mf.query_vectors()  # query vectors and item ids in the id space of the split
    table = {"mf (exact)": topn_fig["table"]["mf"]}
    for name, index in indexes.items():
        m = evaluate_topn(topn_recommend_fn(Recommender(emb, index), qv, train.item_ids), train, test, k)
        label = f"mf via {name} (" + ("ef=64" if "hnsw" in name else "nprobe=8") + ")"
        table[label] = {kk: (round(v, 4) if isinstance(v, float) else v) for kk, v in m.items()}
    table["bias only (exact)"] = topn_fig["table"]["bias_only"]
    table["popularity"] = topn_fig["table"]["popularity"]
    print_topn_figures({"k": k, "table": table}, title=f"top-N, temporal split, {topn_fig['table']['mf']['users']} "
                                                        f"test users, rated-in-training items excluded")
    report["topn"] = {**topn_fig, "table": table}


def _recall_qps_sweep(emb, indexes, k: int, ef_values, nprobe_values, report: dict[str, Any]) -> None:
    """Step 6: recall@k against the exact neighbours and single-thread QPS over each index's parameter."""
    from rich.table import Table

    gt_ids = emb.ids[exact_neighbours(emb.queries, emb.vectors, k)]
    sweep = []
    for name, index in indexes.items():
        values = ef_values if index.backend == "hnswlib" else nprobe_values
        pname = "ef" if index.backend == "hnswlib" else "nprobe"
        for v in values:
            sweep.append({"index": name, **recall_qps(index, emb.queries, gt_ids, k, {pname: int(v)})})
    tq = Table(title=f"recall@{k} vs QPS (single thread, one query at a time)", title_justify="left")
    for c in ("index", "parameter", f"recall@{k}", "QPS", "latency ms"):
        tq.add_column(c, justify="left" if c in ("index", "parameter") else "right")
    for row in sweep:
        pname = "ef" if "ef" in row else "nprobe"
        tq.add_row(row["index"], f"{pname}={row[pname]}", f"{row[f'recall@{k}']:.4f}", f"{row['qps']:,.0f}",
                   f"{row['latency_ms']:.3f}")
    console.print(tq)
    report["recall_qps"] = {"protocol": f"{len(emb.queries)} user vectors [p_u, 1] as queries, recall@{k} against the "
                                        f"exact top-{k} inner products over all {len(emb)} items; QPS single-threaded "
                                        f"one query at a time through annrec's Index.search",
                            "rows": sweep}


def _example(inter, emb, index, user, k: int, report: dict[str, Any]) -> str:
    """The example user's best-rated movies and top-``k`` recommendations; returns the user id shown."""
    from annrec.cli.index_cmds import results_table
    from annrec.recommend import Recommender

    rec = Recommender(emb, index)
    if user is None:
        user = str(emb.query_ids[0])
    recs = rec.recommend(user, k=k)
    mine = inter.subset(inter.user_idx == inter.user_index(user))
    titles = inter.item_titles()
    best = np.argsort(-mine.rating, kind="stable")[:5]
    liked = [f"{titles.get(mine.item_ids[mine.item_idx[j]], mine.item_ids[mine.item_idx[j]])} ({mine.rating[j]:g})"
             for j in best]
    console.print(f"user {user} rated {mine.n_events} movies; highest: " + "; ".join(liked), highlight=False,
                  markup=False)
    console.print(results_table([r.item_id for r in recs], [r.score for r in recs],
                                {r.item_id: r.metadata for r in recs if r.metadata},
                                f"top {k} for user {user} through mf-hnsw (rated movies excluded)"))
    report["example"] = {"user": user, "results": [{"id": r.item_id, "score": round(r.score, 4),
                                                    "title": (r.metadata or {}).get("title")} for r in recs]}
    return user


@app.command("quickstart")
def quickstart(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder holding ml-latest-small/ (else "
                                         "$ANNREC_DATA_DIR, the cache, or a download)."),
    dataset: str = typer.Option("ml-latest-small", "--dataset", help="MovieLens data set."),
    out: Path = typer.Option(Path("artifacts/quickstart"), "--out", help="Output folder: <out>/mf (Embeddings), "
                             "<out>/mf-hnsw and <out>/mf-ivf (indexes)."),
    factors: int | None = typer.Option(None, "--factors", help="Latent factors of the MF model (default 64)."),
    epochs: int = typer.Option(20, "--epochs", help="Maximum training epochs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the model (the splits use the protocol's seeds)."),
    num_threads: int | None = typer.Option(None, "--num-threads", help="torch CPU threads while training (default 1: "
                                           "the steps are too small for intra-op parallelism)."),
    user: str | None = typer.Option(None, "--user", help="User for the example recommendations (default: the "
                                    "first user id)."),
    ef: str = typer.Option("10,20,40,80,160", "--ef", help="hnswlib ef values of the recall/QPS table."),
    nprobe: str = typer.Option("1,2,4,8,16,32", "--nprobe", help="FAISS nprobe values of the recall/QPS table."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show per-epoch progress bars."),
    force: bool = force_option(),
    json_path: Path | None = json_option(),
    dim: int | None = deprecated_option("--dim"),
    threads: int | None = deprecated_option("--threads"),
) -> None:
    """Train MF on MovieLens, index it with HNSW and FAISS IVF, and report RMSE, Recall@10/NDCG@10 and recall/QPS."""
    factors = resolve_deprecated(factors, dim, "--factors", "--dim") or 64
    num_threads = resolve_deprecated(num_threads, threads, "--num-threads", "--threads") or 1
    check_quickstart_out(out, force=force)
    report = run_quickstart(dataset=dataset, data_dir=data_dir, out=out,
                            params={"factors": factors, "epochs": epochs, "seed": seed, "num_threads": num_threads},
                            user=user, ef_values=tuple(_int_list(ef, "--ef")),
                            nprobe_values=tuple(_int_list(nprobe, "--nprobe")), progress=progress)
    write_json_report(json_path, report)


__all__ = ["quickstart", "run_quickstart", "recall_qps", "exact_neighbours"]
