"""The trainer contract every trainer of :mod:`annrec.train` follows, and the checks they share.

Modelled on ``implicit``'s ``RecommenderBase`` (``implicit/recommender_base.py``) and scikit-learn estimators:

* hyper-parameters go in the constructor, which checks them (:class:`~annrec.errors.InputError`) and
  stores each one under its own name;
* ``fit(train, validation=None) -> self`` learns, and keeps what the export needs (id vocabularies, the
  seen matrix, item metadata): :meth:`Trainer.to_embeddings` takes no data;
* :meth:`Trainer.get_params` returns the constructor's arguments (``type(t)(**t.get_params())`` builds the
  same trainer) and is what goes into ``manifest["params"]``;
* :meth:`Trainer.recommend_fn` is the one scorer of the evaluation protocols
  (:func:`annrec.metrics.evaluate_topn`): ``fn(user_rows, k, seen) -> item rows``.

The shared parameters have one name in every trainer: ``factors`` (latent size), ``num_threads`` (``None``:
the machine's cores, ``os.cpu_count()``), ``device`` (``None``: CUDA when available, else the CPU) and
``show_progress``. The spellings of earlier releases (``dim``, ``units``, ``threads``, ``workers``,
``use_gpu``, ``progress``, ``show_progress_bar``, ``negative``, ``n_negatives``) are still accepted for one
release, with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from annrec.errors import InputError

if TYPE_CHECKING:
    from annrec.data import Interactions
    from annrec.embeddings import Embeddings

__all__ = ["Trainer", "NotFittedError", "RecommendFn", "renamed_params", "default_num_threads",
           "resolve_num_threads", "resolve_device", "check_interactions", "int_param", "float_param",
           "item_metadata", "blas_single_thread", "check_idx", "epoch_bar", "torch_threads",
           "check_num_threads", "check_device_name"]

#: ``fn(user_rows (b,) int64, k, seen: list of (b) int64 item-row arrays) -> (b, k) int64 item rows`` (-1: none).
RecommendFn = Callable[[np.ndarray, int, list], np.ndarray]


class NotFittedError(InputError):
    """A trainer's result was asked for before :meth:`Trainer.fit` ran."""


class Trainer(abc.ABC):
    """Base class of the trainers: constructor hyper-parameters, ``fit -> self``, ``to_embeddings()``.

    Subclasses set :attr:`name` (the manifest's ``trainer``), check and store every constructor argument
    under its own name, and set ``self._fitted = True`` at the end of :meth:`fit`.
    """

    #: the manifest's ``trainer`` field
    name: str = ""

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-serialisable (scikit-learn's ``get_params(deep=False)``).

        ``type(self)(**self.get_params())`` builds an equal, unfitted trainer.
        """
        return {n: _jsonable(getattr(self, n)) for n in self._param_names()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({inner})"

    # ------------------------------------------------------------------ the contract
    @abc.abstractmethod
    def fit(self, train: Any, validation: Any = None) -> Trainer:
        """Learn from ``train`` (``validation``: early stopping data in the same id space); returns ``self``."""

    @abc.abstractmethod
    def to_embeddings(self) -> Embeddings:
        """The :class:`~annrec.embeddings.Embeddings` artifact of the fitted model (``manifest["params"]`` is
        :meth:`get_params`). Raises :class:`NotFittedError` before :meth:`fit`."""

    @abc.abstractmethod
    def recommend_fn(self) -> RecommendFn:
        """The scorer of :func:`annrec.metrics.evaluate_topn` over the training data's user and item rows:
        ``fn(user_rows (b,), k, seen) -> (b, k)`` int64 item rows, best first, ``seen`` rows excluded.
        Raises :class:`NotFittedError` before :meth:`fit`."""

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return bool(getattr(self, "_fitted", False))

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(train) first")

    def _kept_train(self, train: Any = None) -> Any:
        """The training data ``fit`` kept; a ``train`` passed the old way must be that data (equal fingerprints)."""
        kept = self._train_data
        if train is None:
            return kept
        warnings.warn(f"{type(self).__name__}.to_embeddings(train) is deprecated: fit keeps the data it saw; "
                      f"call to_embeddings() without it", DeprecationWarning, stacklevel=3)
        if train is not kept and train.fingerprint() != kept.fingerprint():
            raise InputError("to_embeddings got other interactions than fit saw (fingerprints differ): call "
                             "to_embeddings() without data (MF: pass the full data set as seen=...)")
        return kept


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------------------------------- renamed parameters
def renamed_params(owner: str, old: Mapping[str, Any], renames: Mapping[str, Any], values: dict[str, Any],
                   stacklevel: int = 3) -> dict[str, Any]:
    """Map keyword arguments of earlier releases onto their new names, with a :class:`DeprecationWarning`.

    Args:
        owner: the class name, for messages.
        old: the ``**kwargs`` the constructor received.
        renames: ``{old name: new name}`` or ``{old name: (new name, convert)}`` where the old value needs
            translating (``use_gpu=True`` -> ``device="cuda"``).
        values: the new-name arguments as received; updated copy returned.

    Raises:
        TypeError: a keyword that is neither a parameter nor a known old spelling (as Python would).
    """
    out = dict(values)
    for key, val in old.items():
        new = renames.get(key)
        if new is None:
            raise TypeError(f"{owner}() got an unexpected keyword argument {key!r}")
        convert = None
        if isinstance(new, tuple):
            new, convert = new
        warnings.warn(f"{owner}({key}=...) is deprecated and will be removed in the next release: use "
                      f"{new}=...", DeprecationWarning, stacklevel=stacklevel)
        out[new] = convert(val) if convert is not None else val
    return out


# ---------------------------------------------------------------------------------------- threads and devices
def default_num_threads() -> int:
    """The machine's cores (``os.cpu_count()``; 1 when unknown): what ``num_threads=None`` means."""
    return int(os.cpu_count() or 1)


def resolve_num_threads(num_threads: int | None) -> int:
    """``num_threads`` itself, or :func:`default_num_threads` for ``None``."""
    return default_num_threads() if num_threads is None else int(num_threads)


def check_num_threads(num_threads: Any) -> int | None:
    """``None`` or an int >= 1. Raises :class:`InputError` otherwise."""
    return None if num_threads is None else int_param("num_threads", num_threads)


def resolve_device(device: str | None):
    """The torch device of a ``device`` parameter: ``None`` is CUDA when torch sees one, else the CPU.

    Raises:
        InputError: an unknown device string, CUDA asked for where torch sees none, or a device type other
            than cpu / cuda.
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for but torch sees no CUDA device: use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r} is not supported: use cpu or cuda")
    return dev


def check_device_name(device: Any) -> str | None:
    """``None`` or a string naming a device (checked against torch only at fit time)."""
    if device is not None and not isinstance(device, str):
        raise InputError(f"device must be None (auto), 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    return device


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[int]:
    """Set ``torch.set_num_threads`` inside the block (``None``: the machine's cores) and restore it after."""
    import torch

    old = torch.get_num_threads()
    n = resolve_num_threads(num_threads)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """Limit BLAS (OpenBLAS/MKL) to 1 thread inside the block (``implicit``'s recommendation for ALS)."""
    import threadpoolctl

    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


# ---------------------------------------------------------------------------------------- input checks
def check_interactions(data: Any, what: str = "train", *, empty_error: type[Exception] = InputError,
                       needs: str = "at least one interaction") -> Interactions:
    """``data`` if it is a non-empty :class:`~annrec.data.Interactions`.

    Raises:
        InputError: not an Interactions. ``empty_error`` (InputError or DataError): no events.
    """
    from annrec.data import Interactions

    if not isinstance(data, Interactions):
        raise InputError(f"{what} must be an annrec.data.Interactions (e.g. from load_movielens or "
                         f"load_interactions); got {type(data).__name__}")
    if data.n_events == 0:
        raise empty_error(f"{what} has no events ({data!r}): the trainer needs {needs}")
    return data


def int_param(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools refused). Raises :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def float_param(name: str, value: Any, minimum: float = 0.0, *, positive: bool = False,
                allow_none: bool = False) -> float | None:
    """``value`` as a finite float >= ``minimum`` (> 0 with ``positive``). Raises :class:`InputError`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number; got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(v) or v < minimum or (positive and v == 0):
        bound = "> 0" if positive else f">= {minimum:g}"
        raise InputError(f"{name} must be a finite number {bound}; got {value!r}")
    return v


def item_metadata(items: Any, ids: np.ndarray) -> dict | None:
    """``{external id: {"title": str, "genres": [str]}}`` for ``ids`` from an item table (None if absent).

    Args:
        items: a ``pandas.DataFrame`` indexed by external item id (``Interactions.items``), or None.
        ids: ``(n,)`` external ids; ids missing from the table get no entry.
    """
    if items is None or len(items) == 0:
        return None
    if items.attrs.get("annrec_all_columns"):  # a user's own table (--items): every column
        return _all_columns(items, ids)
    cols = [c for c in ("title", "genres") if c in items.columns]
    if not cols:
        return None
    sub = items.reindex(np.asarray(ids).tolist())[cols]
    out: dict = {}
    for key, row in zip(np.asarray(ids).tolist(), sub.itertuples(index=False)):
        meta: dict[str, Any] = {}
        for c, v in zip(cols, row):
            if isinstance(v, (list, tuple, np.ndarray)):
                meta[c] = [str(x) for x in v]
            elif c == "genres":
                meta[c] = []
            elif isinstance(v, str):
                meta[c] = v
        if meta:
            out[key] = meta
    return out or None


def check_idx(idx, n: int, what: str) -> np.ndarray:
    """Integer indices ``(any shape)`` as int64, each in ``0..n-1``. Raises :class:`InputError`."""
    a = np.asarray(idx)
    if a.dtype.kind not in "iu":
        raise InputError(f"{what}_idx must be integer indices (contiguous, from the Interactions); got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise InputError(f"{what}_idx out of range 0..{n - 1}: pass indices of the Interactions the model was "
                         f"fitted on (map external ids with Interactions.{what}_index)")
    return a


def epoch_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar on stderr with one tick per epoch, or ``None`` when not ``enabled``."""
    if not enabled:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, leave=False, dynamic_ncols=True)


def _all_columns(items: Any, ids: np.ndarray) -> dict | None:
    """Every non-missing column of a user's item table per id (numpy scalars as Python values)."""
    import pandas as pd

    keep = [i for i in np.asarray(ids).tolist() if i in items.index]
    out: dict = {}
    for key, rec in zip(keep, items.loc[keep].to_dict("records")):
        meta = {}
        for c, v in rec.items():
            if isinstance(v, (list, tuple, np.ndarray)):
                meta[str(c)] = [x.item() if isinstance(x, np.generic) else x for x in v]
            elif v is not None and not (isinstance(v, float) and np.isnan(v)) and v is not pd.NaT:
                meta[str(c)] = v.item() if isinstance(v, np.generic) else v
        out[key] = meta
    return out or None
