"""``annrec train text``: item vectors from item text with a sentence-transformers model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from annrec.cli.apps import console, json_option, train_app, write_json_report
from annrec.errors import DataError, DataNotFoundError, InputError


def read_items_file(path: Path, id_column: str | None = None, list_fields: tuple[str, ...] = ("genres", "tags"),
                    list_sep: str = "|"):
    """Item metadata from a CSV/TSV/Parquet file: a DataFrame indexed by the id column.

    The id column is ``id_column``, else ``item_id``, ``movieId`` or ``id`` when present, else the first
    column. String cells of ``list_fields`` are split on ``list_sep`` (MovieLens writes ``A|B|C``).

    Raises:
        DataNotFoundError: no such file. DataError: unreadable, empty, missing or duplicate ids.
        InputError: ``id_column`` is not a column.
    """
    import pandas as pd

    from annrec.data import as_external_ids

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"items file {path} does not exist: pass a CSV/TSV/Parquet file with an id column "
                                f"and text columns (e.g. movieId,title,genres)")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", keep_default_na=False,
                             na_values=[""], dtype=str)
    except Exception as e:  # pandas/pyarrow parse errors
        raise DataError(f"cannot read items file {path} ({type(e).__name__}: {e}): give a CSV, TSV or Parquet "
                        f"file with a header row") from None
    if df.empty:
        raise DataError(f"items file {path} has no rows")
    if id_column is None:
        id_column = next((c for c in ("item_id", "movieId", "id") if c in df.columns), df.columns[0])
    elif id_column not in df.columns:
        raise InputError(f"--id-column {id_column!r} is not a column of {path}; columns: {', '.join(df.columns)}")
    ids = as_external_ids(df[id_column].to_numpy(), f"{path.name} column {id_column}")
    if len(set(ids.tolist())) != len(ids):
        raise DataError(f"{path} column {id_column} has duplicate ids: every item needs one row")
    df = df.drop(columns=[id_column])
    df.index = pd.Index(ids, name="item_id")
    for f in list_fields:
        if f in df.columns:
            df[f] = [v.split(list_sep) if isinstance(v, str) else [] for v in df[f].tolist()]
    df.attrs["name"] = path.stem
    return df


def genre_classification(emb, items, seed: int = 0) -> dict[str, Any] | None:
    """Micro-/Macro-F1 of the genre-classification protocol (:func:`annrec.eval.graph.genre_f1`).

    Returns ``None`` when the items have no ``genres`` column (or the protocol module is absent).
    """
    try:
        from annrec.eval.graph import genre_f1
    except ImportError:
        return None
    if items is None or "genres" not in getattr(items, "columns", ()):
        return None
    gc = genre_f1(emb, items, seed=seed)
    return {k: gc[k] for k in ("micro_f1", "macro_f1", "micro_f1_std", "macro_f1_std", "repeats", "nodes",
                               "labels", "train_fraction", "classifier") if k in gc}


@train_app.command("text")
def train_text(
    dataset: str = typer.Option("ml-latest-small", "--dataset", help="MovieLens data set whose movies to encode."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder holding <dataset>/ (else $ANNREC_DATA_DIR)."),
    items_file: Path | None = typer.Option(None, "--items", help="Encode the items of this CSV/TSV/Parquet file "
                                           "instead of a MovieLens data set."),
    id_column: str | None = typer.Option(None, "--id-column", help="Id column of --items (default item_id, movieId, "
                                         "id or the first column)."),
    model: str = typer.Option("all-MiniLM-L6-v2", "--model", help="sentence-transformers model name or local folder."),
    fields: str = typer.Option("title,genres,tags", "--fields", help="Item columns to put in the text, in order."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Texts per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cuda / cpu (default: CUDA when available)."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="Unit-normalise the vectors."),
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", min=1, help="Truncate texts to this many "
                                              "tokens (default: the model's)."),
    max_list_values: int = typer.Option(20, "--max-list-values", min=1, help="At most this many values per list "
                                        "field (the most applied tags)."),
    skip_empty: bool = typer.Option(False, "--skip-empty", help="Leave out items with empty text (counted) "
                                    "instead of failing."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Vector cache folder (default "
                                          "$ANNREC_CACHE_DIR/text or ~/.cache/annrec/text)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Encode everything; do not read or write the cache."),
    num_threads: int | None = typer.Option(None, "--num-threads", min=1, help="torch CPU threads while encoding "
                                           "(default: the machine's cores)."),
    threads: int | None = typer.Option(None, "--threads", hidden=True, help="Deprecated: use --num-threads."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Genre classification (Micro/Macro-F1) of the "
                                  "vectors when the items have genres."),
    seed: int = typer.Option(0, "--seed", help="Seed of the evaluation split."),
    ray: bool = typer.Option(False, "--ray", help="Encode on Ray Data (map_batches over actors, one model each, "
                             "--num-threads torch threads each; a local Ray unless --ray-address); needs the ray "
                             "extra."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster to join with --ray."),
    out: Path = typer.Option(..., "--out", help="Embeddings folder to write (replaced atomically)."),
    json_path: Path | None = json_option(),
) -> None:
    """Encode item text (title, genres, tags...) into cosine item vectors with a sentence-transformers model."""
    from rich.markup import escape

    from annrec.train.text import TextTrainer, resolve_model

    from annrec.cli.data_options import deprecated_flag

    resolve_model(model)  # fail on an unknown model before loading any data
    threads = deprecated_flag(threads, "--threads", "--num-threads", num_threads)
    if items_file is not None:
        data = read_items_file(items_file, id_column)
        name = items_file.stem
    else:
        from annrec.data import load_movielens

        data = load_movielens(dataset, data_dir=os.fspath(data_dir) if data_dir else None)
        name = dataset
    items = data if items_file is not None else data.items
    trainer = TextTrainer(model=model, fields=fields, batch_size=batch_size, device=device, normalize=normalize,
                          cache_dir=cache_dir, use_cache=not no_cache, max_seq_length=max_seq_length,
                          max_list_values=max_list_values, on_empty="skip" if skip_empty else "error",
                          num_threads=threads, show_progress=True,
                          executor="ray" if (ray or ray_address) else "local", ray_address=ray_address)
    emb = trainer.fit(data, dataset=name).to_embeddings()
    figures = dict(emb.manifest["figures"])
    if evaluate:
        gc = genre_classification(emb, items, seed=seed)
        if gc is not None:
            gc["genres_in_text"] = "genres" in trainer.fields
            figures["genre_classification"] = gc
        emb.manifest["figures"] = figures
    emb.save(out)
    enc = emb.manifest["encoder"]
    console.print(f"[bold]text[/] {figures['n_items']} items -> {escape(str(out))} (dim {emb.dim}, metric cosine, "
                  f"model {escape(enc['model'])}, found as {enc['model_source']})")
    console.print(f"encoded {figures['n_encoded']}, from cache {figures['n_cached']}, skipped empty "
                  f"{figures['n_skipped_empty']}, {figures['encode_seconds']} s ({figures['texts_per_second']} texts/s)")
    gc = figures.get("genre_classification")
    if gc:
        note = " (genres are in the text: labels leak)" if gc.get("genres_in_text") else ""
        console.print(f"genre classification: Micro-F1 {gc['micro_f1']:.3f}, Macro-F1 {gc['macro_f1']:.3f}{note}")
    write_json_report(json_path, {"command": "train text", "out": str(out), "dataset": name,
                                  "model": enc["model"], "fields": list(trainer.fields), **figures})


__all__ = ["train_text", "read_items_file", "genre_classification"]
