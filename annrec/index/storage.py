"""Versioned index folders: complete snapshots named by one pointer file, plus the write-ahead log.

Layout (``docs/design.md``, "Artifacts")::

    <index>/manifest.json        kind "annrec.index", format_version 2, layout "versioned" (backend, metric, dim
                                 and params as built: for people and discovery; the snapshot's manifest rules)
    <index>/CURRENT              the name of the current snapshot folder, one line
    <index>/snapshot-<seq>-<id>/ a complete index folder (annrec.index.folder format) whose manifest records
                                 ``seq``, the last write-ahead-log entry it holds
    <index>/wal.sqlite           the write-ahead log (annrec.index.wal): entries after the snapshot's seq

At every instant exactly one complete snapshot is current: a new snapshot is written into a hidden
temporary folder, fsynced, renamed to its final name, and only then named by ``CURRENT`` (written to a
temporary file, fsynced, renamed over the old pointer, and the folder fsynced) — the scheme of LevelDB's
``CURRENT`` file and of Git's refs. Loading is "the current snapshot, then the log entries after its seq".
A folder without ``CURRENT`` is the earlier flat format (format_version 1) and still loads.

A fresh ``--out`` folder is built whole in a hidden sibling and renamed into place (one rename); an
existing index folder gets a new snapshot and a pointer switch, never a moment without an index.
Crash windows are tested by :data:`STEP_HOOK`, called between file operations.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from annrec.errors import ArtifactError

if TYPE_CHECKING:
    from annrec.index.base import Index

LAYOUT = "versioned"
FORMAT_VERSION = 2
CURRENT = "CURRENT"
SNAPSHOT_RE = re.compile(r"^snapshot-(\d{12})-([0-9a-f]{8})$")
READERS_LOCK = ".readers.lock"    # shared by loaders; exclusive while old snapshots are deleted
SNAPSHOT_LOCK = ".snapshot.lock"  # one snapshot writer at a time (across processes)
FLAT_FILES = ("index.hnsw", "index.faiss", "ids.json", "deleted.npy", "vectors.npy", "items.json")

#: Called with the name of each step of a snapshot switch or a build (tests raise here to simulate a crash).
STEP_HOOK: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)


def fsync_dir(path: Path) -> None:
    """fsync a folder so the renames inside it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(path)


# ----------------------------------------------------------------------------- reading
def current_name(folder: str | os.PathLike) -> str | None:
    """The current snapshot's folder name, or ``None`` for a flat (format 1) folder.

    Raises:
        ArtifactError: ``CURRENT`` names something that is not a snapshot folder of this index.
    """
    folder = Path(folder)
    try:
        name = (folder / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    if not SNAPSHOT_RE.match(name) or not (folder / name / "manifest.json").is_file():
        raise ArtifactError(f"{folder / CURRENT} names {name!r}, which is not a complete snapshot folder of this "
                            f"index: restore that folder or rebuild the index with `annrec index build`")
    return name


def snapshot_folder(folder: str | os.PathLike) -> Path:
    """The folder holding the index files: the current snapshot, or ``folder`` itself for the flat format."""
    folder = Path(folder)
    name = current_name(folder)
    return folder if name is None else folder / name


@contextlib.contextmanager
def _flock(file: Path, mode: int, blocking: bool = True) -> Iterator[bool]:
    """Hold an flock on ``file`` (created if missing); yields False when non-blocking and busy. A read-only
    folder is read without locks."""
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def reading(folder: str | os.PathLike):
    """Context manager held while a snapshot is read, so no process deletes it meanwhile."""
    return _flock(Path(folder) / READERS_LOCK, fcntl.LOCK_SH)


def snapshot_lock(folder: str | os.PathLike, blocking: bool = True):
    """Context manager giving this process the right to write a snapshot of ``folder`` (yields False if another
    process holds it and ``blocking`` is False)."""
    return _flock(Path(folder) / SNAPSHOT_LOCK, fcntl.LOCK_EX, blocking)


# ----------------------------------------------------------------------------- writing snapshots
def new_snapshot(index: Index, folder: Path, seq: int) -> str:
    """Write ``index`` as a complete snapshot folder inside ``folder`` holding log entries up to ``seq``;
    returns its name (not yet current: :func:`switch`). Writes into ``.<name>.tmp`` first, fsyncs, renames.
    """
    from annrec.index.folder import write_files

    name = f"snapshot-{int(seq):012d}-{uuid.uuid4().hex[:8]}"
    tmp = folder / f".{name}.tmp"
    tmp.mkdir()
    try:
        _step("snapshot-files")
        write_files(index, tmp, seq=seq)
        _fsync_tree(tmp)
        _step("snapshot-rename")
        os.rename(tmp, folder / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder)
    return name


def switch(folder: Path, name: str) -> None:
    """Make snapshot ``name`` current: write the pointer to a temporary file, fsync, rename over ``CURRENT``,
    fsync the folder."""
    _step("pointer-write")
    fd, tmp = tempfile.mkstemp(prefix=f".{CURRENT}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        _step("pointer-rename")
        os.replace(tmp, folder / CURRENT)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    _step("pointer-done")


def _top_manifest(index: Index) -> dict:
    m = index.manifest()
    m.pop("count", None)
    m.pop("n_labels", None)
    m.update({"format_version": FORMAT_VERSION, "layout": LAYOUT})
    return m


def retire(folder: Path, keep: set[str]) -> list[str]:
    """Delete snapshot folders other than ``keep`` (waits for loaders in other processes); returns their names."""
    gone = []
    with _flock(folder / READERS_LOCK, fcntl.LOCK_EX):
        for p in folder.iterdir():
            if SNAPSHOT_RE.match(p.name) and p.name not in keep and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p.name)
    return gone


def save(index: Index, dest: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``index`` to the index folder ``dest`` (``Index.save``, ``annrec index build --out``).

    * ``dest`` does not exist (or is empty): the whole folder (snapshot, ``CURRENT``, manifest) is written into a
      hidden sibling and renamed into place — one rename, so a crash leaves nothing or everything;
    * ``dest`` is an index folder: a new snapshot is written inside it and made current; it supersedes every
      logged write so far (the log is trimmed) and the earlier snapshots are removed. A flat (format 1)
      folder is converted the same way, its old files removed after the switch.

    Raises:
        InputError: ``dest`` is a file or a folder that is not an index artifact (unless ``force``, which moves
            that folder aside; see :func:`annrec._io.check_output_dir`).
    """
    from annrec._io import check_output_dir, write_json
    from annrec.index.folder import KIND
    from annrec.index.wal import LOG_FILE, WriteLog

    dest = check_output_dir(dest, KIND, force=force)
    if dest.is_dir() and (dest / "manifest.json").is_file():
        with snapshot_lock(dest):
            seq = 0
            log = WriteLog(dest) if (dest / LOG_FILE).exists() else None
            try:
                if log is not None:
                    seq = log.max_seq()
                with index._write_lock:
                    name = new_snapshot(index, dest, seq)
                switch(dest, name)
                _step("manifest")
                write_json(dest / "manifest.json", _top_manifest(index))
                if log is not None:
                    log.trim(seq)
            finally:
                if log is not None:
                    log.close()
            _step("retire")
            retire(dest, {name})
            remove_flat_files(dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        with _flock(tmp / ".lock", fcntl.LOCK_EX):
            os.chmod(tmp, 0o777 & ~_umask())
            with index._write_lock:
                name = new_snapshot(index, tmp, 0)
            switch(tmp, name)
            write_json(tmp / "manifest.json", _top_manifest(index))
            (tmp / ".lock").unlink()
            fsync_dir(tmp)
            _step("build-rename")
            os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def remove_flat_files(folder: Path) -> None:
    """Remove the files of the flat format left beside ``CURRENT`` (a converted folder)."""
    if (folder / CURRENT).exists():
        for f in FLAT_FILES:
            with contextlib.suppress(FileNotFoundError):
                (folder / f).unlink()


# ----------------------------------------------------------------------------- clean-up
def cleanup(folder: str | os.PathLike) -> list[str]:
    """Remove what a crash left in an index folder: temporary snapshot folders no live process is writing,
    snapshots other than the current one, flat files beside ``CURRENT``. Whatever process wrote them (the
    locks die with their process). Returns the removed names. Does nothing while another process writes a
    snapshot.
    """
    folder = Path(folder)
    removed: list[str] = []
    if not (folder / CURRENT).exists():
        return removed
    with snapshot_lock(folder, blocking=False) as mine:
        if not mine:
            return removed
        for p in folder.iterdir():
            if p.name.startswith(".snapshot-") and p.name.endswith(".tmp") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
            elif p.name.startswith(f".{CURRENT}."):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                removed.append(p.name)
        current = current_name(folder)
        removed += retire(folder, {current} if current else set())
        remove_flat_files(folder)
    return removed


def cleanup_siblings(parent: str | os.PathLike) -> list[str]:
    """Remove the hidden temporary folders (``.<name>.tmp-*``) and replaced folders (``.<name>.old-*``) that
    an interrupted atomic write left in ``parent``; a temporary folder is kept while its writer (any process)
    holds its lock. Returns the removed names."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        if not (p.name.startswith(".") and p.is_dir() and (".tmp-" in p.name or ".old-" in p.name)):
            continue
        if ".tmp-" in p.name and (p / ".lock").exists():
            with _flock(p / ".lock", fcntl.LOCK_EX, blocking=False) as free:
                if not free:
                    continue  # a build in progress
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p.name)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
