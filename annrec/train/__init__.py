"""Trainers: interactions, graphs and text -> :class:`annrec.embeddings.Embeddings`.

One module or package per trainer (``annrec.train.mf``, ``annrec.train.als``, ``annrec.train.deepwalk``,
``annrec.train.text``, ``annrec.train.sequence``), each imported on its own so that a trainer's heavy
dependencies (torch, implicit, gensim, sentence-transformers) load only when it is used. Every trainer
follows :class:`annrec.train.base.Trainer`: hyper-parameters go in the constructor, ``fit(train) -> self``,
``to_embeddings()``, ``get_params()`` and ``recommend_fn()``, as in ``implicit`` and scikit-learn.

The names below are imported lazily (PEP 562), so ``import annrec.train`` costs nothing:

>>> from annrec.train import MatrixFactorization
>>> emb = MatrixFactorization(factors=64).fit(train).to_embeddings()
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Trainer": "annrec.train.base",
    "MatrixFactorization": "annrec.train.mf",
    "ImplicitALS": "annrec.train.als",
    "DeepWalk": "annrec.train.deepwalk",
    "SequenceTrainer": "annrec.train.sequence",
    "TextTrainer": "annrec.train.text",
    "BiasBaseline": "annrec.eval.baselines",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'annrec.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
