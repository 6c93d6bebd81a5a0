"""The sequence artifact's encoder: ``extra/sequence/*`` files, and the query encoder rebuilt from them.

:func:`query_encoder_from_embeddings` is the hook the service and :class:`annrec.recommend.Recommender` use:
``encoder.encode(item_ids, timestamps, now) -> (vector (dim,), warnings)`` and
``encoder.rows(item_ids) -> (rows, positions, unknown)``.
"""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from annrec.errors import ArtifactError, InputError, UnknownIdError
from annrec.train.sequence.config import (DAY_SECONDS, ENCODERS, EXTRA_PREFIX, FUTURE_TOLERANCE_S, SequenceConfig,
                                          config_from_stored)
from annrec.train.sequence.data import gap_buckets, recency_buckets
from annrec.train.sequence.model import _build_net, _torch, load_state, state_encoder

if TYPE_CHECKING:  # pragma: no cover
    from annrec.embeddings import Embeddings

__all__ = ["SequenceQueryEncoder", "query_encoder_from_embeddings", "encoder_files", "exact_scores"]


# ---------------------------------------------------------------------------------------------- artifact
def encoder_files(net, cfg: SequenceConfig, item_ids: np.ndarray, edges: np.ndarray | None) -> dict[str, bytes]:
    """The ``extra/sequence/*`` files of the artifact: ``state_dict.pt``, ``config.json`` (the encoder and every
    field that shapes the net: :meth:`SequenceConfig.model_dict`, plus ``n_items`` and ``format``),
    ``vocab.json``, ``bucket_edges.json``."""
    torch = _torch()
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    config = dict(cfg.model_dict(), n_items=int(len(item_ids)), format=2)
    return {
        EXTRA_PREFIX + "state_dict.pt": buf.getvalue(),
        EXTRA_PREFIX + "config.json": json.dumps(config, indent=2).encode(),
        EXTRA_PREFIX + "vocab.json": json.dumps(np.asarray(item_ids).tolist()).encode(),
        EXTRA_PREFIX + "bucket_edges.json": json.dumps(None if edges is None else np.asarray(edges).tolist()).encode(),
    }


class SequenceQueryEncoder:
    """Turns a time-ordered item sequence into a query vector for maximum inner product search.

    Built by :func:`query_encoder_from_embeddings`. ``encode(item_ids, timestamps=None, now=None)`` returns
    ``(vector float32 (dim,), warnings list[str])`` where ``dim = factors + 1`` (the final hidden state and a
    constant 1, matching the item vectors ``[w_i, b_i]``).

    Serving rules (documented in docs/sequence.md):

    * unknown item ids are **ignored** (their timestamps too) with one warning naming them; when no known item
      is left an :class:`~annrec.errors.UnknownIdError` is raised;
    * only the last ``max_len`` known events are read (the model was trained on sequences of that length);
    * ``timestamps`` (Unix seconds, one per item, non-decreasing) give the time buckets: for
      ``time_feature="recency"`` measured from ``now`` (default: the last timestamp, as in training), for
      ``"gap"`` the time since the previous known item (``now`` plays no part). Without timestamps every event
      is taken as recent (gap: right after the previous one) and a warning says so (when the model uses time).

    Raises (from ``encode``):
        InputError: empty sequence; timestamps of another length, not integers, decreasing, negative, or
            later than ``now`` (or than the current time + 5 minutes when ``now`` is not given).
        UnknownIdError: none of the items is known.
    """

    def __init__(self, net, config: dict[str, Any], ids: np.ndarray, edges: np.ndarray | None,
                 device: str = "cpu") -> None:
        self.net = net.eval()
        self.config = config
        self.ids = np.asarray(ids)
        self.edges = None if edges is None else np.asarray(edges, dtype=np.float64)
        self.max_len = int(config["max_len"])
        self.dim = int(config.get("factors", config.get("units"))) + 1
        self.device = device
        self._row = {v: i for i, v in enumerate(self.ids.tolist())}

    def _coerce(self, item_id):
        from annrec.embeddings import _coerce_id

        return _coerce_id(item_id, self.ids)

    def rows(self, item_ids) -> tuple[np.ndarray, list[int], list]:
        """Catalogue rows of the known ids, their positions in the input, and the unknown ids."""
        rows, keep, unknown = [], [], []
        for pos, i in enumerate(item_ids):
            try:
                r = self._row.get(self._coerce(i))
            except TypeError:
                r = None
            if r is None:
                unknown.append(i)
            else:
                rows.append(r)
                keep.append(pos)
        return np.asarray(rows, dtype=np.int64), keep, unknown

    def encode(self, item_ids, timestamps=None, now: int | None = None) -> tuple[np.ndarray, list[str]]:
        """Query vector ``[h, 1]`` float32 ``(dim,)`` of a time-ordered item sequence, and warnings."""
        torch = _torch()
        if isinstance(item_ids, (str, bytes, int, np.integer)):
            item_ids = [item_ids]
        item_ids = list(item_ids) if item_ids is not None else []
        if not item_ids:
            raise InputError("the item sequence is empty: give at least one item id (oldest first)")
        warnings: list[str] = []
        ts = _check_timestamps(timestamps, len(item_ids), now)
        rows, keep, unknown = self.rows(item_ids)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (" …" if len(unknown) > 10 else "")
            if not len(rows):
                raise UnknownIdError(f"none of the {len(item_ids)} item ids is known to this model ({shown}): "
                                     f"pass ids of items it was trained on")
            warnings.append(f"ignored {len(unknown)} unknown item id(s): {shown}")
        if len(rows) > self.max_len:
            warnings.append(f"only the last {self.max_len} of {len(rows)} known items are used (max_len)")
        rows = rows[-self.max_len:]
        x = np.zeros((1, self.max_len), dtype=np.int64)
        r = np.zeros((1, self.max_len), dtype=np.int64)
        x[0, self.max_len - len(rows):] = rows + 1
        if self.edges is not None:
            r[0, self.max_len - len(rows):] = self._time_buckets(ts, keep, len(rows), now, warnings) + 1
        else:
            r[0, self.max_len - len(rows):] = 1
        with torch.no_grad():
            h = self.net.final_state(torch.as_tensor(x, device=self.device), torch.as_tensor(r, device=self.device))
        vec = np.empty(self.dim, dtype=np.float32)
        vec[:-1] = h[0].float().cpu().numpy()
        vec[-1] = 1.0
        return vec, warnings


    def _time_buckets(self, ts: np.ndarray | None, keep: list[int], n: int, now: int | None,
                      warnings: list[str]) -> np.ndarray:
        """Time buckets (int64 ``(n,)``) of the last ``n`` known events, as in training: ``"recency"`` measured
        from ``now`` (default: the last timestamp), ``"gap"`` the days since the previous known event (the first
        known event: no previous one). Without timestamps every event is taken as recent / right after the
        previous one, and a warning says so."""
        gap = self.config.get("time_feature", "recency") == "gap"
        if ts is None:
            if gap:
                warnings.append("no timestamps: every event is taken as right after the previous one (gap 0)")
                b = np.zeros(len(keep), dtype=np.int64)
                b[0] = len(self.edges)
                return b[-n:]
            warnings.append("no timestamps: every event is taken as recent (recency 0 days)")
            return np.zeros(n, dtype=np.int64)
        t = ts[keep]
        if gap:
            return gap_buckets(t, self.edges)[-n:]
        ref = int(now) if now is not None else int(ts[-1])
        return recency_buckets((ref - t[-n:]) / DAY_SECONDS, self.edges)


def _check_timestamps(timestamps, n: int, now: int | None) -> np.ndarray | None:
    if now is not None and (isinstance(now, bool) or not isinstance(now, (int, np.integer)) or now < 0):
        raise InputError(f"now must be a non-negative integer (Unix seconds); got {now!r}")
    if timestamps is None:
        return None
    ts = list(timestamps)
    if len(ts) != n:
        raise InputError(f"{len(ts)} timestamps for {n} items: give one Unix timestamp (seconds) per item, "
                         f"or none")
    for t in ts:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise InputError(f"timestamps must be integers (Unix seconds); got {t!r}")
    a = np.asarray(ts, dtype=np.int64)
    if (a < 0).any():
        raise InputError(f"timestamps must be >= 0 (Unix seconds); got {int(a.min())}")
    bad = np.flatnonzero(np.diff(a) < 0)
    if len(bad):
        i = int(bad[0])
        raise InputError(f"timestamps are out of order: item {i + 1} at {a[i + 1]} comes before item {i} at {a[i]}; "
                         f"give the sequence oldest first")
    limit = int(now) if now is not None else int(time.time()) + FUTURE_TOLERANCE_S
    if a[-1] > limit:
        what = f"now={now}" if now is not None else "the current time"
        raise InputError(f"timestamp {int(a[-1])} is in the future (after {what}): pass Unix seconds of past "
                         f"events")
    return a


def query_encoder_from_embeddings(emb: Embeddings, device: str | None = None, max_len: int | None = None,
                                  encoder: str | None = None) -> SequenceQueryEncoder:
    """Rebuild the sequence encoder stored in a ``trainer == "sequence"`` :class:`Embeddings` artifact.

    The network is rebuilt from ``extra/sequence/config.json`` (its ``encoder`` and the fields that shape it;
    artifacts of earlier releases spell the encoder ``cell``) and loaded from ``state_dict.pt``.

    Args:
        device: torch device (default: CUDA when present).
        max_len: read the last ``max_len`` events of a sequence instead of the trained window length (RNNs:
            any length >= 1; the transformer: at most its positional table, the trained ``max_len``).
        encoder: the encoder the caller expects (``"gru"``, ``"lstm"``, ``"transformer"``); default: whatever
            the artifact holds.

    Raises:
        ArtifactError: not a sequence artifact, missing/corrupt ``extra/sequence/*`` files, a checkpoint whose
            weights are of another encoder than its config says, or whose vocabulary or output layer does not
            match the artifact's item ids and vectors.
        InputError: ``encoder`` is not a valid name or not the artifact's encoder; ``max_len`` < 1 or larger
            than the transformer's positional table.
    """
    if encoder is not None and encoder not in ENCODERS:
        raise InputError(f"unknown encoder {encoder!r}: use one of {', '.join(repr(e) for e in ENCODERS)}")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer))
                                or max_len < 1):
        raise InputError(f"max_len must be an integer >= 1 (events read per sequence); got {max_len!r}")
    torch = _torch()
    config, edges, state = _read_encoder_files(emb)
    cfg = _checked_config(config, state, max_len, encoder)
    try:
        n_bucket_ids = (len(edges) + 2) if edges is not None else 2
        net = _build_net(int(config["n_items"]), n_bucket_ids, cfg)
        load_state(net, state)
    except (KeyError, TypeError, RuntimeError, InputError) as e:
        raise ArtifactError(f"the sequence checkpoint does not fit its config ({e}): re-run "
                            f"`annrec train sequence`") from None
    if max_len is not None:
        config = dict(config, max_len=int(max_len))
    _check_output_layer(net, emb)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SequenceQueryEncoder(net.to(dev), dict(config), emb.ids, None if edges is None else np.asarray(edges),
                                device=dev)


def _read_encoder_files(emb: Embeddings) -> tuple[dict[str, Any], list | None, dict[str, Any]]:
    """``(config, bucket edges, state dict)`` of the artifact's ``extra/sequence/*`` files, after checking that
    the vocabulary is the artifact's item ids. Raises :class:`ArtifactError` (missing, corrupt, mismatched)."""
    torch = _torch()
    trainer = emb.manifest.get("trainer")
    if trainer not in (None, "sequence"):
        raise ArtifactError(f"this artifact was written by the {trainer!r} trainer, not 'sequence': train it with "
                            f"`annrec train sequence`")
    need = [EXTRA_PREFIX + n for n in ("state_dict.pt", "config.json", "vocab.json", "bucket_edges.json")]
    missing = [n for n in need if n not in emb.extra]
    if missing:
        raise ArtifactError(f"the artifact lacks the sequence encoder files "
                            f"{', '.join('extra/' + m for m in missing)}: re-run `annrec train sequence`")
    try:
        config = json.loads(emb.extra[EXTRA_PREFIX + "config.json"])
        vocab = json.loads(emb.extra[EXTRA_PREFIX + "vocab.json"])
        edges = json.loads(emb.extra[EXTRA_PREFIX + "bucket_edges.json"])
        state = torch.load(io.BytesIO(emb.extra[EXTRA_PREFIX + "state_dict.pt"]), map_location="cpu",
                           weights_only=True)
    except Exception as e:  # json / torch unpickling errors
        raise ArtifactError(f"the sequence encoder files are corrupt ({type(e).__name__}: {e}): re-run "
                            f"`annrec train sequence`") from None
    if len(vocab) != len(emb) or np.asarray(vocab).tolist() != emb.ids.tolist():
        raise ArtifactError(f"the checkpoint's item vocabulary ({len(vocab)} items) does not match the artifact's "
                            f"{len(emb)} item ids / vectors: the files come from different trainings; re-run "
                            f"`annrec train sequence`")
    return config, edges, state


def _checked_config(config: dict[str, Any], state: dict[str, Any], max_len: int | None,
                    encoder: str | None) -> SequenceConfig:
    """The stored :class:`SequenceConfig`, checked against the checkpoint and the caller's ``max_len`` /
    ``encoder``. Raises :class:`ArtifactError` (invalid or inconsistent files) or :class:`InputError` (the
    caller's ``encoder`` or ``max_len`` does not fit the artifact)."""
    try:
        cfg = config_from_stored(config)
        cfg.validate()
    except (TypeError, InputError) as e:
        raise ArtifactError(f"the sequence encoder config is invalid ({e}): re-run `annrec train sequence`") from None
    held = state_encoder(state)
    if held is not None and held != cfg.encoder:
        raise ArtifactError(f"the checkpoint holds a {held!r} encoder but its config.json says {cfg.encoder!r}: the "
                            f"files come from different trainings; re-run `annrec train sequence`")
    if encoder is not None and encoder != cfg.encoder:
        raise InputError(f"this artifact holds a {cfg.encoder!r} encoder, not a {encoder!r} one: load it with "
                         f"encoder={cfg.encoder!r} or None (valid encoders: {', '.join(repr(e) for e in ENCODERS)})")
    if cfg.encoder == "transformer" and "pos_emb.weight" in state:
        table = int(state["pos_emb.weight"].shape[0])
        if cfg.max_len != table:
            raise ArtifactError(f"the transformer checkpoint's positional table has {table} positions but its "
                                f"config.json says max_len {cfg.max_len}: re-run `annrec train sequence`")
        if max_len is not None and max_len > table:
            raise InputError(f"max_len {max_len} is larger than the transformer's positional table ({table} "
                             f"positions = the max_len it was trained with): use max_len <= {table}")
    return cfg


def _check_output_layer(net, emb: Embeddings) -> None:
    """Raise :class:`ArtifactError` unless the artifact's item vectors are ``net``'s output rows ``[w_i, b_i]``."""
    w = net.out.weight.detach().numpy()
    b = net.out.bias.detach().numpy()
    if w.shape[0] != len(emb) or w.shape[1] + 1 != emb.dim:
        raise ArtifactError(f"the checkpoint's output layer ({w.shape[0]} items x {w.shape[1]}+1) does not match the "
                            f"item vectors ({len(emb)} x {emb.dim}): re-run `annrec train sequence`")
    if not np.allclose(np.hstack([w, b[:, None]]), emb.vectors, atol=1e-5):
        raise ArtifactError("the item vectors are not the checkpoint's output layer [w_i, b_i]: the vectors and the "
                            "weights come from different trainings; re-run `annrec train sequence`")


def exact_scores(emb: Embeddings, query: np.ndarray) -> np.ndarray:
    """Exact inner products ``(n_items,)`` of a query vector with all item vectors (for parity checks)."""
    return emb.vectors @ np.asarray(query, dtype=np.float32)


