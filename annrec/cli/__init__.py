"""The ``annrec`` command line (Typer).

The root app and its sub-apps live in :mod:`annrec.cli.apps`; each area registers its commands in
its own module (``annrec/cli/<area>.py``), imported below. Errors of type
:class:`~annrec.errors.AnnrecError` are printed as one clear line and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

from annrec.cli.apps import RUN_WARNINGS, app, console

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
    "embeddings_cmds",
    "quickstart",
]

for _mod in _COMMAND_MODULES:
    importlib.import_module(f"annrec.cli.{_mod}")


def _is_cli_library_error(e: BaseException, name: str) -> bool:
    """True for click's exception ``name`` (or a subclass), from the installed click or the copy typer bundles."""
    return any(c.__name__ == name and "click" in c.__module__ for c in type(e).__mro__)


def _os_error_message(e: OSError) -> str:
    import errno

    what = e.strerror or str(e)
    where = f" {e.filename}" if getattr(e, "filename", None) else ""
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EACCES: "check the permissions or write elsewhere",
            errno.EROFS: "write to a writable folder", errno.EADDRINUSE: "choose another --port or stop the other "
            "server"}.get(e.errno or 0, "check the path and try again")
    return f"{what}{':' if where else ''}{where}: {hint}"


def main() -> None:
    """Console-script entry point: exit 0 on success, 2 on bad input or usage (one line, no traceback), 130 on
    Ctrl-C."""
    import warnings

    from annrec.data.splits import FileOrderWarning
    from annrec.errors import AnnrecError

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FileOrderWarning):
            console.print(f"[bold yellow]warning:[/] {message}", highlight=False)
            RUN_WARNINGS.append(str(message))
        else:
            _default_showwarning(message, category, filename, lineno, file, line)

    _default_showwarning = warnings.showwarning
    RUN_WARNINGS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("always", FileOrderWarning)  # each run says it, not only the first in a process
        warnings.showwarning = show_warning
        _run(AnnrecError)


def _run(AnnrecError) -> None:  # noqa: N803 - the exception class, imported lazily by main()
    try:
        result = app(standalone_mode=False)
    except AnnrecError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except OSError as e:
        console.print(f"[bold red]error:[/] {_os_error_message(e)}", highlight=False, markup=False)
        sys.exit(2)
    except Exception as e:
        if _is_cli_library_error(e, "Abort"):  # Ctrl-C inside the CLI library (it turns it into Abort)
            console.print("[yellow]interrupted[/]")
            sys.exit(130)
        if _is_cli_library_error(e, "ClickException"):  # usage errors: its own short message
            e.show()
            sys.exit(2 if _is_cli_library_error(e, "UsageError") else e.exit_code)
        raise
    if isinstance(result, int) and result:
        if result == 130:  # typer turns Ctrl-C into exit code 130
            console.print("[yellow]interrupted[/]")
        sys.exit(result)
