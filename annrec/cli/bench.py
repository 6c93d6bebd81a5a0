"""``annrec bench ...`` (ANN-Benchmarks-style recall/QPS) and ``annrec index tune``."""

from __future__ import annotations

from pathlib import Path

import typer

from annrec.cli.apps import bench_app, console, err_console, index_app, json_option, write_json_report

_DATASET_HELP = ("Data set: an ANN-Benchmarks name (fashion-mnist-784-euclidean reads the Debian IDX files; "
                 "others need `annrec bench download`), an .hdf5 file, an .fvecs/.bvecs/.npy base file (with "
                 "--queries/--metric), or an Embeddings folder.")


def _log(msg: str) -> None:
    console.print(msg, highlight=False, markup=False)


def _warn(msg: str) -> None:
    err_console.print(f"warning: {msg}", highlight=False, markup=False)


def _open_dataset(dataset: str, queries: str | None, groundtruth: Path | None, metric: str | None,
                  n_queries: int | None, cache_dir: Path | None):
    from annrec.bench.datasets import load_dataset

    return load_dataset(dataset, queries=queries, groundtruth=groundtruth, metric=metric, n_queries=n_queries,
                        cache_dir=cache_dir)


def _modes(modes: str) -> tuple[str, ...]:
    from annrec.bench.definitions import MODES
    from annrec.errors import InputError

    out = tuple(m.strip() for m in modes.split(",") if m.strip())
    bad = [m for m in out if m not in MODES]
    if bad or not out:
        raise InputError(f"unknown mode(s) {bad or modes!r}: use single, batch or single,batch")
    return out


@bench_app.command("download")
def download_cmd(
    name: str = typer.Argument(..., help="ANN-Benchmarks data set, e.g. glove-100-angular, sift-128-euclidean."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Cache folder (default bench/cache or "
                                          "$ANNREC_BENCH_CACHE); the file goes to <cache>/data/NAME.hdf5."),
    url: str | None = typer.Option(None, "--url", help="Download from this URL instead of ann-benchmarks.com."),
) -> None:
    """Download an ANN-Benchmarks HDF5 file (http://ann-benchmarks.com/NAME.hdf5); fails clearly offline."""
    from annrec.bench.datasets import download, read_hdf5

    path = download(name, cache_dir, url=url)
    ds = read_hdf5(path, name)
    console.print(f"{name}: {len(ds.train):,} train, {len(ds.test):,} test, dim {ds.dim}, {ds.distance} -> {path}")


@bench_app.command("export")
def export_cmd(
    dataset: str = typer.Argument(..., help=_DATASET_HELP),
    out: Path = typer.Argument(..., help="HDF5 file to write (ANN-Benchmarks format, with ground truth)."),
    queries: str | None = typer.Option(None, "--queries", help="Query file (.fvecs/.bvecs/.npy) for a base "
                                       "file; for Embeddings: users, items or auto."),
    groundtruth: Path | None = typer.Option(None, "--groundtruth", help="Neighbour ids (.ivecs/.npy) to use "
                                            "instead of computing them."),
    metric: str | None = typer.Option(None, "--metric", help="l2 (euclidean), cosine (angular) or ip."),
    n_queries: int | None = typer.Option(None, "--n-queries", help="Query count (first N, or the held-out sample size)."),
    k: int = typer.Option(100, "--k", help="Neighbours per query to store."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Ground-truth cache folder."),
) -> None:
    """Write any supported data set as an ANN-Benchmarks HDF5 file with exact neighbours and distances."""
    from annrec.bench.datasets import Dataset, write_hdf5
    from annrec.bench.groundtruth import ground_truth

    ds = _open_dataset(dataset, queries, groundtruth, metric, n_queries, cache_dir)
    gt = ground_truth(ds, min(k, len(ds.train)), cache_dir=cache_dir)
    full = Dataset(ds.name, ds.train, ds.test, ds.metric, gt.neighbors, gt.distances.astype("float32"),
                   ds.source, ds.meta)
    write_hdf5(full, out)
    console.print(f"wrote {out}: {len(ds.train):,} train, {len(ds.test):,} test, dim {ds.dim}, {ds.distance}, "
                  f"k={gt.k} ({gt.origin} ground truth)")


@bench_app.command("run")
def run_cmd(
    dataset: str = typer.Argument("fashion-mnist-784-euclidean", help=_DATASET_HELP),
    definitions: Path = typer.Option(Path("bench/algos.yaml"), "--definitions", "-d",
                                     help="Algorithm definitions (YAML, see bench/README.md)."),
    algorithm: list[str] | None = typer.Option(None, "--algorithm", "-a", help="Run only these labels or "
                                               "algorithm names (repeatable)."),
    count: int = typer.Option(10, "--count", "-k", help="k: neighbours per query (1..100)."),
    runs: int = typer.Option(3, "--runs", help="Timed passes per run; the fastest counts (best of N)."),
    warmup: int = typer.Option(500, "--warmup", help="Queries run once before timing."),
    modes: str = typer.Option("single,batch", "--modes", help="single (1 thread, one query at a time), batch "
                              "(all queries at once, all cores), or both."),
    threads: int | None = typer.Option(None, "--threads", help="Threads of batch mode and builds (default: all cores)."),
    n_queries: int | None = typer.Option(None, "--n-queries", help="Use only the first N test queries."),
    queries: str | None = typer.Option(None, "--queries", help="Query file for a base file; users/items for Embeddings."),
    groundtruth: Path | None = typer.Option(None, "--groundtruth", help="Neighbour ids (.ivecs/.npy)."),
    metric: str | None = typer.Option(None, "--metric", help="Metric of a raw vector file: l2, cosine, ip."),
    results: Path | None = typer.Option(None, "--results", help="JSON-lines file (default "
                                        "bench/results/<dataset>-k<count>.jsonl)."),
    force: bool = typer.Option(False, "--force", help="Re-run runs that are already in the results file."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Re-run runs recorded as failed."),
    interleave: bool = typer.Option(False, "--interleave", help="Build every configuration first, then time "
                                    "them round-robin (per query-argument position and repetition), so that "
                                    "QPS ratios between libraries are measured under the same machine load."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Data/ground-truth cache (default bench/cache)."),
    json_path: Path | None = json_option(),
) -> None:
    """Build every configuration of the definitions, sweep the query arguments, record recall/QPS/size per run."""
    from annrec.bench.definitions import load_definitions
    from annrec.bench.groundtruth import ground_truth
    from annrec.bench.runner import RunConfig, default_results_path, read_results, run_benchmark
    from annrec.bench.results import markdown_table, overhead_ratios

    cfg = RunConfig(count=count, runs=runs, warmup=warmup, modes=_modes(modes), batch_threads=threads,
                    force=force, retry_failed=retry_failed, interleave=interleave)
    defs = load_definitions(definitions, only=algorithm or None)
    ds = _open_dataset(dataset, queries, groundtruth, metric, n_queries, cache_dir)
    _log(f"{ds.name}: {len(ds.train):,} base vectors, {len(ds.test):,} queries, dim {ds.dim}, {ds.metric}; "
         f"{len(defs)} build(s) from {definitions}")
    gt = ground_truth(ds, count, cache_dir=cache_dir)
    _log(f"ground truth: {gt.origin}")
    path = results or default_results_path(ds, count)
    summary = run_benchmark(ds, defs, path, cfg, gt=gt, cache_dir=cache_dir, log=_log)
    _log(f"{summary.done} run(s) done, {summary.skipped} skipped, {summary.failed} failed -> {path}")
    recs = [r for r in read_results(path, warn=_warn) if r.get("dataset") == ds.name]
    figures = {"results": str(path), "done": summary.done, "skipped": summary.skipped, "failed": summary.failed,
               "unavailable": summary.unavailable, "tables": {}, "overhead": overhead_ratios(recs)}
    for mode in cfg.modes:
        if any(r.get("mode") == mode and r.get("status") == "ok" for r in recs):
            table = markdown_table(recs, mode=mode)
            figures["tables"][mode] = table
            console.print(f"\n{mode} mode:\n{table}", highlight=False, markup=False)
    write_json_report(json_path, figures)


def _load(results: Path):
    from annrec.bench.runner import read_results

    return read_results(results, warn=_warn)


@bench_app.command("plot")
def plot_cmd(
    results: Path = typer.Argument(Path("bench/results/fashion-mnist-784-euclidean-k10.jsonl"),
                                   help="JSON-lines results of `annrec bench run` or `annrec bench rec`."),
    out: Path | None = typer.Option(None, "--out", help="PNG path (default bench/plots/<results>-<mode>.png); "
                                    "with --mode both, '-<mode>' is added before the suffix."),
    mode: str = typer.Option("both", "--mode", help="single, batch or both."),
    recall: str = typer.Option("recall", "--recall", help="x axis: recall (neighbour ids), recall_threshold "
                               "(ANN-Benchmarks' distance threshold), or for rec results recall@10 / ndcg@10."),
    json_path: Path | None = json_option(),
) -> None:
    """Plot recall (x) against QPS (y, log) with each algorithm's Pareto frontier (PNG, like ANN-Benchmarks)."""
    from annrec.bench.results import plot

    recs = _load(results)
    wanted = ("single", "batch") if mode == "both" else _modes(mode)
    written = []
    for m in wanted:
        if not any(r.get("mode") == m and r.get("status") == "ok" for r in recs):
            if mode != "both":
                plot(recs, "unused.png", mode=m)  # raises the clear "no runs" error
            continue
        if out is None:
            target = Path("bench/plots") / f"{results.stem}-{m}.png"
        elif mode == "both":
            target = out.with_name(f"{out.stem}-{m}{out.suffix or '.png'}")
        else:
            target = out
        title = None
        first = next((r for r in recs if r.get("status") == "ok"), {})
        if "embeddings" in first:  # `annrec bench rec` results
            title = (f"{first.get('dataset')} recommendations ({first.get('trainer')}, k={first.get('count')}): "
                     f"{recall} vs QPS")
        written.append(str(plot(recs, target, mode=m, recall_key=recall, title=title)))
        console.print(f"wrote {target}")
    if not written:
        from annrec.errors import InputError

        raise InputError(f"{results} holds no successful runs to plot")
    write_json_report(json_path, {"plots": written})


@bench_app.command("table")
def table_cmd(
    results: Path = typer.Argument(Path("bench/results/fashion-mnist-784-euclidean-k10.jsonl"),
                                   help="JSON-lines results of `annrec bench run`."),
    mode: str = typer.Option("single", "--mode", help="single or batch."),
    recall: str = typer.Option("recall", "--recall", help="recall (neighbour ids) or recall_threshold."),
    thresholds: str = typer.Option("0.90,0.95,0.99", "--thresholds", help="Recall thresholds, comma-separated."),
    overhead: bool = typer.Option(True, "--overhead/--no-overhead", help="Also print annrec/raw QPS ratios."),
    json_path: Path | None = json_option(),
) -> None:
    """Markdown table: per algorithm the best QPS at recall >= 0.90 / 0.95 / 0.99, its parameters, build time, size."""
    from annrec.bench.results import best_at_recall, markdown_table, overhead_ratios
    from annrec.errors import InputError

    recs = _load(results)
    (m,) = _modes(mode) if mode in ("single", "batch") else (None,)
    if m is None:
        raise InputError(f"--mode must be single or batch; got {mode!r}")
    try:
        ts = tuple(float(t) for t in thresholds.split(","))
    except ValueError:
        raise InputError(f"--thresholds must be numbers separated by commas; got {thresholds!r}") from None
    if not any(r.get("mode") == m and r.get("status") == "ok" for r in recs):
        raise InputError(f"{results} holds no successful {m}-mode runs")
    console.print(markdown_table(recs, mode=m, recall_key=recall, thresholds=ts), highlight=False, markup=False)
    rows = best_at_recall(recs, ts, mode=m, recall_key=recall)
    ratios = overhead_ratios(recs) if overhead else []
    if ratios:
        console.print("\nannrec index layer vs raw library, same parameters (QPS ratio):", markup=False)
        console.print("| library | mode | parameters | annrec QPS | raw QPS | ratio | ratio (CPU time) |\n"
                      "|---|---|---|---:|---:|---:|---:|", markup=False)
        for r in ratios:
            cpu = f"{r['ratio_cpu']:.3f}" if "ratio_cpu" in r else "—"
            console.print(f"| {r['library']} | {r['mode']} | {r['params']} | {r['qps_annrec']:,.0f} | "
                          f"{r['qps_raw']:,.0f} | {r['ratio']:.3f} | {cpu} |", highlight=False, markup=False)
    failures = [r for r in recs if r.get("status") == "failed"]
    if failures:
        console.print(f"\n{len(failures)} failed run(s):", markup=False)
        for r in failures:
            console.print(f"- {r.get('label')} {r.get('build_args')} {r.get('query_args') or ''} "
                          f"[{r.get('stage')}]: {r.get('error')}", highlight=False, markup=False)
    write_json_report(json_path, {"mode": m, "recall": recall,
                                  "best": [{a: b for a, b in r.items() if a != "record"} for r in rows],
                                  "overhead": ratios, "failed": len(failures)})


@bench_app.command("overhead")
def overhead_cmd(
    dataset: str = typer.Argument("fashion-mnist-784-euclidean", help=_DATASET_HELP),
    library: str = typer.Option("hnswlib,faiss", "--library", help="hnswlib, faiss or both."),
    hnsw_m: int = typer.Option(16, "--M", help="hnswlib M."),
    ef_construction: int = typer.Option(200, "--ef-construction", help="hnswlib efConstruction."),
    ef: str = typer.Option("10,40,160", "--ef", help="hnswlib ef values."),
    factory: str = typer.Option("IVF256,Flat", "--factory", help="FAISS factory string."),
    nprobe: str = typer.Option("1,8,32", "--nprobe", help="FAISS nprobe values (or --efsearch for HNSW)."),
    efsearch: str | None = typer.Option(None, "--efsearch", help="FAISS efSearch values (HNSW factories)."),
    modes: str = typer.Option("single,batch", "--modes", help="single, batch or both."),
    rounds: int = typer.Option(5, "--rounds", help="Interleaved timed passes per side; best counts."),
    count: int = typer.Option(10, "--count", "-k", help="k."),
    n_queries: int | None = typer.Option(None, "--n-queries", help="Use only the first N test queries."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Data/ground-truth cache."),
    out: Path | None = typer.Option(None, "--out", help="Append the rows as JSON lines here."),
    json_path: Path | None = json_option(),
) -> None:
    """QPS of annrec's index layer over the raw library on ONE shared index, interleaved passes (overhead ratio)."""
    import json

    from annrec.bench.groundtruth import ground_truth
    from annrec.bench.overhead import measure_overhead, overhead_table
    from annrec._io import _json_default
    from annrec.errors import InputError

    def ints(s: str, what: str) -> list[int]:
        try:
            return [int(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise InputError(f"{what} must be integers separated by commas; got {s!r}") from None

    ds = _open_dataset(dataset, None, None, None, n_queries, cache_dir)
    gt = ground_truth(ds, count, cache_dir=cache_dir)
    rows = []
    libs = [x.strip() for x in library.split(",") if x.strip()]
    for lib in libs:
        if lib == "hnswlib":
            rows += measure_overhead(ds, gt, "hnswlib", {"M": hnsw_m, "ef_construction": ef_construction},
                                     [{"ef": v} for v in ints(ef, "--ef")], k=count, modes=_modes(modes),
                                     rounds=rounds, log=_log)
        elif lib == "faiss":
            qas = ([{"efSearch": v} for v in ints(efsearch, "--efsearch")] if efsearch else
                   [{"nprobe": v} for v in ints(nprobe, "--nprobe")] if "IVF" in factory else [{}])
            rows += measure_overhead(ds, gt, "faiss", {"factory": factory}, qas, k=count, modes=_modes(modes),
                                     rounds=rounds, log=_log)
        else:
            raise InputError(f"unknown library {lib!r}: use hnswlib and/or faiss")
    console.print(overhead_table(rows), highlight=False, markup=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, default=_json_default) + "\n")
    write_json_report(json_path, {"rows": rows})


@bench_app.command("rec")
def rec_cmd(
    embeddings: Path = typer.Argument(..., help="A recommender's Embeddings folder (users as queries, e.g. "
                                      "`annrec train als --fit-on train`)."),
    definitions: Path = typer.Option(Path("bench/rec.yaml"), "--definitions", "-d", help="Index configurations (YAML)."),
    algorithm: list[str] | None = typer.Option(None, "--algorithm", "-a", help="Only these labels/algorithms."),
    dataset: str | None = typer.Option(None, "--dataset", help="Interactions (MovieLens name or file); default: "
                                       "the artifact's manifest."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder holding <dataset>/ (else $ANNREC_DATA_DIR)."),
    k: int = typer.Option(10, "--k", help="Cut-off of Recall@k / NDCG@k."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Per-user temporal test fraction."),
    runs: int = typer.Option(3, "--runs", help="Timed passes per configuration; best counts."),
    max_users: int | None = typer.Option(None, "--max-users", help="Only the first N test users."),
    results: Path | None = typer.Option(None, "--results", help="JSON lines (default bench/results/rec-<artifact>-k<k>.jsonl)."),
    force: bool = typer.Option(False, "--force", help="Re-run finished configurations."),
    json_path: Path | None = json_option(),
) -> None:
    """Recall@k and NDCG@k of recommendations through exact search and each index configuration, against QPS."""
    from annrec.bench.definitions import load_definitions
    from annrec.bench.rec import load_rec_task, rec_benchmark, rec_table

    defs = load_definitions(definitions, only=algorithm or None)
    task = load_rec_task(embeddings, dataset=dataset, data_dir=data_dir, test_fraction=test_fraction,
                         max_users=max_users, log=_warn)
    info = {a: b for a, b in task.info.items() if a != "has_vector"}
    _log(f"{info['dataset']}: {info['test_users']} test users ({info['users_without_vector']} without a vector), "
         f"{info['n_items']:,} items, dim {info['dim']}, metric {info['metric']}")
    path = results or Path("bench/results") / f"rec-{Path(embeddings).resolve().name}-k{k}.jsonl"
    recs = rec_benchmark(task, defs, path, k=k, runs=runs, force=force, log=_log)
    table = rec_table(recs, k)
    console.print(table, highlight=False, markup=False)
    write_json_report(json_path, {"results": str(path), "task": info, "table": table,
                                  "rows": [{a: b for a, b in r.items() if a != "machine"} for r in recs]})


@index_app.command("tune")
def tune_cmd(
    source: str = typer.Argument(..., help="Embeddings folder (users, or held-out items, as queries) or a "
                                 "benchmark data set (" + _DATASET_HELP + ")"),
    target_recall: float = typer.Option(..., "--target-recall", help="Required recall@k on the held-out queries."),
    out: Path = typer.Option(..., "--out", help="Index specification YAML to write (for `annrec index build --spec`)."),
    k: int = typer.Option(10, "--k", help="k of recall@k."),
    sample: int = typer.Option(1000, "--sample", help="Held-out queries to measure on."),
    queries: str = typer.Option("auto", "--queries", help="For Embeddings: users, items (held out of the "
                                "index) or auto (users when there are)."),
    backends: str = typer.Option("hnswlib,usearch,pynndescent,faiss-ivf,faiss-hnsw,faiss-hnsw-sq8", "--candidates",
                                 help="hnswlib, usearch (where installed), pynndescent (where installed: NN-descent "
                                 "graphs of n_neighbors 16 and 30, built in 5 s and 9 s on Fashion-MNIST 60k x 784 "
                                 "on 2 cores after a one-time numba compile of about a minute per process), "
                                 "faiss-ivf, faiss-hnsw, faiss-hnsw-sq8 (HNSW16,SQ8,RFlat); exact faiss-flat is "
                                 "always tried."),
    m_values: str = typer.Option("8,16,32", "--M", help="hnswlib and usearch M values to try."),
    mode: str = typer.Option("single", "--mode", help="Optimise single-query (1 thread) or batch QPS."),
    runs: int = typer.Option(3, "--runs", help="Timed passes for the QPS of each candidate."),
    metric: str | None = typer.Option(None, "--metric", help="Metric of a raw vector file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query sample."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Ground-truth cache."),
    json_path: Path | None = json_option(),
) -> None:
    """Measure candidate indexes on held-out queries and write the fastest spec that meets --target-recall."""
    import numpy as np

    from annrec.bench.datasets import Dataset, load_dataset
    from annrec.bench.groundtruth import ground_truth
    from annrec.bench.tune import write_spec, tune_index
    from annrec.errors import InputError

    if sample < 1:
        raise InputError(f"--sample must be >= 1; got {sample}")
    p = Path(source)
    if p.is_dir():
        ds = load_dataset(p, queries=queries, n_queries=sample, seed=seed)
    else:
        ds = load_dataset(source, metric=metric, cache_dir=cache_dir)
        if len(ds.test) > sample:
            rows = np.sort(np.random.default_rng(seed).choice(len(ds.test), sample, replace=False))
            ds = Dataset(ds.name, ds.train, ds.test[rows], ds.metric,
                         None if ds.neighbors is None else ds.neighbors[rows],
                         None if ds.distances is None else ds.distances[rows], ds.source, ds.meta)
    if k > len(ds.train):
        raise InputError(f"k={k} is larger than the {len(ds.train)} indexed vectors")
    gt = ground_truth(ds, k, cache_dir=cache_dir)
    try:
        ms = tuple(int(x) for x in m_values.split(",") if x.strip())
    except ValueError:
        raise InputError(f"--M must be integers separated by commas; got {m_values!r}") from None
    cands = tuple(b.strip() for b in backends.split(",") if b.strip())
    _log(f"tuning on {ds.name}: {len(ds.train):,} indexed vectors, {len(ds.test):,} held-out queries, "
         f"metric {ds.metric}, target recall@{k} >= {target_recall}")
    winner, all_c = tune_index(ds, gt, target_recall, k=k, backends=cands, M_values=ms, mode=mode, runs=runs,
                               log=_log)
    write_spec(out, winner, ds.metric, target=target_recall, k=k, n_queries=len(ds.test), source=source, mode=mode)
    console.print(f"fastest at recall@{k} >= {target_recall}: {winner.backend} {winner.build} {winner.query} "
                  f"(recall {winner.recall:.4f}, {winner.qps:,.0f} QPS) -> {out}", highlight=False, markup=False)
    write_json_report(json_path, {"winner": winner.to_dict(), "spec": winner.spec(ds.metric),
                                  "candidates": [c.to_dict() for c in all_c], "target_recall": target_recall,
                                  "k": k, "n_queries": len(ds.test), "mode": mode})
