"""The ``annrec`` command line (Typer).

The root app and its sub-apps live in :mod:`annrec.cli.apps`; each area registers its commands in
its own module (``annrec/cli/<area>.py``), imported below. Errors of type
:class:`~annrec.errors.AnnrecError` are printed as one clear line and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

from annrec.cli.apps import app, console

# Each module adds its commands to the apps when imported.
_COMMAND_MODULES = [
    "train_als",
    "train_text",
    "train_deepwalk",
    "serve",
    "train_sequence",
    "bench",
    "train_mf",
    "index_cmds",
    "recommend_cmds",
    "quickstart",
]

for _mod in _COMMAND_MODULES:
    importlib.import_module(f"annrec.cli.{_mod}")


def main() -> None:
    """Console-script entry point."""
    from annrec.errors import AnnrecError

    try:
        app(standalone_mode=False)
    except AnnrecError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
