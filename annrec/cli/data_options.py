"""The data-source options shared by the ``annrec train …`` commands, and the loader behind them.

Every trainer of user–item interactions reads either a MovieLens set (``--dataset`` / ``--data-dir``,
or ``$ANNREC_DATA_DIR``; the official archive is downloaded and verified otherwise) or an interaction log
of the user's own (``--ratings FILE`` with named columns). The options are declared once here as
``typing.Annotated`` aliases (Typer's documented way to reuse options) so ``train mf``, ``train als`` and
``train sequence`` spell and document them identically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from annrec.errors import InputError

DatasetOpt = Annotated[str, typer.Option(
    "--dataset", help="MovieLens data set to train on (ml-latest-small, ml-100k, ml-1m, ml-25m, ml-32m).")]
DataDirOpt = Annotated[Optional[Path], typer.Option(  # noqa: UP045 (Typer needs the Optional spelling)
    "--data-dir", help="Folder holding <dataset>/ (else $ANNREC_DATA_DIR; else the archive is downloaded).")]
RatingsOpt = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--ratings", help="Train on this CSV/TSV/Parquet interaction log (header line, named columns) instead of a "
    "MovieLens set.")]
UserColOpt = Annotated[str, typer.Option("--user-col", help="User id column of --ratings.")]
ItemColOpt = Annotated[str, typer.Option("--item-col", help="Item id column of --ratings.")]
RatingColOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--rating-col", help="Rating column of --ratings (default: implicit feedback, every event counts 1; "
    "`train mf` requires it).")]
TimestampColOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--timestamp-col", help="Timestamp column of --ratings, seconds since the epoch or ISO-8601 (default: file "
    "order is time order; `train sequence` requires it).")]


ItemsOpt = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--items", help="Item metadata table (CSV/Parquet: an id column and any columns such as title, genres, year), "
    "kept in the Embeddings so the CLI and the API show and filter on it.")]
ItemsIdColOpt = Annotated[str, typer.Option("--items-id-col", help="Id column of --items.")]


NumThreadsOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--num-threads", min=1, help="CPU threads of the trainer (default: the machine's cores).")]
DeviceOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--device", help="cpu or cuda (default: CUDA when available).")]


def hidden_option(old: str) -> Any:
    """A hidden option for a flag spelling of an earlier release (see :func:`deprecated_flag`)."""
    return typer.Option(None, old, hidden=True, help=f"Deprecated spelling of another flag ({old}).")


def deprecated_flag(old_value: Any, old: str, new: str, value: Any) -> Any:
    """``old_value`` when the deprecated flag ``old`` was given (saying on stderr to use ``new``), else ``value``."""
    if old_value is None:
        return value
    typer.echo(f"warning: {old} is deprecated and will be removed in the next release: use {new}", err=True)
    return old_value


def load_training_data(dataset: str, data_dir: Path | None, ratings: Path | None, user_col: str = "user_id",
                       item_col: str = "item_id", rating_col: str | None = None, timestamp_col: str | None = None,
                       *, need_rating: str | None = None, need_timestamp: str | None = None,
                       items: Path | None = None, items_id_col: str = "item_id"):
    """The interactions a ``train`` command fits: ``--ratings`` when given, else the MovieLens ``dataset``.

    Args:
        need_rating / need_timestamp: when set (the name of the command), a ``--ratings`` file must come with
            ``--rating-col`` / ``--timestamp-col``; the error says so and names the command.
        items / items_id_col: an item metadata table to attach (:func:`attach_items`).

    Returns:
        :class:`annrec.data.Interactions`.

    Raises:
        InputError: a required column flag is missing.
        DataNotFoundError / DataError: from :func:`annrec.data.load_interactions` / :func:`load_movielens`
            (missing file, empty file, missing column, unparsable line, failed checksum).
    """
    if ratings is not None:
        from annrec.data import load_interactions

        if need_rating and rating_col is None:
            raise InputError(f"{need_rating} learns explicit ratings: pass --rating-col with the rating column of "
                             f"--ratings (for implicit feedback use `annrec train als`)")
        if need_timestamp and timestamp_col is None:
            raise InputError(f"{need_timestamp} orders each user's events by time: pass --timestamp-col with the "
                             f"timestamp column of --ratings (seconds since the epoch or ISO-8601)")
        inter = load_interactions(ratings, user_col=user_col, item_col=item_col, rating_col=rating_col,
                                  timestamp_col=timestamp_col)
    else:
        from annrec.data import load_movielens

        inter = load_movielens(dataset, data_dir=os.fspath(data_dir) if data_dir else None)
    return attach_items(inter, items, items_id_col) if items is not None else inter


__all__ = ["DatasetOpt", "DataDirOpt", "RatingsOpt", "UserColOpt", "ItemColOpt", "RatingColOpt", "TimestampColOpt",
           "NumThreadsOpt", "DeviceOpt", "hidden_option", "deprecated_flag", "load_training_data"]


def attach_items(inter, path: Path, id_col: str = "item_id"):
    """``inter`` with the item metadata of a CSV/Parquet table (every column; ``a|b|c`` genres become lists)
    in place of its own, so every trainer writes it into the Embeddings' ``items.json``.

    Raises:
        DataNotFoundError / DataError: unreadable table. InputError: no such id column, repeated ids.
    """
    import dataclasses

    from annrec.data.vectors import read_table

    df = read_table(path)
    if id_col not in df.columns:
        raise InputError(f"{path} has no id column {id_col!r} (columns: {', '.join(map(str, df.columns[:20]))}): "
                         f"name it with --items-id-col")
    if df[id_col].duplicated().any():
        raise InputError(f"{path}: item id {df[id_col][df[id_col].duplicated()].iloc[0]!r} appears more than once")
    if inter.item_ids.dtype.kind in "iu":
        try:
            df[id_col] = df[id_col].astype("int64")
        except (ValueError, TypeError):
            raise InputError(f"{path}: column {id_col!r} must hold the integer item ids of the interactions") from None
    else:
        df[id_col] = df[id_col].astype(str)
    if "genres" in df.columns:
        df["genres"] = df["genres"].map(lambda v: [g for g in v.split("|") if g] if isinstance(v, str) else v)
    df = df.set_index(id_col)
    df.attrs["annrec_all_columns"] = True
    return dataclasses.replace(inter, items=df)
