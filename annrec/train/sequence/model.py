"""The network of the sequence recommender (item + recency embeddings -> encoder -> logits) and its loss.

Encoders (``SequenceConfig.encoder``, one interface: ``forward(x, r) -> (B, L, factors)`` hidden states, causal,
zeros at padding; the query is the state at the last position):

* ``"gru"`` / ``"lstm"``: a recurrent net (Cho et al. 2014 / Hochreiter & Schmidhuber 1997; GRU4Rec, Hidasi et
  al. 2016) over packed sequences, optionally followed by one causal self-attention block (``attention``);
* ``"transformer"``: SASRec (Kang & McAuley 2018): the event embedding projected to ``factors``, plus a learned
  positional embedding (a table of ``max_len`` rows; position 0 = the oldest event of the window), ``n_layers``
  pre-layer-norm blocks (``torch.nn.TransformerEncoderLayer(norm_first=True)``, ``n_heads`` heads, a point-wise
  feed-forward layer of ``factors`` units as in SASRec) under a causal mask, and a final layer norm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from annrec.errors import InputError
from annrec.train.sequence.config import ENCODERS, PAD

if TYPE_CHECKING:  # pragma: no cover
    from annrec.train.sequence.config import SequenceConfig

__all__ = ["masked_loss", "state_encoder", "load_state"]


# ---------------------------------------------------------------------------------------------- model
def _torch():
    import torch

    return torch


def _init_layers(net, n_items: int, n_bucket_ids: int, cfg: SequenceConfig) -> None:
    """Create the layers of ``net``: embeddings, the encoder's layers, the output layer."""
    from torch import nn

    net.cfg = cfg
    net.item_emb = nn.Embedding(n_items + 1, cfg.item_dim, padding_idx=PAD)
    in_dim = cfg.item_dim
    if cfg.recency:
        net.rec_emb = nn.Embedding(n_bucket_ids, cfg.recency_dim, padding_idx=PAD)
        in_dim += cfg.recency_dim
    net.drop = nn.Dropout(cfg.dropout)
    if cfg.encoder == "transformer":
        net.proj = nn.Linear(in_dim, cfg.factors)
        net.pos_emb = nn.Embedding(cfg.max_len, cfg.factors)
        layer = nn.TransformerEncoderLayer(cfg.factors, cfg.n_heads, dim_feedforward=cfg.factors,
                                           dropout=cfg.dropout, batch_first=True, norm_first=True)
        net.blocks = nn.TransformerEncoder(layer, cfg.n_layers, norm=nn.LayerNorm(cfg.factors),
                                           enable_nested_tensor=False)
    else:
        rnn = nn.GRU if cfg.encoder == "gru" else nn.LSTM
        net.rnn = rnn(in_dim, cfg.factors, num_layers=cfg.n_layers, batch_first=True,
                      dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        if cfg.attention:
            net.attn = nn.MultiheadAttention(cfg.factors, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
            net.norm = nn.LayerNorm(cfg.factors)
    net.out = nn.Linear(cfg.factors, n_items)  # item rows + bias = the item vectors


def _forward(net, x, r):
    """:meth:`SequenceNet.forward`: front-padded ``x``, ``r`` int64 ``(B, L)`` -> states float32 ``(B, L, factors)``."""
    torch = _torch()
    B, L = x.shape
    lengths = (x != PAD).sum(1)
    if bool((lengths == 0).any()):
        raise InputError("a window has no events: every sequence needs at least one item")
    shift = (L - lengths)[:, None]
    ar = torch.arange(L, device=x.device)[None, :]
    left = (ar + shift) % L                       # left-aligned gather index
    e = net.item_emb(torch.gather(x, 1, left))
    if net.cfg.recency:
        e = torch.cat([e, net.rec_emb(torch.gather(r, 1, left))], dim=-1)
    pad = ar >= lengths[:, None]                  # (B, L) padding, left-aligned
    if net.cfg.encoder == "transformer":
        h = _transformer_states(net, e, lengths, pad)
    else:
        h = _rnn_states(net, e, lengths, pad)
    back = (ar - shift) % L                       # undo the alignment: front-padded again
    return torch.gather(h, 1, back[:, :, None].expand(B, L, h.shape[-1]))


def _rnn_states(net, e, lengths, pad):
    """GRU/LSTM over the packed, left-aligned event vectors ``e`` ``(B, L, in_dim)`` [+ causal attention]."""
    torch = _torch()
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    L = e.shape[1]
    packed = pack_padded_sequence(net.drop(e), lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = net.rnn(packed)
    h, _ = pad_packed_sequence(out, batch_first=True, total_length=L)   # (B, L, U), zeros past length
    if net.cfg.attention:
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=e.device), diagonal=1)
        a, _ = net.attn(h, h, h, attn_mask=causal, key_padding_mask=pad, need_weights=False)
        h = net.norm(h + net.drop(a))
        h = h.masked_fill(pad[:, :, None], 0.0)
    return h


def _transformer_states(net, e, lengths, pad):
    """Causal pre-LN transformer over the left-aligned event vectors ``e`` ``(B, L, in_dim)``.

    Raises:
        InputError: a sequence longer than the positional table (the ``max_len`` trained with).
    """
    torch = _torch()
    B, L, _ = e.shape
    table = net.pos_emb.num_embeddings
    longest = int(lengths.max())
    if longest > table:
        raise InputError(f"a sequence of {longest} events is longer than the transformer's positional "
                         f"table ({table} positions = the max_len it was trained with): pass at most "
                         f"{table} events (max_len <= {table})")
    n = min(L, table)                             # left-aligned: columns >= n are padding only
    pos = torch.arange(n, device=e.device)
    z = net.drop(net.proj(e[:, :n]) + net.pos_emb(pos)[None])
    # left-aligned + causal: a real position only ever sees earlier real events, so no key padding
    # mask is needed (and no row of the attention is fully masked)
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=e.device), diagonal=1)
    h = net.blocks(z, mask=causal, is_causal=True)
    h = h.masked_fill(pad[:, :n, None], 0.0)
    if n < L:
        h = torch.cat([h, h.new_zeros(B, L - n, h.shape[-1])], dim=1)
    return h


_NET_CLASS = None


def _net_class():
    """The ``SequenceNet`` class (created on first use, so importing this module does not import torch)."""
    global _NET_CLASS
    if _NET_CLASS is None:
        from torch import nn

        class SequenceNet(nn.Module):
            """Item + time-bucket embeddings -> GRU/LSTM [-> causal self-attention] or causal transformer ->
            output layer.

            ``forward(x, r)`` takes front-padded ``x`` (item_idx + 1, 0 = pad) and ``r`` (bucket + 1) int64
            ``(B, L)`` and returns the hidden states float32 ``(B, L, factors)`` in the same layout (zeros at
            padding); the state at position ``j`` depends on the events ``<= j`` only (causal). Internally the
            windows are left-aligned (and packed for the RNNs), so padded positions never influence real ones.

            Raises (from ``forward``): InputError — a window without events, or (transformer) more events than
            its positional table has rows.
            """

            def __init__(self, n_items: int, n_bucket_ids: int, cfg: SequenceConfig) -> None:
                super().__init__()
                _init_layers(self, n_items, n_bucket_ids, cfg)

            forward = _forward

            def final_state(self, x, r):
                """The query representation of each window: the state at its last position ``(B, factors)``."""
                return self.forward(x, r)[:, -1, :]

        _NET_CLASS = SequenceNet
    return _NET_CLASS


def _build_net(n_items: int, n_bucket_ids: int, cfg: SequenceConfig):
    """The network (a ``torch.nn.Module``) for ``n_items`` items and ``n_bucket_ids`` time-bucket ids.

    Raises:
        InputError: an unknown ``cfg.encoder`` (the valid names are listed).
    """
    if cfg.encoder not in ENCODERS:
        raise InputError(f"unknown encoder {cfg.encoder!r}: use one of {', '.join(repr(e) for e in ENCODERS)}")
    return _net_class()(n_items, n_bucket_ids, cfg)


def state_encoder(state: dict[str, Any]) -> str | None:
    """Which encoder a state dict belongs to: ``"gru"``, ``"lstm"``, ``"transformer"``, or ``None`` if unknown
    (read from its parameter names and the RNN's gate count: 3 for a GRU, 4 for an LSTM)."""
    if any(k.startswith(("pos_emb.", "blocks.")) for k in state):
        return "transformer"
    w = state.get("rnn.weight_hh_l0")
    if w is not None and w.ndim == 2 and w.shape[1] > 0:
        gates = w.shape[0] // w.shape[1]
        return {3: "gru", 4: "lstm"}.get(gates)
    return None


def load_state(net, state: dict[str, Any]) -> None:
    """Load a checkpoint's ``state`` into ``net`` after checking that it is one of the same encoder.

    Raises:
        InputError: the checkpoint is of another encoder than ``net`` (both are named), or a transformer
            checkpoint's positional table is smaller than ``net``'s ``max_len``.
        RuntimeError: other shape mismatches (from ``load_state_dict``).
    """
    want, got = net.cfg.encoder, state_encoder(state)
    if got is not None and got != want:
        raise InputError(f"the checkpoint holds a {got!r} encoder, not a {want!r} one: load it with "
                         f"encoder={got!r} (valid encoders: {', '.join(repr(e) for e in ENCODERS)})")
    if want == "transformer" and "pos_emb.weight" in state:
        table = int(state["pos_emb.weight"].shape[0])
        if net.cfg.max_len > table:
            raise InputError(f"max_len {net.cfg.max_len} is larger than the checkpoint's positional table "
                             f"({table} positions = the max_len it was trained with): use max_len <= {table}")
    net.load_state_dict(state)


def masked_loss(net, x, r, y, loss: str = "full", neg_items=None, neg_logq=None, item_logq=None, seen=None):
    """Cross-entropy averaged over each position's targets (``y > 0``), then over the positions that have
    targets (every cut point weighs the same, however many future items it predicts); padding never
    contributes. All-positions training passes chunks with targets at every position, windowed training
    windows with targets on their last positions: the same function.

    Args:
        net: the network. x, r: int64 ``(B, L)`` inputs; y: int64 ``(B, L, H)`` targets (item_idx + 1; 0 = none).
        loss: ``"full"`` softmax over all items; ``"sampled"``: each target vs. the shared negatives
            ``neg_items`` (0-based, ``(M,)``), logits corrected by ``-log Q`` (``neg_logq`` ``(M,)``,
            ``item_logq`` ``(n_items,)``; Bengio & Senécal 2008, Yi et al. 2019); ``"in_batch"``: the softmax
            runs over the distinct target items of the batch (the positive is one of them), each logit corrected
            by ``-log Q_j``, ``Q_j = 1 - (1 - f_j)^T`` the probability that item ``j`` is among the batch's ``T``
            targets drawn from the target distribution — ``item_logq`` is then ``log f`` ``(n_items,)``
            (Yi et al. 2019).
        seen: optional ``(rows, items)`` int64 tensors: item ``items[j]`` (0-based) is left out of the softmax
            of the ``rows[j]``-th position that has a target (row-major order) — the items the user already
            took, which the top-N protocol never recommends (full softmax only; see :func:`seen_pairs`).

    Returns:
        a scalar float32 tensor (0 when there is no target).
    """
    torch = _torch()
    h = net(x, r)                                  # (B, L, U)
    tmask = (y > PAD) & (x != PAD)[:, :, None]     # (B, L, H): no target at a padded input position
    pos_mask = tmask.any(-1)                       # positions with at least one target
    if not bool(pos_mask.any()):
        return h.sum() * 0.0
    hp = net.drop(h[pos_mask])                     # (P, U)
    yp = y[pos_mask] - 1                           # (P, H), -1 = none
    mp = tmask[pos_mask]
    if loss == "full":
        logits = net.out(hp)
        if seen is not None and len(seen[0]):
            logits = logits.index_put(seen, torch.tensor(float("-inf"), device=logits.device))
        logp = torch.log_softmax(logits, dim=-1)
        ll = torch.gather(logp, 1, yp.clamp(min=0))
        ll = torch.where(mp, ll, torch.zeros((), dtype=ll.dtype, device=ll.device))   # no -inf * 0 = nan
        return -(ll.sum(1) / mp.sum(1)).mean()
    # sampled / in-batch: one entry per real target (T,), never a (P, H, M) or (P, H, U) tensor
    rows, cols = torch.nonzero(mp, as_tuple=True)
    tgt = yp[rows, cols]
    w, b = net.out.weight, net.out.bias
    if loss == "in_batch":
        cand, inv = torch.unique(tgt, return_inverse=True)
        logq = torch.log(-torch.expm1(len(tgt) * torch.log1p(-item_logq[cand].exp().clamp(max=1 - 1e-7))))
        logits = hp @ w[cand].T + b[cand] - logq                                       # (P, M)
        ll = logits[rows, inv] - torch.logsumexp(logits, dim=-1)[rows]
    else:
        pos_logit = (hp[rows] * w[tgt]).sum(-1) + b[tgt] - item_logq[tgt]              # (T,)
        neg_lse = torch.logsumexp(hp @ w[neg_items].T + b[neg_items] - neg_logq, dim=-1)   # (P,)
        ll = pos_logit - torch.logaddexp(pos_logit, neg_lse[rows])
    per_pos = torch.zeros(len(hp), dtype=ll.dtype, device=ll.device).index_add(0, rows, ll)
    return -(per_pos / mp.sum(1)).mean()
