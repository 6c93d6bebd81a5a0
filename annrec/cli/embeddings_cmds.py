"""``annrec embeddings import``: users' own vectors (and titles) as an Embeddings folder."""

from __future__ import annotations

from pathlib import Path

import typer

from annrec.cli.apps import app, console, force_option, json_option, write_json_report

embeddings_app = typer.Typer(help="Bring your own vectors: make an Embeddings folder from files.",
                             no_args_is_help=True)
app.add_typer(embeddings_app, name="embeddings")


@embeddings_app.command("import")
def import_vectors(
    vectors: Path = typer.Argument(..., help="Vectors: .npy, .fvecs/.bvecs, .hdf5 (ANN-Benchmarks), .parquet or "
                                   ".csv (an id column and one column per dimension, or one list column)."),
    ids: Path | None = typer.Option(None, "--ids", help="Item ids, one per vector row (.npy, .json list, or text "
                                    "with one id per line); default: --id-col, else row numbers."),
    id_col: str | None = typer.Option(None, "--id-col", help="Id column of a Parquet/CSV vectors file."),
    items: Path | None = typer.Option(None, "--items", help="Item metadata table (CSV/Parquet): an id column "
                                      "and any columns (title, genres, ...), shown by the CLI and the API."),
    items_id_col: str = typer.Option("item_id", "--items-id-col", help="Id column of --items."),
    metric: str | None = typer.Option(None, "--metric", help="ip, cosine or l2 (default: an HDF5 file's distance, "
                                      "else cosine)."),
    out: Path = typer.Option(..., "--out", help="Embeddings folder to write (a previous Embeddings folder is "
                             "replaced; any other folder is refused, see --force)."),
    force: bool = force_option(),
    json_path: Path | None = json_option(),
) -> None:
    """Import item vectors (and metadata) into an Embeddings folder for `annrec index build` and `annrec serve`."""
    import numpy as np

    from annrec._io import check_output_dir
    from annrec._validate import check_metric
    from annrec.data.vectors import read_ids, read_item_metadata, read_user_vectors, vectors_hash
    from annrec.embeddings import KIND, Embeddings
    from annrec.errors import InputError

    check_output_dir(out, KIND, force=force)
    if ids is not None and id_col is not None:
        raise InputError("give the ids either as --ids FILE or as --id-col COLUMN, not both")
    x, table_ids, file_metric = read_user_vectors(vectors, id_col=id_col)
    item_ids = read_ids(ids) if ids is not None else table_ids
    if item_ids is None:
        item_ids = np.arange(len(x), dtype=np.int64)
    if len(item_ids) != len(x):
        raise InputError(f"{len(item_ids)} ids for {len(x)} vectors in {vectors}: give exactly one id per row")
    metric = check_metric(metric or file_metric or "cosine")
    meta = read_item_metadata(items, items_id_col) if items is not None else None
    emb = Embeddings(x, item_ids, metric, items=meta,
                     manifest={"trainer": "import", "source": Path(vectors).name, "data_hash": None,
                               "params": {"metric": metric}})
    emb.manifest["data_hash"] = vectors_hash(emb.vectors, emb.ids)
    if meta:
        known = sum(1 for i in emb.ids.tolist() if i in meta)
        emb.manifest["items_with_metadata"] = known
    path = emb.save(out, force=force)
    console.print(f"wrote {path}: {len(emb):,} vectors of dim {emb.dim} (metric {metric})"
                  + (f", metadata for {emb.manifest['items_with_metadata']:,} items" if meta else ""),
                  highlight=False, markup=False)
    write_json_report(json_path, {"command": "embeddings import", "out": str(path), "vectors": str(vectors),
                                  "count": len(emb), "dim": emb.dim, "metric": metric,
                                  "data_hash": emb.manifest["data_hash"],
                                  "items_with_metadata": emb.manifest.get("items_with_metadata", 0)})


__all__ = ["import_vectors", "embeddings_app"]
