"""Artifact discovery under a model dir and the query-encoder hook of text and sequence models.

See :mod:`annrec.service.registry` for how discovered artifacts are served.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annrec.embeddings import KIND as EMB_KIND
from annrec.embeddings import Embeddings
from annrec.errors import ArtifactError, DataNotFoundError, InputError
from annrec.index.base import KIND as INDEX_KIND
from annrec.index.sharded import SHARDED_KIND

log = logging.getLogger("annrec.service")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# ----------------------------------------------------------------------------- query encoder hook
#: trainer name (manifest "trainer") -> module offering ``query_encoder_from_embeddings(emb)``.
ENCODER_MODULES: dict[str, str] = {"text": "annrec.train.text", "sequence": "annrec.train.sequence"}
#: what each trainer's encoder answers: ``/v1/search/text`` or ``/v1/recommendations/next``.
ENCODER_KINDS: dict[str, str] = {"text": "text", "sequence": "sequence"}
_ENCODER_OVERRIDES: dict[str, tuple[str, Callable[[Embeddings], Any]]] = {}


def register_query_encoder(trainer: str, factory: Callable[[Embeddings], Any] | None,
                           kind: str | None = None) -> None:
    """Register (or with ``factory=None`` remove) a query-encoder factory for a trainer name.

    ``factory(emb)`` returns an encoder (see :func:`query_encoder`) or ``None``; ``kind`` is ``"text"``
    or ``"sequence"`` (default: ``ENCODER_KINDS[trainer]``). Overrides the module lookup; used by tests
    and by plug-ins whose trainer is not in :data:`ENCODER_MODULES`.
    """
    if factory is None:
        _ENCODER_OVERRIDES.pop(trainer, None)
        return
    kind = kind or ENCODER_KINDS.get(trainer)
    if kind not in ("text", "sequence"):
        raise InputError(f"query encoder kind must be 'text' or 'sequence'; got {kind!r}")
    _ENCODER_OVERRIDES[trainer] = (kind, factory)


def query_encoder(emb: Embeddings) -> tuple[str, Any] | None:
    """The query encoder of an embeddings artifact, as ``(kind, encoder)``, or ``None`` when it has none.

    Looks up ``emb.manifest["trainer"]``; for ``"text"`` / ``"sequence"`` lazily imports
    ``annrec.train.text`` / ``annrec.train.sequence`` and calls its
    ``query_encoder_from_embeddings(emb)``. The encoder contract (``encoder.encode(...)``, or the encoder
    itself when it is a plain callable), one query per call:

    * text: ``encode(texts: list[str])`` with one text -> float32 ``(1, dim)`` or ``(dim,)``
      (sentence-transformers style, e.g. :class:`annrec.train.text.TextEncoder`);
    * sequence: ``encode(item_ids: list, timestamps: list[int] | None)`` (Unix seconds, oldest first)
      -> float32 ``(dim,)`` (e.g. :class:`annrec.train.sequence.SequenceQueryEncoder`);
    * either may return ``(vector, warnings: list[str])``; the warnings are passed to the client;
    * bad input raises :class:`~annrec.errors.InputError` (422), unknown item ids
      :class:`~annrec.errors.UnknownIdError` (404).

    A missing module or function means "no encoder" (``None``); other errors propagate.
    """
    trainer = (emb.manifest or {}).get("trainer")
    if trainer in _ENCODER_OVERRIDES:
        kind, factory = _ENCODER_OVERRIDES[trainer]
        enc = factory(emb)
        return None if enc is None else (kind, enc)
    module_name = ENCODER_MODULES.get(trainer)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if getattr(e, "name", None) == module_name:
            return None
        raise
    fn = getattr(module, "query_encoder_from_embeddings", None)
    if fn is None:
        return None
    enc = fn(emb)
    return None if enc is None else (ENCODER_KINDS[trainer], enc)


def load_encoder(emb: Embeddings, path: Path) -> tuple[tuple[str, Any] | None, str | None]:
    """``(query_encoder(emb), None)``, or ``(None, reason)`` when loading it fails: a broken encoder must
    not stop the other indexes."""
    try:
        return query_encoder(emb), None
    except Exception as e:  # noqa: BLE001
        reason = f"{type(e).__name__}: {e}"
        log.warning("query encoder of %s could not be loaded: %s", path, reason)
        return None, reason


# ----------------------------------------------------------------------------- discovery
@dataclass
class Discovered:
    """Artifact folders found under a model dir: name -> folder."""

    indexes: dict[str, Path] = field(default_factory=dict)
    embeddings: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def discover(model_dir: str | Path) -> Discovered:
    """Find Index and Embeddings artifacts in ``model_dir`` (itself, children, grandchildren).

    Raises:
        DataNotFoundError: ``model_dir`` is not a folder.
        ArtifactError: a folder name is served twice or a manifest is unreadable.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"model dir {root} is not a folder: pass the folder holding the artifacts "
                                f"(e.g. the --out of `annrec quickstart`)")
    found = Discovered()

    def visit(path: Path, name: str, depth: int) -> None:
        manifest = path / "manifest.json"
        if manifest.is_file():
            try:
                kind = json.loads(manifest.read_text()).get("kind")
            except (OSError, ValueError, AttributeError) as e:
                raise ArtifactError(f"{manifest} is unreadable ({e}): rebuild that artifact or move it out of "
                                    f"the model dir") from None
            if kind == SHARDED_KIND:
                kind = INDEX_KIND  # served like any index (its shard folders are not served on their own)
            if kind not in (INDEX_KIND, EMB_KIND):
                found.skipped.append(f"{path} ({kind or 'no kind'})")
                return
            if not NAME_RE.match(name):
                found.skipped.append(f"{path} (name {name!r} is not usable in a URL: use letters, digits, . _ -)")
                return
            target = found.indexes if kind == INDEX_KIND else found.embeddings
            other = found.embeddings if kind == INDEX_KIND else found.indexes
            if name in target or name in other:
                raise ArtifactError(f"two artifacts would be served as {name!r} ({path}): rename one folder")
            target[name] = path
            return
        if depth >= 2:
            return
        for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            visit(child, child.name if depth == 0 else f"{name}.{child.name}", depth + 1)

    visit(root, root.name, 0)
    return found
