"""Typer apps shared by the command modules: ``annrec``, ``annrec train``, ``annrec index``, ``annrec bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=False)
err_console = Console(stderr=True)

app = typer.Typer(name="annrec", help="Train embeddings, index them, benchmark and serve them.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
train_app = typer.Typer(help="Train an embedding model and write an Embeddings artifact.", no_args_is_help=True)
index_app = typer.Typer(help="Build, query and tune vector indexes.", no_args_is_help=True)
bench_app = typer.Typer(help="ANN-Benchmarks-style recall/QPS benchmarks.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(index_app, name="index")
app.add_typer(bench_app, name="bench")


#: warnings the running command printed (e.g. a split that fell back to file order); every --json report
#: records them under "warnings"
RUN_WARNINGS: list[str] = []


def write_json_report(path: Path | None, figures: dict[str, Any]) -> None:
    """Write ``figures`` to ``path`` as JSON when ``--json PATH`` was given (with the run's warnings)."""
    if path is None:
        return
    from annrec._io import write_json

    if RUN_WARNINGS:
        figures = {**figures, "warnings": [*figures.get("warnings", []), *RUN_WARNINGS]}
    write_json(path, figures)
    console.print(f"figures written to {path}")


def _check_json(value: Path | None) -> Path | None:
    from annrec._io import check_output_file

    check_output_file(value)
    return value


def json_option() -> Any:
    """``--json PATH``: also write the figures as JSON; checked for writability before any work starts."""
    return typer.Option(None, "--json", help="Also write the figures as JSON to this path.", callback=_check_json)


def force_option() -> Any:
    """``--force``: let ``--out`` name a folder that is not an artifact of this kind (it is moved aside)."""
    return typer.Option(False, "--force", help="If --out names a folder that is not an artifact of this kind, move "
                        "it aside (renamed to <name>.old-<time>, never deleted) instead of refusing.")


def embeddings_option(help: str = "Embeddings folder (from `annrec train ...`).") -> Any:
    """``--embeddings PATH``: the one name of an Embeddings folder on every command."""
    return typer.Option(None, "--embeddings", help=help)


def deprecated_option(flag: str) -> Any:
    """A hidden option kept for one release under an old spelling (see :func:`resolve_deprecated`)."""
    return typer.Option(None, flag, hidden=True)


def resolve_deprecated(value: Any, old_value: Any, flag: str, old_flag: str, *, required: bool = False) -> Any:
    """The value of ``flag``, or of its deprecated spelling ``old_flag`` (with a warning on stderr).

    Raises:
        InputError: both spellings given with different values, or neither when ``required``.
    """
    from annrec.errors import InputError

    if old_value is not None:
        err_console.print(f"warning: {old_flag} is deprecated and will be removed; use {flag}", highlight=False)
        if value is not None and value != old_value:
            raise InputError(f"{flag} and its old spelling {old_flag} disagree: give only {flag}")
        value = old_value
    if value is None and required:
        raise InputError(f"missing option {flag}: give it (see --help)")
    return value


__all__ = ["app", "train_app", "index_app", "bench_app", "console", "err_console", "write_json_report",
           "json_option", "force_option", "json", "embeddings_option", "deprecated_option", "resolve_deprecated"]
