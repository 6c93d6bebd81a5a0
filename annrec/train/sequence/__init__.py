"""The RNN sequence recommender: next-item recommendations from a user's time-ordered history.

Model (after the homepage recommender of a large sports retailer, which replaced ALS with an RNN over each
customer's item sequence plus a recency feature): every event of a sequence is the concatenation of an
item embedding and an embedding of its *recency bucket* (days before the sequence's last event, bucketed
into 100 bins); a GRU or LSTM (Cho et al. 2014 / Hochreiter & Schmidhuber 1997; GRU4Rec, Hidasi et al.
2016, for the session-based use) reads it; an optional causal self-attention layer (Vaswani et al. 2017,
as in SASRec, Kang & McAuley 2018) looks back over the RNN outputs; a linear output layer with a bias
scores the whole item catalogue.

Training data are the *sliding windows* of each user's training history (ml-latest-small has only 610 users,
so one window per user would be far too few): a window is the ``max_len`` events before a cut point, padded at
the front. By default the loss sits on the window's last position and its targets are the items that follow
the cut — at least ``horizon`` (1: the next item) and ``horizon_fraction`` (0.25) of the history so far, i.e.
"predict all the items the user takes next" (the dense all-action objective of PinnerFormer, Pancha et al.
2022), which matches the top-N protocol, whose truth is the *set* of the next 20% of a user's events (a quarter
of the 80% input). Items already in the user's history are left out of the softmax (``mask_seen``), as the
protocol leaves them out of the ranking. ``train_last=0`` puts the loss on every position instead (the classic
"target = the sequence shifted by one"). The loss (full softmax cross-entropy by default, sampled softmax with
log-Q correction as an option) is averaged over each position's targets, then over positions, and is masked
on padding and on targets past the end of the history. AdamW, early stopping on a per-user temporal
validation split carved from the training data, then (by default) a refit on all training data for the best
number of epochs.

Serving is maximum inner product search: the item vectors are the output layer's rows with their bias
appended, ``[w_i, b_i]``; the query vector of a sequence is its final hidden state with a constant 1
appended, ``[h, 1]``, so ``h·w_i + b_i`` (the model's logit) is the inner product. The :class:`Embeddings`
artifact (metric ``"ip"``, trainer ``"sequence"``) stores the item vectors and, under ``extra/sequence/``,
everything needed to encode a new sequence: the state dict (``torch.save``), the config (JSON), the item
vocabulary (= the artifact's ids, in row order) and the recency bucket edges.

Modules: :mod:`~annrec.train.sequence.config` (hyper-parameters), :mod:`~annrec.train.sequence.data`
(recency buckets, histories, windows), :mod:`~annrec.train.sequence.model` (network, loss),
:mod:`~annrec.train.sequence.trainer` (:class:`SequenceTrainer`), :mod:`~annrec.train.sequence.encoder`
(the artifact's encoder files and the query encoder).

>>> emb = SequenceTrainer(cell="gru", factors=128, epochs=10).fit(train).to_embeddings()
>>> enc = query_encoder_from_embeddings(emb)
>>> vec, warnings = enc.encode([1, 50, 260], timestamps=[964982703, 964982931, 964983000])
>>> recs, warnings = Recommender(emb, index, encoder=enc).recommend_next([1, 50, 260], k=10)
"""

from annrec.train.sequence.config import DAY_SECONDS, EXTRA_PREFIX, SequenceConfig
from annrec.train.sequence.data import (_Histories, _window_batch, build_windows, recency_bucket_edges,
                                        recency_buckets, seen_pairs)
from annrec.train.sequence.encoder import (SequenceQueryEncoder, encoder_files, exact_scores,
                                           query_encoder_from_embeddings)
from annrec.train.sequence.model import _build_net, masked_loss
from annrec.train.sequence.trainer import SequenceTrainer, TrainResult

__all__ = [
    "SequenceConfig", "SequenceTrainer", "SequenceQueryEncoder", "query_encoder_from_embeddings",
    "recency_bucket_edges", "recency_buckets", "build_windows", "masked_loss", "seen_pairs", "encoder_files",
    "exact_scores", "TrainResult", "DAY_SECONDS", "EXTRA_PREFIX", "_Histories", "_window_batch", "_build_net",
]
