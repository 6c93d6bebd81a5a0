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
                       *, need_rating: str | None = None, need_timestamp: str | None = None):
    """The interactions a ``train`` command fits: ``--ratings`` when given, else the MovieLens ``dataset``.

    Args:
        need_rating / need_timestamp: when set (the name of the command), a ``--ratings`` file must come with
            ``--rating-col`` / ``--timestamp-col``; the error says so and names the command.

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
        return load_interactions(ratings, user_col=user_col, item_col=item_col, rating_col=rating_col,
                                 timestamp_col=timestamp_col)
    from annrec.data import load_movielens

    return load_movielens(dataset, data_dir=os.fspath(data_dir) if data_dir else None)


__all__ = ["DatasetOpt", "DataDirOpt", "RatingsOpt", "UserColOpt", "ItemColOpt", "RatingColOpt", "TimestampColOpt",
           "NumThreadsOpt", "DeviceOpt", "hidden_option", "deprecated_flag", "load_training_data"]
