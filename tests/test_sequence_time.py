"""The position-invariant time feature of the sequence recommender (``time_feature="gap"``: the days since the
user's previous event) against the recency feature, and bad hyper-parameters on the command line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from annrec.errors import InputError  # noqa: E402
from annrec.train import sequence as S  # noqa: E402
from annrec.train.sequence.data import gap_buckets, recency_buckets, time_bucket_edges  # noqa: E402
from tests._sequence_fixtures import T0, cyclic_log  # noqa: E402
from tests._sequence_fixtures import tiny_params as _tiny_params  # noqa: E402

DAY = S.DAY_SECONDS


def tiny_params(**over) -> dict:
    return _tiny_params(**{"training": "all_positions", "time_feature": "gap", **over})


@pytest.fixture(scope="module")
def log():
    return cyclic_log()


@pytest.fixture(scope="module")
def hist(log):
    return S._Histories.from_interactions(log)


def _buckets_by_event(hist, users, ends, r, L):
    """{(user, history position): bucket id} over every real input position of the batch."""
    out: dict[tuple[int, int], set[int]] = {}
    for b, (u, e) in enumerate(zip(users.tolist(), ends.tolist())):
        for j in range(L):
            p = e - L + j
            if p >= 0:
                out.setdefault((u, p), set()).add(int(r[b, j]))
    return out


def test_gap_buckets_are_a_property_of_the_event_in_every_window_and_chunk(hist):
    L = 6
    edges = time_bucket_edges(hist, 10, "log", "gap")
    users, ends = S.build_windows(hist, L, 1)
    _, r, _ = S._window_batch(hist, users, ends, L, 1, edges, 1, time_feature="gap")
    seen = _buckets_by_event(hist, users, ends, r, L)
    assert all(len(v) == 1 for v in seen.values())               # the same bucket at every position it takes
    cu, ce = S.build_chunks(hist, L)
    _, rc, _ = S._window_batch(hist, cu, ce, L, 1, edges, 0, time_feature="gap")
    for key, v in _buckets_by_event(hist, cu, ce, rc, L).items():
        assert v == seen.get(key, v)                             # ...and the same in the chunks
    for u in range(3):                                           # = the serving rule on the user's own history
        s, n = hist.starts[u], hist.lengths[u]
        want = gap_buckets(hist.ts[s:s + n], edges) + 1
        got = [next(iter(seen[(u, p)])) for p in range(n - 1)]
        np.testing.assert_array_equal(got, want[:n - 1])
    assert want[0] == len(edges) + 1                             # the first event: "no previous event" (last bucket)
    # the recency feature, by contrast, gives one event different buckets in different windows
    _, rr, _ = S._window_batch(hist, users, ends, L, 1, time_bucket_edges(hist, 10, "log", "recency"), 1)
    assert any(len(v) > 1 for v in _buckets_by_event(hist, users, ends, rr, L).values())


def test_gap_edges_start_at_ten_seconds_and_cover_the_longest_history(hist):
    edges = time_bucket_edges(hist, 10, "log", "gap")
    assert edges[0] == pytest.approx(10 / DAY) and len(edges) == 9
    assert edges[-1] == pytest.approx(max(365.0, float(hist.days_before_last().max())))
    ts = np.array([T0, T0 + 5, T0 + 5 + 3 * DAY])
    b = gap_buckets(ts, edges)
    assert b[0] == len(edges) and b[1] == 0                      # no previous event; 5 s < 10 s
    assert b[2] == recency_buckets(np.array([3.0]), edges)[0]


def test_a_later_timestamp_changes_no_earlier_gap_bucket_but_every_earlier_recency_bucket(log):
    hist = S._Histories.from_interactions(log)
    later = S._Histories(hist.items.copy(), hist.ts.copy(), hist.starts, hist.lengths)
    last = hist.starts[0] + hist.lengths[0] - 1
    later.ts[last] += 30 * DAY                                   # user 0's last event happens a month later
    users, ends = np.array([0]), np.array([hist.lengths[0]])
    for feature, earlier_change in (("gap", False), ("recency", True)):
        edges = time_bucket_edges(hist, 10, "log", feature)
        _, a, _ = S._window_batch(hist, users, ends, 6, 1, edges, 0, time_feature=feature)
        _, b, _ = S._window_batch(later, users, ends, 6, 1, edges, 0, time_feature=feature)
        assert (a[0, :-1] != b[0, :-1]).any() == earlier_change
        assert (a[0, -1] != b[0, -1]) == (not earlier_change)    # gap: the moved event's own gap; recency: 0


@pytest.fixture(scope="module")
def trained(log):
    out = {}
    for enc in ("gru", "transformer"):
        trainer = S.SequenceTrainer(**tiny_params(encoder=enc, epochs=30, horizon_fraction=0.0))
        out[enc] = (trainer, trainer.fit(log).to_embeddings())
    return out


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_a_gap_model_serves_what_it_trained_on(trained, log, encoder):
    trainer, emb = trained[encoder]
    assert json.loads(emb.extra["sequence/config.json"])["time_feature"] == "gap"
    enc = S.query_encoder_from_embeddings(emb)
    order = np.lexsort((log.timestamp, log.user_idx))
    for u in range(3):                                           # the stored user vectors = encoding the history
        rows = order[log.user_idx[order] == u]
        vec, _ = enc.encode(log.item_ids[log.item_idx[rows]].tolist(), log.timestamp[rows].tolist())
        np.testing.assert_allclose(vec, emb.queries[u], rtol=1e-5, atol=1e-5)
    seq, ts = [103, 104, 105], [T0, T0 + DAY, T0 + 2 * DAY]
    a, _ = enc.encode(seq, ts)
    b, _ = enc.encode(seq, ts, now=T0 + 90 * DAY)                # "now" plays no part in the gaps
    np.testing.assert_array_equal(a, b)
    c, _ = enc.encode(seq, [t + 7 * DAY for t in ts])            # a shift of every timestamp changes no gap
    np.testing.assert_allclose(a, c, atol=1e-6)
    d, w = enc.encode(seq)
    assert any("gap 0" in m for m in w)
    scores = S.exact_scores(emb, a)
    scores[[emb.row_of(i) for i in seq]] = -np.inf
    assert emb.ids[int(np.argmax(scores))] == 106                # learnt the order


def test_an_artifact_without_time_feature_reads_as_recency(trained):
    _, emb = trained["gru"]
    config = {k: v for k, v in json.loads(emb.extra["sequence/config.json"]).items() if k != "time_feature"}
    from annrec.train.sequence.config import config_from_stored

    assert config_from_stored(config).time_feature == "recency"


def test_unknown_time_feature_names_the_valid_ones():
    with pytest.raises(InputError, match="unknown time_feature 'interval'.*'recency', 'gap'"):
        S.SequenceTrainer(time_feature="interval")


@pytest.mark.parametrize("args, match", [
    (["--encoder", "rnn"], "unknown encoder 'rnn': use one of 'gru', 'lstm', 'transformer'"),
    (["--encoder", "transformer", "--n-heads", "3"], "n_heads (3) must divide"),
    (["--time-feature", "interval"], "unknown time_feature 'interval'"),
    (["--training", "chunks"], "unknown training mode 'chunks'"),
])
def test_bad_hyper_parameters_on_the_command_line_are_one_clear_error(tmp_path, args, match, capsys, monkeypatch):
    from annrec.cli import main

    monkeypatch.setattr(sys, "argv", ["annrec", "train", "sequence", *args, "--out", str(tmp_path / "m")])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert "error:" in captured.out and match in captured.out.replace("\n", " ")
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "m").exists()
