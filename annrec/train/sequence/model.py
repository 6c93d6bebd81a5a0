"""The network of the sequence recommender (item + recency embeddings -> GRU/LSTM -> [attention] -> logits)
and its loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

from annrec.errors import InputError
from annrec.train.sequence.config import PAD

if TYPE_CHECKING:  # pragma: no cover
    from annrec.train.sequence.config import SequenceConfig

__all__ = ["masked_loss"]


# ---------------------------------------------------------------------------------------------- model
def _torch():
    import torch

    return torch


def _build_net(n_items: int, n_bucket_ids: int, cfg: SequenceConfig):
    """The network (a ``torch.nn.Module``); built lazily so importing this module does not import torch."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class SequenceNet(nn.Module):
        """Item + recency embeddings -> GRU/LSTM -> [causal self-attention] -> output layer over the catalogue.

        ``forward(x, r)`` takes front-padded ``x`` (item_idx + 1, 0 = pad) and ``r`` (bucket + 1) int64
        ``(B, L)`` and returns the hidden states ``(B, L, factors)`` in the same layout (zeros at padding).
        Internally the windows are left-aligned and packed, so padded positions never influence real ones.
        """

        def __init__(self) -> None:
            super().__init__()
            self.cfg = cfg
            self.item_emb = nn.Embedding(n_items + 1, cfg.item_dim, padding_idx=PAD)
            in_dim = cfg.item_dim
            if cfg.recency:
                self.rec_emb = nn.Embedding(n_bucket_ids, cfg.recency_dim, padding_idx=PAD)
                in_dim += cfg.recency_dim
            rnn = nn.GRU if cfg.cell == "gru" else nn.LSTM
            self.rnn = rnn(in_dim, cfg.factors, num_layers=cfg.layers, batch_first=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)
            self.drop = nn.Dropout(cfg.dropout)
            if cfg.attention:
                self.attn = nn.MultiheadAttention(cfg.factors, cfg.heads, dropout=cfg.dropout, batch_first=True)
                self.norm = nn.LayerNorm(cfg.factors)
            self.out = nn.Linear(cfg.factors, n_items)  # item rows + bias = the item vectors

        def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            B, L = x.shape
            lengths = (x != PAD).sum(1)
            if bool((lengths == 0).any()):
                raise InputError("a window has no events: every sequence needs at least one item")
            shift = (L - lengths)[:, None]
            ar = torch.arange(L, device=x.device)[None, :]
            left = (ar + shift) % L                       # left-aligned gather index
            xl = torch.gather(x, 1, left)
            e = self.item_emb(xl)
            if self.cfg.recency:
                e = torch.cat([e, self.rec_emb(torch.gather(r, 1, left))], dim=-1)
            e = self.drop(e)
            packed = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=L)   # (B, L, U), zeros past length
            if self.cfg.attention:
                causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=1)
                key_pad = ar >= lengths[:, None]
                a, _ = self.attn(h, h, h, attn_mask=causal, key_padding_mask=key_pad, need_weights=False)
                h = self.norm(h + self.drop(a))
                h = h.masked_fill(key_pad[:, :, None], 0.0)
            back = (ar - shift) % L                       # undo the alignment: front-padded again
            return torch.gather(h, 1, back[:, :, None].expand(B, L, h.shape[-1]))

        def final_state(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            """The query representation of each window: the hidden state at its last position ``(B, units)``."""
            return self.forward(x, r)[:, -1, :]

    return SequenceNet()


def masked_loss(net, x, r, y, loss: str = "full", neg_items=None, neg_logq=None, item_logq=None, seen=None):
    """Cross-entropy averaged over each position's targets (``y > 0``), then over the positions that have
    targets (every cut point weighs the same, however many future items it predicts); padding never
    contributes.

    Args:
        net: the network. x, r: ``(B, L)`` inputs; y: ``(B, L, H)`` targets (item_idx + 1; 0 = none).
        loss: ``"full"`` softmax over all items, or ``"sampled"``: positive vs. the shared negatives
            ``neg_items`` (0-based, ``(M,)``), logits corrected by ``-log Q`` (``neg_logq`` ``(M,)``,
            ``item_logq`` ``(n_items,)``; Bengio & Senécal 2008, Yi et al. 2019).
        seen: optional ``(rows, items)`` int64 tensors: item ``items[j]`` (0-based) is left out of the softmax
            of the ``rows[j]``-th position that has a target (row-major order) — the items the user already
            took, which the top-N protocol never recommends (full softmax only; see :func:`seen_pairs`).

    Returns:
        a scalar tensor (0 when there is no target).
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
    yc = yp.clamp(min=0)
    if loss == "full":
        logits = net.out(hp)
        if seen is not None and len(seen[0]):
            logits = logits.index_put(seen, torch.tensor(float("-inf"), device=logits.device))
        logp = torch.log_softmax(logits, dim=-1)
        ll = torch.gather(logp, 1, yc)
    else:
        w, b = net.out.weight, net.out.bias
        pos_logit = (hp[:, None, :] * w[yc]).sum(-1) + b[yc] - item_logq[yc]        # (P, H)
        neg_logit = hp @ w[neg_items].T + b[neg_items] - neg_logq                    # (P, M)
        lse = torch.logsumexp(torch.cat([pos_logit[:, :, None],
                                         neg_logit[:, None, :].expand(-1, yc.shape[1], -1)], dim=-1), dim=-1)
        ll = pos_logit - lse
    ll = torch.where(mp, ll, torch.zeros((), dtype=ll.dtype, device=ll.device))   # no -inf * 0 = nan
    return -(ll.sum(1) / mp.sum(1)).mean()


