"""Index specifications: the YAML presets under the top-level ``index/`` folder.

A spec is ``{backend: faiss|hnswlib|usearch|pynndescent|scann, metric: (optional, default: the embeddings' metric),
params: {…}}``; ``annrec index build --spec index/hnsw.yaml`` and ``annrec index tune`` read and write this format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from annrec.errors import DataNotFoundError, InputError


def read_yaml(path: str | os.PathLike, what: str, hint: str) -> Any:
    """The parsed content of a YAML file (``yaml.safe_load``; ``None`` for an empty file).

    Args:
        path: the file; what: what it should hold, for messages ("index spec"); hint: how to get one.

    Raises:
        DataNotFoundError: no such file (the message ends with ``hint``). InputError: not valid YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no {what} at {path}: {hint}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{path} is not valid YAML: {e}") from None


class IndexSpec(BaseModel):
    """One index configuration: backend, optional metric override and backend parameters."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["faiss", "hnswlib", "usearch", "pynndescent", "scann"]
    metric: Literal["ip", "cosine", "l2"] | None = None
    params: dict[str, Any] = {}

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> IndexSpec:
        """Read a spec file.

        Raises:
            DataNotFoundError: no such file. InputError: not YAML, or fields/values that are not valid.
        """
        path = Path(path)
        raw = read_yaml(path, "index spec", "copy one of the presets in index/*.yaml")
        try:
            return cls.model_validate(raw or {})
        except ValidationError as e:
            errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'spec'}: {x['msg']}" for x in e.errors())
            raise InputError(f"{path} is not a valid index spec ({errs}); expected keys backend "
                             f"(faiss|hnswlib|usearch|pynndescent|scann), metric (optional) and params") from None
