"""``annrec recommend USER_ID``, ``annrec similar ITEM_ID`` and ``annrec recommend-all`` over an Embeddings folder
(and an index)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from annrec.cli.apps import (app, console, deprecated_option, embeddings_option, force_option, json_option,
                             resolve_deprecated, write_json_report)
from annrec.cli.index_cmds import item_label, query_params, results_table
from annrec.errors import InputError


def filter_option():
    """``--filter JSON``: a payload filter on item metadata (``must`` / ``should`` / ``must_not``)."""
    return typer.Option(None, "--filter", help="Payload filter on item metadata, e.g. "
                        "'{\"must\": [{\"key\": \"genres\", \"match\": {\"value\": \"Comedy\"}}]}' "
                        "(match value/any, range gt/gte/lt/lte, is_null; see docs/service.md).")


def open_recommender(model: Path, index_dir: Path | None):
    """``(Recommender, Embeddings, Index | None)`` for an Embeddings folder and an optional index folder.

    Without an index the recommender searches exactly (FAISS ``Flat`` built in memory).

    Raises:
        DataNotFoundError: a folder is missing. ArtifactError: a folder of the wrong kind (an index given
            as --model, embeddings given as --index, an unknown backend).
        InputError: an index built from other vectors (count, dimension, metric or stored vectors differ).
    """
    from annrec.embeddings import Embeddings
    from annrec.index import load_index
    from annrec.recommend import Recommender, check_pairing

    emb = Embeddings.load(model)
    index = None
    if index_dir is not None:
        index = load_index(index_dir)
        try:
            check_pairing(emb, index, strict=True)
        except InputError as e:
            raise InputError(f"index {index_dir} was not built from the embeddings {model}: {e}") from None
    return Recommender(emb, index), emb, index


def predicted_ratings(emb, user_id, scores: list[float]) -> list[float] | None:
    """Predicted ratings of an ``mf`` artifact's recommendations: ``lo + (hi - lo) * sigmoid(score + mu + b_u)``
    (no sigmoid without ``y_range``), clipped to the rating range; ``None`` for other trainers."""
    import io

    import numpy as np

    m = emb.manifest
    if m.get("trainer") != "mf" or "user_bias.npy" not in emb.extra or m.get("global_bias") is None:
        return None
    bu = np.load(io.BytesIO(emb.extra["user_bias.npy"]))[emb.query_row_of(user_id)]
    x = np.asarray(scores, dtype=np.float64) + float(m["global_bias"]) + float(bu)
    if m.get("y_range"):
        lo, hi = m["y_range"]
        x = lo + (hi - lo) / (1.0 + np.exp(-x))
    if m.get("rating_range"):
        x = np.clip(x, *m["rating_range"])
    return [round(float(v), 3) for v in x]


def _rows(recs, predicted: list[float] | None = None) -> list[dict[str, Any]]:
    out = []
    for r in recs:
        title, genres = item_label(r.metadata)
        out.append({"id": r.item_id, "score": r.score, "title": title or None, "genres": genres or None})
        if predicted is not None:
            out[-1]["predicted_rating"] = predicted[len(out) - 1]
    return out


@app.command("recommend")
def recommend(
    user_id: str = typer.Argument(..., help="External user id (e.g. a MovieLens userId)."),
    embeddings: Path | None = embeddings_option("Embeddings folder with user vectors (e.g. from `annrec train mf`)."),
    index_dir: Path | None = typer.Option(None, "--index", help="Index folder built from --embeddings (default: "
                                          "exact search)."),
    k: int = typer.Option(10, "-k", "--k", help="Number of recommendations."),
    exclude_seen: bool = typer.Option(True, "--exclude-seen/--include-seen",
                                      help="Leave out (default) or also recommend the items the user already rated."),
    ef: int | None = typer.Option(None, "--ef", help="efSearch of an HNSW index."),
    nprobe: int | None = typer.Option(None, "--nprobe", help="nprobe of a FAISS IVF index."),
    filter: str | None = filter_option(),
    json_path: Path | None = json_option(),
    model: Path | None = deprecated_option("--model"),
) -> None:
    """Top-k items for a user by maximum inner product search; items the user rated are excluded."""
    model = resolve_deprecated(embeddings, model, "--embeddings", "--model", required=True)
    rec, emb, index = open_recommender(model, index_dir)
    params = query_params(rec.index, ef, nprobe)
    recs = rec.recommend(user_id, k=k, exclude_seen=exclude_seen, filter=filter, params=params)
    include_seen = not exclude_seen
    n_seen = len(emb.seen_ids(user_id))
    how = f"{index.backend} index {index_dir}" if index is not None else "exact search"
    note = "included" if include_seen else "excluded"
    title = f"top {len(recs)} for user {user_id} ({n_seen} rated items {note}; {how})"
    predicted = predicted_ratings(emb, user_id, [r.score for r in recs])
    console.print(results_table([r.item_id for r in recs], [r.score for r in recs],
                                {r.item_id: r.metadata for r in recs if r.metadata}, title,
                                extra=None if predicted is None else ("rating", [f"{v:.2f}" for v in predicted])))
    write_json_report(json_path, {"command": "recommend", "user": user_id, "embeddings": str(model),
                                  "index": None if index_dir is None else str(index_dir), "k": k,
                                  "exclude_seen": not include_seen, "seen_count": n_seen, "params": params,
                                  "results": _rows(recs, predicted)})


@app.command("similar")
def similar(
    item_id: str = typer.Argument(..., help="External item id (e.g. a MovieLens movieId)."),
    embeddings: Path | None = embeddings_option(),
    index_dir: Path | None = typer.Option(None, "--index", help="Index folder built from --embeddings (default: "
                                          "exact search)."),
    k: int = typer.Option(10, "-k", "--k", help="Number of similar items."),
    ef: int | None = typer.Option(None, "--ef", help="efSearch of an HNSW index."),
    nprobe: int | None = typer.Option(None, "--nprobe", help="nprobe of a FAISS IVF index."),
    filter: str | None = filter_option(),
    json_path: Path | None = json_option(),
    model: Path | None = deprecated_option("--model"),
) -> None:
    """The k items nearest to an item under the model's metric (the item itself excluded)."""
    model = resolve_deprecated(embeddings, model, "--embeddings", "--model", required=True)
    rec, emb, index = open_recommender(model, index_dir)
    params = query_params(rec.index, ef, nprobe)
    recs = rec.similar_items(item_id, k=k, filter=filter, params=params)
    name = item_label((emb.items or {}).get(emb.ids.tolist()[emb.row_of(item_id)]))[0]
    how = f"{index.backend} index {index_dir}" if index is not None else "exact search"
    title = f"{len(recs)} items nearest to {item_id}" + (f" {name}" if name else "") + f" ({emb.metric}; {how})"
    console.print(results_table([r.item_id for r in recs], [r.score for r in recs],
                                {r.item_id: r.metadata for r in recs if r.metadata}, title,
                                "distance" if emb.metric == "l2" else "score"))
    write_json_report(json_path, {"command": "similar", "item": item_id, "embeddings": str(model),
                                  "index": None if index_dir is None else str(index_dir), "k": k, "params": params,
                                  "results": _rows(recs)})


__all__ = ["recommend", "similar", "open_recommender"]


@app.command("recommend-all")
def recommend_all_cmd(
    embeddings: Path | None = embeddings_option("Embeddings folder with user vectors (e.g. from `annrec train mf`)."),
    out: Path = typer.Option(..., "--out", help="Folder to write: a Parquet dataset (user_id, rank, item_id, score) "
                             "and manifest.json."),
    index_dir: Path | None = typer.Option(None, "--index", help="Index folder built from --embeddings (default: "
                                          "exact search)."),
    k: int = typer.Option(10, "-k", "--k", help="Recommendations per user."),
    exclude_seen: bool = typer.Option(True, "--exclude-seen/--include-seen",
                                      help="Leave out (default) or also recommend the items each user already rated."),
    ef: int | None = typer.Option(None, "--ef", help="efSearch of an HNSW index."),
    nprobe: int | None = typer.Option(None, "--nprobe", help="nprobe of a FAISS IVF index."),
    filter: str | None = filter_option(),
    batch_size: int = typer.Option(512, "--batch-size", help="Users per batch."),
    ray: bool = typer.Option(False, "--ray", help="Run the batches on Ray Data (map_batches over actors; a local "
                             "Ray unless --ray-address); needs the ray extra."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster to join with --ray."),
    force: bool = force_option(),
    json_path: Path | None = json_option(),
) -> None:
    """Top-k items for every user of the embeddings, written as Parquet (the lists the HTTP API answers)."""
    from annrec.recommend.offline import recommend_all

    model = resolve_deprecated(embeddings, None, "--embeddings", "--model", required=True)
    if batch_size <= 0:
        raise InputError(f"--batch-size must be a positive integer; got {batch_size}")
    params = None
    if ef is not None or nprobe is not None:
        rec, _, _ = open_recommender(model, index_dir)
        params = query_params(rec.index, ef, nprobe)
    elif index_dir is not None:
        open_recommender(model, index_dir)  # the pairing check, before any work
    manifest = recommend_all(model, out, index=index_dir, k=k, exclude_seen=exclude_seen, filter=filter,
                             params=params, batch_size=batch_size, backend="ray" if (ray or ray_address) else "local",
                             ray_address=ray_address, force=force)
    console.print(f"wrote top-{k} of {manifest['users']} users ({manifest['rows']} rows) to {out} in "
                  f"{manifest['seconds']:.1f} s ({manifest['backend']})", highlight=False)
    write_json_report(json_path, {"command": "recommend-all", **manifest, "out": str(out)})
