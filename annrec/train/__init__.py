"""Trainers: interactions, graphs and text -> :class:`annrec.embeddings.Embeddings`.

One module per trainer (``annrec.train.mf``, ``annrec.train.als``, ``annrec.train.deepwalk``,
``annrec.train.text``, ``annrec.train.sequence``), each imported on its own so that a trainer's heavy
dependencies (torch, implicit, gensim, sentence-transformers) load only when it is used. Hyper-parameters
go in the constructor and ``fit`` learns, as in ``implicit`` and scikit-learn.

The names below are imported lazily (PEP 562), so ``import annrec.train`` costs nothing:

>>> from annrec.train import MatrixFactorization
>>> mf = MatrixFactorization(dim=64).fit(train)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MatrixFactorization": "annrec.train.mf",
    "BiasBaseline": "annrec.train.mf",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'annrec.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
