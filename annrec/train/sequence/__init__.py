"""The sequence recommender: next-item recommendations from a user's time-ordered history.

Model (after the homepage recommender of a large sports retailer, which replaced ALS with an RNN over each
customer's item sequence plus a recency feature): every event of a sequence is the concatenation of an
item embedding and an embedding of its *recency bucket* (days before the sequence's last event, bucketed
into 100 bins); an encoder reads it — ``encoder="gru"`` or ``"lstm"`` (Cho et al. 2014 / Hochreiter &
Schmidhuber 1997; GRU4Rec, Hidasi et al. 2016, for next-item use; an optional causal self-attention
layer can look back over the RNN outputs) or ``"transformer"`` (SASRec, Kang & McAuley 2018: learned positional
embeddings, pre-layer-norm causal self-attention blocks); a linear output layer with a bias scores the whole
item catalogue. Every encoder is causal: the state at a position depends on the events up to it only.

Training (``training``): ``"windows"`` (default: it wins on the validation split of ml-latest-small) feeds the
``max_len`` events before every cut point as a window of its own, loss on its last position, so each event goes
through the encoder up to ``max_len`` times; ``"all_positions"`` (the parallel mini-batches of GRU4Rec, SASRec's
recipe) cuts each user's history into non-overlapping chunks of ``max_len`` events and predicts the next item(s)
at *every* position of a chunk in one forward pass, so each event goes through the encoder once per epoch.
The time-bucket input is the recency before the sequence's last event (``time_feature="recency"``) or the gap
to the user's previous event (``"gap"``, position-invariant; TiSASRec, Li et al. 2020). In both, a
position's targets are the items that follow it — at least ``horizon`` (1: the next item) and
``horizon_fraction`` (0.25) of the history so far, i.e. "predict all the items the user takes next" (the
dense all-action objective of PinnerFormer, Pancha et al. 2022), which matches the top-N protocol, whose truth
is the *set* of the next 20% of a user's events (a quarter of the 80% input). Items already in the user's
history are left out of the softmax (``mask_seen``), as the protocol leaves them out of the ranking. The loss
(full softmax cross-entropy by default; sampled softmax with log-Q correction, or in-batch negatives, as
options) is averaged over each position's targets, then over positions, and is masked on padding and on
targets past the end of the history. AdamW, early stopping on a per-user temporal validation split carved from
the training data, then (by default) a refit on all training data for the best number of epochs.

Serving is maximum inner product search: the item vectors are the output layer's rows with their bias
appended, ``[w_i, b_i]``; the query vector of a sequence is its final hidden state with a constant 1
appended, ``[h, 1]``, so ``h·w_i + b_i`` (the model's logit) is the inner product. The :class:`Embeddings`
artifact (metric ``"ip"``, trainer ``"sequence"``) stores the item vectors and, under ``extra/sequence/``,
everything needed to encode a new sequence: the state dict (``torch.save``), the config (JSON: the encoder and
its parameters, so the right network is rebuilt on load), the item
vocabulary (= the artifact's ids, in row order) and the recency bucket edges.

Modules: :mod:`~annrec.train.sequence.config` (hyper-parameters), :mod:`~annrec.train.sequence.data`
(recency buckets, histories, windows and chunks), :mod:`~annrec.train.sequence.model` (network, loss),
:mod:`~annrec.train.sequence.trainer` (:class:`SequenceTrainer`), :mod:`~annrec.train.sequence.encoder`
(the artifact's encoder files and the query encoder).

>>> emb = SequenceTrainer(encoder="transformer", n_layers=2, factors=128, epochs=10).fit(train).to_embeddings()
>>> enc = query_encoder_from_embeddings(emb)
>>> vec, warnings = enc.encode([1, 50, 260], timestamps=[964982703, 964982931, 964983000])
>>> recs, warnings = Recommender(emb, index, encoder=enc).recommend_next([1, 50, 260], k=10)
"""

from annrec.train.sequence.config import (DAY_SECONDS, ENCODERS, EXTRA_PREFIX, LOSSES, TIME_FEATURES,
                                          TRAINING_MODES, SequenceConfig)
from annrec.train.sequence.data import (_Histories, _window_batch, build_chunks, build_windows,
                                        recency_bucket_edges, recency_buckets, seen_pairs)
from annrec.train.sequence.encoder import (SequenceQueryEncoder, encoder_files, exact_scores,
                                           query_encoder_from_embeddings)
from annrec.train.sequence.model import _build_net, load_state, masked_loss, state_encoder
from annrec.train.sequence.trainer import SequenceTrainer, TrainResult

__all__ = [
    "SequenceConfig", "SequenceTrainer", "SequenceQueryEncoder", "query_encoder_from_embeddings",
    "recency_bucket_edges", "recency_buckets", "build_windows", "build_chunks", "masked_loss", "seen_pairs",
    "encoder_files", "state_encoder", "load_state", "ENCODERS", "TRAINING_MODES", "TIME_FEATURES", "LOSSES",
    "exact_scores", "TrainResult", "DAY_SECONDS", "EXTRA_PREFIX", "_Histories", "_window_batch", "_build_net",
]
