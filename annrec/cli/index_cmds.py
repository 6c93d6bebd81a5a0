"""``annrec index build`` and ``annrec index query``: Embeddings folder -> index folder -> nearest items."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import typer

from annrec.cli.apps import console, force_option, index_app, json_option, write_json_report
from annrec.errors import InputError

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_param(text: str) -> tuple[str, Any]:
    """``"M=16"`` -> ``("M", 16)``; values become int, float, bool (true/false), None (none/null) or str.

    Raises:
        InputError: no ``=``, an empty or invalid key, or an empty value.
    """
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not _KEY_RE.match(key) or value == "":
        raise InputError(f"malformed --param {text!r}: use key=value, e.g. --param M=16 or "
                         f"--param factory=IVF256,Flat")
    low = value.lower()
    if low in ("true", "false"):
        return key, low == "true"
    if low in ("none", "null"):
        return key, None
    for conv in (int, float):
        try:
            return key, conv(value)
        except ValueError:
            pass
    return key, value


def resolve_spec(spec: Path | None, backend: str | None, params: list[str] | None, metric: str | None):
    """The :class:`~annrec.index.spec.IndexSpec` from ``--spec`` and/or ``--backend``, ``--param``, ``--metric``.

    ``--param`` entries override or extend the spec's parameters; ``--metric`` overrides its metric.

    Raises:
        InputError: neither ``--spec`` nor ``--backend``, a ``--backend`` that contradicts the spec, a
            malformed ``--param``, an unknown backend or metric.
        DataNotFoundError: no spec file.
    """
    from annrec.index import BACKENDS
    from annrec.index.spec import IndexSpec

    if spec is None and backend is None:
        raise InputError("give an index spec (--spec index/hnsw.yaml) or a backend (--backend "
                         "hnswlib|faiss|usearch|pynndescent|scann with --param key=value ...)")
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"unknown index backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if metric is not None and metric not in ("ip", "cosine", "l2"):
        raise InputError(f"unknown metric {metric!r}: use ip, cosine or l2")
    extra = dict(parse_param(p) for p in (params or []))
    if spec is not None:
        s = IndexSpec.from_yaml(spec)
        if backend is not None and backend != s.backend:
            raise InputError(f"--backend {backend} contradicts {spec} (backend {s.backend}): drop one of them")
        return IndexSpec(backend=s.backend, metric=metric or s.metric, params={**s.params, **extra})
    return IndexSpec(backend=backend, metric=metric, params=extra)


def folder_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def build_from_embeddings(emb, emb_path: Path, spec, *, copy_items: bool = True):
    """Build an index of ``spec`` over the item vectors of ``emb`` and fill in its provenance.

    ``index.source`` = ``{"embeddings": absolute path, "embeddings_name": folder name, "data_hash": the
    manifest's data hash (when any), "embeddings_count": items, "trainer": ..., "dataset": ...}`` — what ``annrec serve`` uses to
    find the embeddings (user vectors, seen items) of an index. Item metadata (titles, genres) is
    copied into the index when there are at most a million items.

    Raises:
        InputError: parameters the backend rejects.
    """
    from annrec.index import build_index

    metric = spec.metric or emb.metric
    index = build_index(emb.vectors, emb.ids, metric, backend=spec.backend, **spec.params)
    m = emb.manifest
    index.source = {"embeddings": str(Path(emb_path).resolve()), "embeddings_name": Path(emb_path).resolve().name,
                    "data_hash": m.get("data_hash") or m.get("fingerprint"), "embeddings_count": len(emb),
                    "trainer": m.get("trainer"),
                    "dataset": m.get("dataset"), "embeddings_metric": emb.metric}
    if copy_items and emb.items and len(emb.items) <= 1_000_000:
        index.items = dict(emb.items)
    return index


@index_app.command("build")
def index_build(
    embeddings: Path = typer.Option(..., "--embeddings", help="Embeddings folder (from `annrec train ...`)."),
    spec: Path | None = typer.Option(None, "--spec", help="Index spec YAML (index/hnsw.yaml, index/ivf-flat.yaml...)."),
    backend: str | None = typer.Option(None, "--backend", help="hnswlib, faiss, usearch, pynndescent or scann (instead "
                                       "of, or checked against, --spec)."),
    param: list[str] | None = typer.Option(None, "--param", help="Backend parameter key=value, repeatable "
                                           "(M=16, ef_construction=200, factory=IVF{nlist},Flat, nprobe=8, "
                                           "n_neighbors=30, epsilon=0.1...); "
                                           "overrides the spec."),
    metric: str | None = typer.Option(None, "--metric", help="ip, cosine or l2 (default: the spec's, else the "
                                      "embeddings' metric)."),
    out: Path = typer.Option(..., "--out", help="Index folder to write (a previous index there is replaced "
                             "atomically; any other folder is refused, see --force)."),
    shards: int = typer.Option(1, "--shards", help="Split the index into this many ordinary index folders under "
                               "--out (searched as one; see docs/scale-out.md)."),
    partition: str = typer.Option("hash", "--partition", help="How ids are spread over --shards: hash (id mod S) "
                                  "or range (contiguous blocks)."),
    ray: bool = typer.Option(False, "--ray", help="Build the --shards as Ray Data tasks (groupby(shard)."
                             "map_groups; a local Ray unless --ray-address); needs the ray extra."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster to join with --ray (--out "
                                           "must be on storage every node can write)."),
    force: bool = force_option(),
    json_path: Path | None = json_option(),
) -> None:
    """Build an index (hnswlib, FAISS, usearch, pynndescent or ScaNN) over the item vectors of an Embeddings folder."""
    from annrec._io import check_output_dir
    from annrec.embeddings import Embeddings
    from annrec.index.folder import KIND
    from annrec.index.sharded import SHARDED_KIND

    check_output_dir(out, SHARDED_KIND if shards > 1 else KIND, force=force)
    if (ray or ray_address) and shards < 2:
        from annrec.errors import InputError

        raise InputError("--ray builds the shards of a sharded index: add --shards S (S >= 2)")
    s = resolve_spec(spec, backend, param, metric)
    emb = Embeddings.load(embeddings)
    if shards != 1:
        _build_sharded(emb, embeddings, s, out, shards, partition, force, json_path,
                       executor="ray" if (ray or ray_address) else "local", ray_address=ray_address)
        return
    with console.status(f"building {s.backend} index over {len(emb):,} vectors of dim {emb.dim}..."):
        t0 = time.perf_counter()
        index = build_from_embeddings(emb, embeddings, s)
        build_s = time.perf_counter() - t0
    index.save(out)
    size = folder_bytes(out)
    shown = {k: v for k, v in index.params.items() if k != "factory_resolved"}
    if "factory_resolved" in index.params:
        shown["factory"] = index.params["factory_resolved"]
    console.print(f"built {index.backend} index {out}: {len(index):,} items, dim {index.dim}, metric {index.metric}, "
                  f"params {shown}", highlight=False, markup=False)
    console.print(f"build {build_s:.2f} s, index {index.memory_bytes() / 2**20:.1f} MiB in memory, folder "
                  f"{size / 2**20:.1f} MiB on disk", highlight=False, markup=False)
    write_json_report(json_path, {"command": "index build", "out": str(out), "embeddings": str(embeddings),
                                  "backend": index.backend, "metric": index.metric, "dim": index.dim,
                                  "count": len(index), "params": index.params, "build_seconds": round(build_s, 4),
                                  "memory_bytes": index.memory_bytes(), "folder_bytes": size})


def _build_sharded(emb, emb_path: Path, spec, out: Path, shards: int, partition: str, force: bool,
                   json_path: Path | None, executor: str = "local", ray_address: str | None = None) -> None:
    from annrec.index import load_index
    from annrec.index.sharded import build_sharded

    m = emb.manifest
    source = {"embeddings": str(Path(emb_path).resolve()), "embeddings_name": Path(emb_path).resolve().name,
              "data_hash": m.get("data_hash") or m.get("fingerprint"), "embeddings_count": len(emb),
              "trainer": m.get("trainer"), "dataset": m.get("dataset"), "embeddings_metric": emb.metric}
    t0 = time.perf_counter()
    with console.status(f"building {shards} {spec.backend} shards over {len(emb):,} vectors of dim {emb.dim}..."):
        build_sharded(emb.vectors, emb.ids, spec.metric or emb.metric, out, shards=shards, partition=partition,
                      backend=spec.backend, source=source, items=emb.items, force=force, executor=executor,
                      ray_address=ray_address, **spec.params)
    build_s = time.perf_counter() - t0
    index = load_index(out)
    console.print(f"built {shards} {spec.backend} shards in {out} ({partition} partition): {len(index):,} items "
                  f"({', '.join(str(c) for c in index._counts)}), build {build_s:.2f} s", highlight=False,
                  markup=False)
    write_json_report(json_path, {"command": "index build", "out": str(out), "embeddings": str(emb_path),
                                  "backend": spec.backend, "shards": shards, "partition": partition,
                                  "executor": executor,
                                  "counts": index._counts, "count": len(index), "build_seconds": round(build_s, 4),
                                  "folder_bytes": folder_bytes(out)})
    index.close()


def query_params(index, ef: int | None, nprobe: int | None,
                 k_factor: int | None = None, epsilon: float | None = None) -> dict[str, int | float] | None:
    """``--ef`` / ``--nprobe`` / ``--k-factor`` / ``--epsilon`` as the backend's query parameters (``ef`` for
    hnswlib and usearch; ``efSearch`` / ``nprobe`` / ``k_factor`` for FAISS, found through wrappers such as
    ``RFlat``; ``epsilon`` for pynndescent).

    Raises:
        InputError: a parameter that does not apply to this index (``--nprobe`` for HNSW, ``--ef`` for an
            IVF or pynndescent index, ``--k-factor`` without a re-ranking wrapper, ``--epsilon`` for anything
            but pynndescent), a value <= 0 (``--epsilon``: < 0).
    """
    out: dict[str, int | float] = {}
    for name, v in (("--ef", ef), ("--nprobe", nprobe), ("--k-factor", k_factor)):
        if v is not None and v <= 0:
            raise InputError(f"{name} must be a positive integer; got {v}")
    if epsilon is not None and not epsilon >= 0:
        raise InputError(f"--epsilon must be a number >= 0 (0: greedy search); got {epsilon}")
    kind = index.backend
    factory = str(index.params.get("factory_resolved") or index.params.get("factory") or "")
    has = getattr(index, "_has_param", lambda name: False)  # FAISS: looks through wrappers (RFlat, OPQ, …)
    if kind == "sharded":
        kind = index.shard_backend
    if epsilon is not None:
        if kind != "pynndescent":
            raise InputError(f"--epsilon applies to pynndescent indexes; this is a {kind} "
                             f"{factory + ' ' if factory else ''}index")
        out["epsilon"] = float(epsilon)
    if ef is not None:
        if kind in ("hnswlib", "usearch"):
            out["ef"] = int(ef)
        elif kind == "pynndescent":
            raise InputError("--ef (efSearch) applies to HNSW indexes; this is a pynndescent index: use --epsilon "
                             "(search breadth, default 0.1)")
        elif has("efSearch"):
            out["efSearch"] = int(ef)
        else:
            raise InputError(f"--ef (efSearch) applies to HNSW indexes; this is a "
                             f"{'FAISS ' + repr(factory) if kind == 'faiss' else kind} index"
                             + (": use --nprobe" if has("nprobe") else ""))
    if nprobe is not None:
        if has("nprobe"):
            out["nprobe"] = int(nprobe)
        else:
            hint = (": use --ef" if kind in ("hnswlib", "usearch") or has("efSearch")
                    else ": use --epsilon" if kind == "pynndescent" else "")
            raise InputError(f"--nprobe applies to FAISS IVF indexes; this is a {kind} "
                             f"{factory + ' ' if factory else ''}index{hint}")
    if k_factor is not None:
        if has("k_factor"):
            out["k_factor"] = int(k_factor)
        else:
            raise InputError(f"--k-factor applies to FAISS re-ranking indexes (factory ending in RFlat or "
                             f"Refine(...)); this is a {kind} {factory + ' ' if factory else ''}index")
    return out or None


def item_label(meta: dict | None) -> tuple[str, str]:
    """(title, genres) strings for a result row."""
    if not meta:
        return "", ""
    genres = meta.get("genres")
    return str(meta.get("title", "")), "|".join(genres) if isinstance(genres, list) else str(genres or "")


def results_table(ids, scores, items: dict | None, title: str, score_name: str = "score",
                  extra: tuple[str, list[str]] | None = None):
    """A rich table of one result list (rank, id, score, [extra column], title, genres)."""
    from rich.table import Table
    from rich.text import Text

    items = items or {}
    t = Table(title=Text(title), title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("id", justify="right")
    t.add_column(score_name, justify="right")
    if extra is not None:
        t.add_column(extra[0], justify="right")
    has_meta = any(items.get(i) for i in ids)
    if has_meta:
        t.add_column("title")
        t.add_column("genres")
    for rank, (i, s) in enumerate(zip(ids, scores), 1):
        row = [str(rank), str(i), f"{s:.4f}"]
        if extra is not None:
            row.append(extra[1][rank - 1])
        if has_meta:
            row += list(item_label(items.get(i)))
        t.add_row(*[Text(c) for c in row])
    return t


def _load_query_vectors(vector: str | None, vectors: Path | None):
    import numpy as np

    if vector is not None:
        try:
            v = np.asarray([float(x) for x in vector.replace(" ", ",").split(",") if x.strip()], dtype=np.float32)
        except ValueError:
            raise InputError(f"--vector must be comma-separated numbers such as '0.1,0.2,0.3'; "
                             f"got {vector!r}") from None
        if v.size == 0:
            raise InputError("--vector is empty: give comma-separated numbers")
        return v[None, :]
    from annrec.errors import DataError, DataNotFoundError

    if not vectors.is_file():
        raise DataNotFoundError(f"no query file at {vectors}: pass a .npy file of shape (n, dim)")
    try:
        q = np.load(vectors, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{vectors} is not a readable .npy array ({e}): save the queries with numpy.save") from None
    if q.ndim == 1:
        q = q[None, :]
    return q


@index_app.command("query")
def index_query(
    index_dir: Path = typer.Option(..., "--index", help="Index folder (from `annrec index build`)."),
    item: str | None = typer.Option(None, "--item", help="Query with the stored vector of this item id."),
    vector: str | None = typer.Option(None, "--vector", help="One query vector: comma-separated numbers."),
    vectors: Path | None = typer.Option(None, "--vectors", help="Query vectors: a .npy file of shape (n, dim)."),
    k: int = typer.Option(10, "-k", "--k", help="Results per query."),
    ef: int | None = typer.Option(None, "--ef", help="efSearch (HNSW: hnswlib or FAISS)."),
    nprobe: int | None = typer.Option(None, "--nprobe", help="IVF lists probed (FAISS IVF; ScaNN leaves searched)."),
    k_factor: int | None = typer.Option(None, "--k-factor", help="Re-ranking: k_factor*k candidates re-scored "
                                        "exactly (FAISS RFlat / Refine(...) indexes)."),
    epsilon: float | None = typer.Option(None, "--epsilon", help="Search breadth of a pynndescent index (>= 0; "
                                         "0 is greedy, default 0.1)."),
    include_self: bool = typer.Option(False, "--include-self", help="With --item, keep the item itself in the "
                                      "results."),
    show: int = typer.Option(3, "--show", help="With --vectors, print the results of the first N queries."),
    threads: int | None = typer.Option(None, "--threads", help="Threads for a batch of --vectors (default: all "
                                       "cores)."),
    json_path: Path | None = json_option(),
) -> None:
    """Nearest items of an item, a vector or a batch of vectors (.npy), through an index folder."""
    import numpy as np

    from annrec.index import load_index

    given = [n for n, v in (("--item", item), ("--vector", vector), ("--vectors", vectors)) if v is not None]
    if len(given) != 1:
        raise InputError("give exactly one query: --item ID, --vector '0.1,0.2,...' or --vectors FILE.npy"
                         + (f" (got {', '.join(given)})" if given else ""))
    index = load_index(index_dir)
    params = query_params(index, ef, nprobe, k_factor, epsilon)
    from annrec._validate import check_k

    check_k(k)
    denied = None
    if item is not None:
        q = index.get_vector(item)[None, :]
        if not include_self:
            denied = [item]
            check_k(k, limit=len(index) - 1)
    else:
        q = _load_query_vectors(vector, vectors)
    t0 = time.perf_counter()
    ids, scores = index.search(q, k, params=params, denied_ids=denied, threads=threads)
    seconds = time.perf_counter() - t0
    score_name = "distance" if index.metric == "l2" else "score"
    n_show = len(q) if vectors is None else min(max(show, 0), len(q))
    for row in range(n_show):
        keep = [j for j, i in enumerate(ids[row].tolist()) if i is not None and not (isinstance(i, int) and i < 0)]
        if item is not None:
            meta = index.items.get(item) or (index.items.get(int(item)) if item.strip().isdigit() else None)
            title = item_label(meta)[0]
            head = f"{len(keep)} nearest to item {item}" + (f" ({title})" if title else "")
        else:
            head = f"query {row}: {len(keep)} nearest"
        console.print(results_table([ids[row][j] for j in keep], [float(scores[row][j]) for j in keep],
                                    index.items, head, score_name))
    console.print(f"{len(q)} quer{'y' if len(q) == 1 else 'ies'} in {seconds * 1e3:.2f} ms "
                  f"({len(q) / max(seconds, 1e-9):,.0f} QPS) on {index.backend} {index.metric}, params "
                  f"{params or 'default'}", highlight=False, markup=False)
    write_json_report(json_path, {
        "command": "index query", "index": str(index_dir), "k": k, "params": params, "n_queries": len(q),
        "seconds": round(seconds, 6),
        "results": [[{"id": i, "score": (None if np.isnan(s) else float(s))} for i, s in zip(ir.tolist(), sr.tolist())
                     if i is not None and not (isinstance(i, int) and i < 0)] for ir, sr in zip(ids, scores)]})


__all__ = ["index_build", "index_query", "parse_param", "resolve_spec", "build_from_embeddings", "query_params",
           "results_table", "item_label", "folder_bytes"]
