"""Atomic writes of artifact folders and files.

An artifact is written into a temporary sibling folder and renamed into place, so a crash mid-write
never leaves a half-written folder that a reader (``annrec serve``) would load. A previous folder at
the destination is replaced only after the new one is complete, and only when it is an annrec artifact
(or empty): a user's own folder is never deleted. (Index folders use versioned snapshots instead, with
no moment without an index: :mod:`annrec.index.storage`.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def check_output_dir(dest: str | os.PathLike, kind: str | None = None, *, force: bool = False) -> Path:
    """Check, before any work, that ``dest`` may receive an artifact folder; returns it as a ``Path``.

    Allowed: a path that does not exist (its parent is created), an empty folder, or an annrec artifact
    folder (``manifest.json`` with a ``kind`` starting ``annrec.``; of ``kind`` when given), which is
    replaced. Anything else is refused unless ``force``, and then it is moved aside (renamed to
    ``<name>.old-<time>``), never deleted.

    Raises:
        InputError: ``dest`` is a file, the current folder or one of its parents, or a folder that is
            not an annrec artifact of that kind (without ``force``); its parent is not writable.
    """
    from annrec.errors import InputError

    dest = Path(dest)
    resolved = dest.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or not dest.name:
        raise InputError(f"refusing to write an artifact over {dest} (the current folder or one of its parents): "
                         f"give a new folder name, e.g. --out artifacts/model")
    if dest.is_file() or (dest.exists() and not dest.is_dir()):
        raise InputError(f"{dest} exists and is a file, not a folder: give another --out or remove the file")
    if dest.is_dir() and any(dest.iterdir()) and not _is_artifact(dest, kind):
        what = f"an annrec {kind.removeprefix('annrec.')} artifact" if kind else "an annrec artifact"
        if not force:
            raise InputError(f"{dest} is a folder that is not {what}: refusing to replace it. Give another --out, "
                             f"or pass --force to move it aside (it is renamed, never deleted)")
        aside = dest.parent / f"{dest.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(dest, aside)
    _check_creatable(dest, "--out")
    return dest


def _check_creatable(path: Path, what: str) -> None:
    """Raise unless ``path`` can be created: its nearest existing ancestor is a writable folder (nothing is
    created here, so a command that fails later leaves no empty folders behind)."""
    from annrec.errors import InputError

    parent = path.parent if path.parent != Path("") else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot create {path}: {parent} is a file, not a folder; give another {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {parent} (permission denied): give another {what}")


def check_output_file(path: str | os.PathLike | None) -> None:
    """Check, before any work, that a report file (``--json PATH``) can be written: not a folder, its parent
    creatable and writable.

    Raises:
        InputError: it cannot be written; the message names the path.
    """
    from annrec.errors import InputError

    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder: give a file name for --json, e.g. {path / 'report.json'}")
    _check_creatable(path, "--json path")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write {path} (permission denied): give another path")


def _is_artifact(folder: Path, kind: str | None) -> bool:
    try:
        found = json.loads((folder / "manifest.json").read_text()).get("kind", "")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(found, str) and (found == kind if kind else found.startswith("annrec."))


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, kind: str | None = None, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on normal exit move it to ``dest`` (replacing a previous artifact there).

    ``dest`` is checked first (:func:`check_output_dir`): only an empty folder or an annrec artifact
    (of ``kind``) is ever replaced. On an exception (Ctrl-C included) the temporary folder is removed
    and ``dest`` is left untouched.

    Raises:
        InputError: as :func:`check_output_dir`.
    """
    import fcntl
    import uuid

    dest = check_output_dir(dest, kind, force=force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    # held while the folder is written: start-up clean-up (annrec.index.storage.cleanup_siblings) removes a
    # temporary folder only when no live process holds its lock, whatever pid wrote it
    lock = os.open(tmp / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        (tmp / ".lock").unlink()
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)  # an artifact (or an empty folder), checked above
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; artifacts are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars and arrays are converted)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
