"""The RNN sequence recommender: masking, recency buckets, serving parity, save/load, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from annrec.embeddings import Embeddings  # noqa: E402
from annrec.errors import ArtifactError, InputError, UnknownIdError  # noqa: E402
from annrec.index import build_index  # noqa: E402
from annrec.recommend import Recommender  # noqa: E402
from annrec.train import sequence as S  # noqa: E402
from tests._sequence_fixtures import T0, cyclic_log, tiny_params  # noqa: E402

DAY = S.DAY_SECONDS


@pytest.fixture(scope="module")
def log():
    return cyclic_log()


@pytest.fixture(scope="module")
def trained(log):
    """A tiny model trained on the cyclic log (module-wide: trained once, ~seconds)."""
    trainer = S.SequenceTrainer(**tiny_params())
    emb = trainer.fit(log).to_embeddings()
    return trainer, emb


def _loss(net, *arrays, **kw) -> float:
    with torch.no_grad():
        return float(S.masked_loss(net, *map(torch.as_tensor, arrays), **kw))


def _net(n_items=12, **over):
    cfg = S.SequenceConfig(**{**tiny_params(), **over}).validate()
    torch.manual_seed(0)
    return S._build_net(n_items, 12, cfg).eval()


# ------------------------------------------------------------------------------------------ masking
@pytest.mark.parametrize("encoder, attention", [("gru", False), ("gru", True), ("lstm", False), ("lstm", True),
                                                ("transformer", False)])
def test_padding_never_contributes_to_the_loss(encoder, attention):
    net = _net(encoder=encoder, attention=attention, n_heads=2, max_len=11)
    rng = np.random.default_rng(0)
    L, H = 6, 2
    lengths = np.array([1, 3, 6, 4])
    x = np.zeros((4, L), np.int64)
    r = np.zeros((4, L), np.int64)
    y = np.zeros((4, L, H), np.int64)
    for b, n in enumerate(lengths):
        x[b, L - n:] = rng.integers(1, 13, n)
        r[b, L - n:] = rng.integers(1, 12, n)
        y[b, L - n:, :] = rng.integers(1, 13, (n, H))
    base = _loss(net, x, r, y)
    # garbage targets and recency buckets at padded positions change nothing
    pad = x == 0
    y2, r2 = y.copy(), r.copy()
    y2[pad] = rng.integers(1, 13, (int(pad.sum()), H))
    r2[pad] = rng.integers(1, 12, int(pad.sum()))
    assert _loss(net, x, r2, y2) == pytest.approx(base, abs=1e-6)
    # more front padding (a longer window) changes nothing either: padding never reaches the RNN
    xl = np.concatenate([np.zeros((4, 5), np.int64), x], 1)
    rl = np.concatenate([np.full((4, 5), 7), r], 1)
    yl = np.concatenate([rng.integers(1, 13, (4, 5, H)), y], 1)
    assert _loss(net, xl, rl, yl) == pytest.approx(base, abs=1e-5)
    # while a real target does count
    y3 = y.copy()
    y3[2, -1, 0] = (y3[2, -1, 0] % 12) + 1
    assert _loss(net, x, r, y3) != pytest.approx(base, abs=1e-6)


def test_masked_loss_is_mean_cross_entropy_over_real_targets():
    net = _net()
    x = torch.tensor([[0, 0, 3, 5]])
    r = torch.tensor([[0, 0, 2, 1]])
    y = torch.tensor([[[9], [9], [5], [7]]])          # the first two are padding, must not count
    with torch.no_grad():
        h = net(x, r)
        logp = torch.log_softmax(net.out(h[0, 2:]), -1)
        expected = -(logp[0, 4] + logp[1, 6]) / 2
        got = float(S.masked_loss(net, x, r, y))
    assert got == pytest.approx(float(expected), abs=1e-6)


def test_sampled_softmax_loss_runs_and_respects_the_mask():
    net = _net()
    x = torch.tensor([[0, 2, 3], [1, 2, 3]])
    r = torch.ones_like(x)
    y = torch.tensor([[[0], [4], [5]], [[3], [4], [5]]])
    q = torch.full((12,), 1 / 12)
    kw = dict(neg_items=torch.arange(12), neg_logq=torch.log(q * 12), item_logq=torch.log(q * 12))
    y2 = y.clone()
    y2[0, 0, 0] = 7                                  # a padded position's target
    with torch.no_grad():
        a = float(S.masked_loss(net, x, r, y, "sampled", **kw))
        b = float(S.masked_loss(net, x, r, y2, "sampled", **kw))
    assert np.isfinite(a) and a > 0 and b == pytest.approx(a, abs=1e-6)


def test_windows_targets_are_the_sequence_shifted_by_one(log):
    hist = S._Histories.from_interactions(log)
    users, ends = S.build_windows(hist, 6, 1)
    assert len(users) == sum(n - 1 for n in hist.lengths.tolist())      # every cut point, stride 1
    x, r, y = S._window_batch(hist, users[:40], ends[:40], 6, 3, None, 0)
    for b in range(40):
        seq = hist.items[hist.starts[users[b]]:hist.starts[users[b]] + hist.lengths[users[b]]]
        e = ends[b]
        real = seq[max(0, e - 6):e]
        assert (x[b, 6 - len(real):] == real).all() and (x[b, :6 - len(real)] == 0).all()
        for j in range(6 - len(real), 6):
            p = e - 6 + j
            for h in range(3):
                want = seq[p + 1 + h] if p + 1 + h < len(seq) else 0
                assert y[b, j, h] == want
    # train_last=1: only the last position has targets
    _, _, y1 = S._window_batch(hist, users[:40], ends[:40], 6, 3, None, 1)
    assert (y1[:, :-1] == 0).all() and (y1[:, -1, 0] > 0).all()


# ------------------------------------------------------------------------------------------ recency
def test_log_bucket_edges_and_assignment():
    edges = S.recency_bucket_edges(np.array([0.0, 10.0]), 100, "log")
    assert len(edges) == 99 and np.all(np.diff(edges) > 0)
    assert edges[0] == pytest.approx(1 / 24) and edges[-1] == pytest.approx(365.0)   # at least one year
    b = S.recency_buckets(np.array([0.0, 0.5 / 24, 1 / 24, 2.0, 364.0, 365.0, 5000.0]), edges)
    assert b[0] == 0 and b[1] == 0 and b[2] == 1
    assert list(b) == sorted(b) and b[-1] == b[-2] == 99 and b[-3] == 98
    # the upper end follows the longest history
    assert S.recency_bucket_edges(np.array([0.0, 3000.0]), 100)[-1] == pytest.approx(3000.0)


def test_quantile_bucket_edges_are_equal_mass():
    days = np.random.default_rng(0).exponential(30.0, 10_000)
    edges = S.recency_bucket_edges(days, 10, "quantile")
    counts = np.bincount(S.recency_buckets(days, edges), minlength=10)
    assert len(edges) == 9 and counts.min() > 900 and counts.max() < 1100
    # many events on the last day: repeated quantiles (0) merge
    days2 = np.concatenate([np.zeros(9000), np.arange(1, 1001)])
    assert len(S.recency_bucket_edges(days2, 10, "quantile")) < 9


def test_window_recency_is_measured_from_the_last_input_event():
    log = cyclic_log(n_users=1, length=5)
    hist = S._Histories.from_interactions(log)
    edges = S.recency_bucket_edges(max_days=400.0)
    _, r, _ = S._window_batch(hist, np.array([0]), np.array([5]), 8, 1, edges, 0)
    ts = hist.ts[:5]
    expected = S.recency_buckets((ts[-1] - ts) / DAY, edges) + 1
    assert (r[0, -5:] == expected).all() and r[0, -1] == 1 and (r[0, :3] == 0).all()


def test_bucket_edges_bad_input():
    with pytest.raises(InputError):
        S.recency_bucket_edges(np.array([1.0]), 1)
    with pytest.raises(InputError):
        S.recency_bucket_edges(np.array([1.0]), 10, "linear")
    with pytest.raises(InputError):
        S.recency_bucket_edges(None, 10, "quantile")


# ------------------------------------------------------------------------------------------ training / serving
def test_learns_the_next_item(trained):
    trainer, emb = trained
    enc = S.query_encoder_from_embeddings(emb)
    vec, warnings = enc.encode([105, 106, 107], [T0, T0 + 60, T0 + 120])
    assert warnings == []
    assert emb.ids[int(np.argmax(emb.vectors @ vec))] == 108


def test_artifact_layout(trained, log):
    trainer, emb = trained
    assert emb.metric == "ip" and emb.manifest["trainer"] == "sequence"
    assert emb.dim == trainer.config.factors + 1 and len(emb) == log.n_items
    assert (emb.queries[:, -1] == 1).all() and emb.queries.shape == (log.n_users, emb.dim)
    w = trainer.net.out.weight.detach().numpy()
    b = trainer.net.out.bias.detach().numpy()
    np.testing.assert_allclose(emb.vectors, np.hstack([w, b[:, None]]), rtol=0, atol=0)
    assert set(emb.extra) >= {"sequence/state_dict.pt", "sequence/config.json", "sequence/vocab.json",
                              "sequence/bucket_edges.json"}
    assert json.loads(emb.extra["sequence/vocab.json"]) == emb.ids.tolist()


def test_user_query_vectors_equal_the_encoder_on_their_history(trained, log):
    _, emb = trained
    enc = S.query_encoder_from_embeddings(emb)
    order = np.lexsort((log.timestamp, log.user_idx))
    for u in (0, 7, 21):
        ev = order[log.user_idx[order] == u]
        vec, _ = enc.encode(log.item_ids[log.item_idx[ev]].tolist(), log.timestamp[ev].tolist())
        np.testing.assert_allclose(vec, emb.queries[u], atol=1e-5)


def test_exact_and_index_answers_agree(trained):
    _, emb = trained
    seq, ts = [110, 111, 112, 113], [T0, T0 + 3 * DAY, T0 + 4 * DAY, T0 + 4 * DAY + 600]
    enc = S.query_encoder_from_embeddings(emb)
    vec, _ = enc.encode(seq, ts)
    scores = S.exact_scores(emb, vec)
    scores[[emb.row_of(i) for i in seq]] = -np.inf
    exact = emb.ids[np.argsort(-scores, kind="stable")[:5]].tolist()
    for index in (build_index(emb.vectors, emb.ids, "ip", backend="faiss", factory="Flat"),
                  build_index(emb.vectors, emb.ids, "ip", backend="hnswlib", M=16, ef_construction=200),
                  None):
        recs, warnings = Recommender(emb, index, encoder=enc).recommend_next(seq, 5, timestamps=ts, params=None)
        assert [r.item_id for r in recs] == exact and warnings == []
        np.testing.assert_allclose([r.score for r in recs], np.sort(scores)[::-1][:5], rtol=1e-4, atol=1e-4)
    assert exact[0] == 114


def test_save_load_roundtrip(trained, tmp_path):
    _, emb = trained
    seq, ts = [103, 104], [T0, T0 + DAY]
    before, _ = S.query_encoder_from_embeddings(emb).encode(seq, ts)
    emb.save(tmp_path / "seq")
    loaded = Embeddings.load(tmp_path / "seq")
    assert loaded.manifest["trainer"] == "sequence" and loaded.extra.keys() == emb.extra.keys()
    after, _ = S.query_encoder_from_embeddings(loaded).encode(seq, ts)
    np.testing.assert_array_equal(before, after)
    recs, _ = Recommender(loaded, None, encoder=S.query_encoder_from_embeddings(loaded)).recommend_next(
        seq, 3, timestamps=ts)
    assert len(recs) == 3 and all(r.item_id not in seq for r in recs)


def test_unknown_ids_are_ignored_with_a_warning(trained):
    _, emb = trained
    enc = S.query_encoder_from_embeddings(emb)
    clean, _ = enc.encode([105, 106], [T0, T0 + 60])
    vec, warnings = enc.encode([105, 999999, 106], [T0, T0 + 30, T0 + 60])
    np.testing.assert_allclose(vec, clean, atol=1e-6)
    assert len(warnings) == 1 and "999999" in warnings[0]
    with pytest.raises(UnknownIdError, match="none of the 2 item ids"):
        enc.encode([999998, 999999])


def test_string_ids_from_the_command_line_map_to_int_ids(trained):
    _, emb = trained
    enc = S.query_encoder_from_embeddings(emb)
    a, _ = enc.encode(["105", "106"])
    b, warnings = enc.encode([105, 106])
    np.testing.assert_array_equal(a, b)
    assert any("no timestamps" in w for w in warnings)


def test_long_sequences_use_the_last_max_len_items(trained):
    _, emb = trained
    enc = S.query_encoder_from_embeddings(emb)
    seq = [100 + i for i in range(10)]
    full, warnings = enc.encode(seq, [T0 + 60 * i for i in range(10)])
    tail, _ = enc.encode(seq[-6:], [T0 + 60 * i for i in range(4, 10)])
    np.testing.assert_allclose(full, tail, atol=1e-6)
    assert any("last 6" in w for w in warnings)


@pytest.mark.parametrize("items, ts, now, match", [
    ([], None, None, "empty"),
    ([105, 106], [T0 + 60, T0], None, "out of order"),
    ([105, 106], [T0, T0 + 60], T0 + 30, "future"),
    ([105, 106], [T0, 4_000_000_000], None, "future"),
    ([105, 106], [T0], None, "2 items"),
    ([105, 106], [T0, 1.5], None, "integers"),
    ([105, 106], [-5, T0], None, ">= 0"),
    ([105], None, -1, "now"),
])
def test_bad_sequences_are_rejected(trained, items, ts, now, match):
    _, emb = trained
    enc = S.query_encoder_from_embeddings(emb)
    with pytest.raises(InputError, match=match):
        enc.encode(items, ts, now)


def test_now_moves_the_recency_reference(trained):
    _, emb = trained
    enc = S.query_encoder_from_embeddings(emb)
    a, _ = enc.encode([105, 106], [T0, T0 + 60])
    b, _ = enc.encode([105, 106], [T0, T0 + 60], now=T0 + 60)
    c, _ = enc.encode([105, 106], [T0, T0 + 60], now=T0 + 200 * DAY)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("bad", [dict(max_len=0), dict(max_len=-3), dict(encoder="rnn"), dict(factors=0),
                                 dict(dropout=1.0), dict(loss="bpr"), dict(attention=True, factors=15, n_heads=2),
                                 dict(training="sliding"), dict(max_chunks_per_user=-1),
                                 dict(nonsense=1)])
def test_bad_hyper_parameters(bad):
    with pytest.raises(InputError):
        S.SequenceTrainer(**bad)


def test_no_history_to_learn_from():
    from annrec.data import Interactions

    single = Interactions.from_arrays([1, 2], [10, 11], None, [T0, T0])
    with pytest.raises(InputError, match="two or more events"):
        S.SequenceTrainer(**tiny_params()).fit(single)


def _tampered(emb, **changes):
    return Embeddings(vectors=changes.get("vectors", emb.vectors), ids=changes.get("ids", emb.ids),
                      metric="ip", manifest=dict(emb.manifest), extra={**emb.extra, **changes.get("extra", {})})


def test_checkpoint_vocabulary_must_match_item_vectors(trained):
    _, emb = trained
    shuffled = list(reversed(emb.ids.tolist()))
    with pytest.raises(ArtifactError, match="vocabulary"):
        S.query_encoder_from_embeddings(_tampered(emb, extra={"sequence/vocab.json": json.dumps(shuffled).encode()}))
    with pytest.raises(ArtifactError, match="vocabulary"):
        S.query_encoder_from_embeddings(
            _tampered(emb, extra={"sequence/vocab.json": json.dumps(emb.ids.tolist()[:-1]).encode()}))
    # vectors from another training (same shape) are caught too
    with pytest.raises(ArtifactError, match="different trainings"):
        S.query_encoder_from_embeddings(_tampered(emb, vectors=emb.vectors[::-1].copy()))
    with pytest.raises(ArtifactError, match="lacks"):
        bad = _tampered(emb)
        del bad.extra["sequence/state_dict.pt"]
        S.query_encoder_from_embeddings(bad)
    with pytest.raises(ArtifactError, match="corrupt"):
        S.query_encoder_from_embeddings(_tampered(emb, extra={"sequence/state_dict.pt": b"not a checkpoint"}))
    other = _tampered(emb)
    other.manifest["trainer"] = "als"
    with pytest.raises(ArtifactError, match="als"):
        S.query_encoder_from_embeddings(other)


def test_early_stopping_and_refit_record_their_history(log):
    trainer = S.SequenceTrainer(**tiny_params(val_fraction=0.2, refit=True, epochs=4, patience=0))
    trainer.fit(log)
    phases = [h["phase"] for h in trainer.result.history]
    fit_rows = [h for h in trainer.result.history if h["phase"] == "fit"]
    assert all("val_recall@10" in h for h in fit_rows)
    assert phases.count("refit") == trainer.result.best_epoch
    assert trainer.result.best_val_recall == max(h["val_recall@10"] for h in fit_rows)


def test_training_is_reproducible_with_a_seed(log):
    a = S.SequenceTrainer(**tiny_params(epochs=2, attention=True, n_heads=2)).fit(log).to_embeddings()
    b = S.SequenceTrainer(**tiny_params(epochs=2, attention=True, n_heads=2)).fit(log).to_embeddings()
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_sampled_softmax_training_learns_the_next_item(log):
    trainer = S.SequenceTrainer(**tiny_params(loss="sampled", negatives=16, epochs=15))
    emb = trainer.fit(log).to_embeddings()
    vec, _ = S.query_encoder_from_embeddings(emb).encode([110, 111, 112])
    assert emb.ids[int(np.argmax(emb.vectors @ vec))] == 113


def test_horizon_fraction_predicts_a_quarter_of_the_history_ahead(log):
    hist = S._Histories.from_interactions(log)                     # 18 events per user
    users, ends = np.array([0, 0]), np.array([8, 16])
    _, _, y = S._window_batch(hist, users, ends, 6, 1, None, 1, horizon_fraction=0.25, max_horizon=0)
    seq = hist.items[:18]
    assert (y[0, -1, :2] == seq[8:10]).all() and (y[0, -1, 2:] == 0).all()      # ceil(0.25 * 8) = 2
    assert (y[1, -1, :2] == seq[16:18]).all()                                   # 4 wanted, only 2 left
    _, _, y2 = S._window_batch(hist, users, ends, 6, 1, None, 1, horizon_fraction=0.25, max_horizon=1)
    assert y2.shape[2] == 1


def test_mask_seen_leaves_history_items_out_of_the_softmax(log):
    hist = S._Histories.from_interactions(log)
    users, ends = np.array([3, 5]), np.array([4, 7])
    x, r, y = S._window_batch(hist, users, ends, 4, 2, None, 1)
    rows, items = S.seen_pairs(hist, users, ends, x, y, log.n_items)
    for row, (u, e) in enumerate(zip(users, ends)):
        seq = hist.items[hist.starts[u]:hist.starts[u] + hist.lengths[u]] - 1
        targets = set((y[row, -1][y[row, -1] > 0] - 1).tolist())
        assert set(items[rows == row].tolist()) == set(seq[:e].tolist()) - targets
    net = _net(n_items=log.n_items)
    xt, rt, yt = map(torch.as_tensor, (x, r, y))
    with torch.no_grad():
        got = float(S.masked_loss(net, xt, rt, yt, seen=(torch.as_tensor(rows), torch.as_tensor(items))))
        logits = net.out(net(xt, rt)[:, -1])
        want = 0.0
        for row in range(2):
            keep = np.ones(log.n_items, bool)
            keep[items[rows == row]] = False
            logp = torch.log_softmax(logits[row, torch.as_tensor(keep)], -1)
            pos = np.cumsum(keep) - 1
            want += -float(logp[pos[y[row, -1] - 1]].mean()) / 2
    assert got == pytest.approx(want, abs=1e-5)


def test_mask_seen_with_several_targets_keeps_the_loss_finite(log):
    # windows near the end of a history have fewer future items than the horizon: their empty target slots
    # point at item row 0, which is usually a seen (masked, -inf) item; the loss must stay finite
    trainer = S.SequenceTrainer(**tiny_params(horizon=4, mask_seen=True, epochs=2))
    trainer.fit(log)
    assert all(np.isfinite(h["loss"]) for h in trainer.result.history)
