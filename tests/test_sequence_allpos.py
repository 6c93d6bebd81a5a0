"""All-positions training and the three encoders of the sequence recommender (GRU, LSTM, SASRec-style
transformer): loss masking, causality, chunks, exact vs index parity, save/load, bad input, old spellings."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from annrec.cli import app  # noqa: E402
from annrec.embeddings import Embeddings  # noqa: E402
from annrec.errors import ArtifactError, InputError  # noqa: E402
from annrec.index import build_index  # noqa: E402
from annrec.recommend import Recommender  # noqa: E402
from annrec.train import sequence as S  # noqa: E402
from tests._sequence_fixtures import T0, cyclic_log, write_movielens_folder  # noqa: E402
from tests._sequence_fixtures import tiny_params as _tiny_params  # noqa: E402


def tiny_params(**over) -> dict:
    """The tiny configuration, trained in the all-positions mode unless a test says otherwise."""
    return _tiny_params(**{"training": "all_positions", **over})

DAY = S.DAY_SECONDS
ENCODERS = ["gru", "lstm", "transformer"]


@pytest.fixture(scope="module")
def log():
    return cyclic_log()


@pytest.fixture(scope="module")
def trained(log):
    """One tiny all-positions model per encoder, trained once for the module (a few seconds each)."""
    out = {}
    for enc in ENCODERS:
        trainer = S.SequenceTrainer(**tiny_params(encoder=enc, n_heads=2, epochs=30, horizon_fraction=0.0))
        out[enc] = (trainer, trainer.fit(log).to_embeddings())
    return out


def _net(encoder="gru", n_items=12, **over):
    cfg = S.SequenceConfig(**{**tiny_params(), "encoder": encoder, "n_heads": 2, **over}).validate()
    torch.manual_seed(0)
    return S._build_net(n_items, 12, cfg).eval()


def _loss(net, x, r, y, **kw) -> float:
    with torch.no_grad():
        return float(S.masked_loss(net, *map(torch.as_tensor, (x, r, y)), **kw))


def _front_padded(rng, lengths, L, H=1, n_items=12):
    x = np.zeros((len(lengths), L), np.int64)
    r = np.zeros_like(x)
    y = np.zeros((len(lengths), L, H), np.int64)
    for b, n in enumerate(lengths):
        x[b, L - n:] = rng.integers(1, n_items + 1, n)
        r[b, L - n:] = rng.integers(1, 12, n)
        y[b, L - n:] = rng.integers(1, n_items + 1, (n, H))
    return x, r, y


# ------------------------------------------------------------------------------------------ chunks and loss
def test_chunks_cover_every_event_once_and_end_at_the_history_end(log):
    hist = S._Histories.from_interactions(log)                  # 18 events per user
    users, ends = S.build_chunks(hist, 6)
    assert ends[users == 0].tolist() == [17, 11, 5]             # last event only a target; first chunk short
    x, _, y = S._window_batch(hist, users, ends, 6, 1, None, 0)
    seq = hist.items[:18]
    first = np.flatnonzero(users == 0)
    # every position of every chunk has the next item as its target: events 1..17 of user 0, once each
    targets = np.concatenate([y[b, :, 0][x[b] > 0] for b in first[::-1]])
    np.testing.assert_array_equal(targets, seq[1:])
    assert (x[first[-1], :1] == 0).all() and (x[first[-1], 1:] == seq[:5]).all()
    last_only, _ = S.build_chunks(hist, 6, max_chunks_per_user=1)
    assert len(last_only) == log.n_users and (last_only == np.arange(log.n_users)).all()


@pytest.mark.parametrize("loss", ["full", "sampled", "in_batch"])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_padded_positions_never_change_the_all_positions_loss(encoder, loss):
    net = _net(encoder)
    rng = np.random.default_rng(1)
    x, r, y = _front_padded(rng, [2, 6, 4, 1], 6, H=2)
    logq = torch.log(torch.full((12,), 1 / 12))
    kw = {} if loss == "full" else dict(loss=loss, item_logq=logq, neg_items=torch.arange(12), neg_logq=logq)
    base = _loss(net, x, r, y, **kw)
    pad = x == 0
    y2, r2 = y.copy(), r.copy()
    y2[pad] = rng.integers(1, 13, (int(pad.sum()), 2))          # garbage targets and inputs at padding
    r2[pad] = rng.integers(1, 12, int(pad.sum()))
    assert np.isfinite(base) and _loss(net, x, r2, y2, **kw) == pytest.approx(base, abs=1e-6)
    y3 = y.copy()                                               # a real target does count
    y3[1, 2, 0] = y3[1, 2, 0] % 12 + 1
    assert _loss(net, x, r, y3, **kw) != pytest.approx(base, abs=1e-6)


def test_in_batch_loss_is_the_log_q_corrected_softmax_over_the_batch_targets():
    net = _net("gru")
    x = torch.tensor([[0, 3, 5], [2, 4, 6]])
    r = torch.ones_like(x)
    y = torch.tensor([[[9], [5], [7]], [[4], [6], [7]]])        # (0, 0) is padding: not a target
    f = torch.softmax(torch.arange(12, dtype=torch.float32) / 5, 0)
    with torch.no_grad():
        got = float(S.masked_loss(net, x, r, y, "in_batch", item_logq=torch.log(f)))
        h = net(x, r)
        cand = torch.tensor([3, 4, 5, 6])                           # distinct 0-based targets
        logq = torch.log(1 - (1 - f[cand]) ** 5)                     # 5 real targets in the batch
        want = 0.0
        for b, j, t in [(0, 1, 4), (0, 2, 6), (1, 0, 3), (1, 1, 5), (1, 2, 6)]:
            logits = net.out(h[b, j])[cand] - logq
            want -= float(torch.log_softmax(logits, 0)[int((cand == t).nonzero())]) / 5
    assert got == pytest.approx(want, abs=1e-5)


def test_mask_seen_covers_the_history_up_to_each_chunk_position(log):
    hist = S._Histories.from_interactions(log)
    users, ends = S.build_chunks(hist, 6)
    b = np.flatnonzero(users == 2)
    x, _, y = S._window_batch(hist, users[b], ends[b], 6, 1, None, 0)
    rows, items = S.seen_pairs(hist, users[b], ends[b], x, y, log.n_items)
    seq = hist.items[hist.starts[2]:hist.starts[2] + 18] - 1
    k = 0
    for row in range(len(b)):
        for j in range(6):
            if x[row, j] == 0:
                continue
            p = ends[b][row] - 6 + j                                  # history position of this input
            assert set(items[rows == k].tolist()) == set(seq[:p + 1].tolist()) - {int(y[row, j, 0]) - 1}
            k += 1
    assert k == 17


# ------------------------------------------------------------------------------------------ causality
@pytest.mark.parametrize("encoder, attention", [("gru", False), ("gru", True), ("lstm", False), ("transformer", False)])
def test_a_later_event_never_changes_earlier_states(encoder, attention):
    net = _net(encoder, attention=attention, n_layers=2, max_len=8)
    rng = np.random.default_rng(2)
    x, r, _ = _front_padded(rng, [8, 5], 8)
    x2, r2 = x.copy(), r.copy()
    x2[:, 6:] = x2[:, 6:] % 12 + 1                                 # change the last two events (items, recency)
    r2[:, 6:] = r2[:, 6:] % 11 + 1
    with torch.no_grad():
        a, b = net(torch.as_tensor(x), torch.as_tensor(r)), net(torch.as_tensor(x2), torch.as_tensor(r2))
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-4)       # ...while the later states do change
    assert (a[1, :3] == 0).all()                                    # padding states are zero


# ------------------------------------------------------------------------------------------ serving
@pytest.mark.parametrize("encoder", ENCODERS)
def test_each_encoder_learns_and_its_index_answers_equal_exact_scoring(trained, encoder):
    trainer, emb = trained[encoder]
    assert isinstance(trainer.net.rnn if encoder != "transformer" else trainer.net.blocks, torch.nn.Module)
    seq, ts = [110, 111, 112, 113], [T0, T0 + 3 * DAY, T0 + 4 * DAY, T0 + 4 * DAY + 600]
    enc = S.query_encoder_from_embeddings(emb)
    vec, _ = enc.encode(seq, ts)
    with torch.no_grad():                                           # the query is the final state + a constant 1
        x = torch.tensor([[0, 0] + [emb.row_of(i) + 1 for i in seq]])
        h = trainer.net(x, torch.as_tensor(np.where(x.numpy() > 0, 1, 0)))
    assert vec[-1] == 1.0 and vec.shape == (emb.dim,)
    scores = S.exact_scores(emb, vec)
    scores[[emb.row_of(i) for i in seq]] = -np.inf
    exact = emb.ids[np.argsort(-scores, kind="stable")[:5]].tolist()
    assert exact[0] == 114                                          # learnt the order
    for index in (build_index(emb.vectors, emb.ids, "ip", backend="faiss", factory="Flat"),
                  build_index(emb.vectors, emb.ids, "ip", backend="hnswlib", M=16, ef_construction=200), None):
        recs, _ = Recommender(emb, index, encoder=enc).recommend_next(seq, 5, timestamps=ts)
        assert [r.item_id for r in recs] == exact
        np.testing.assert_allclose([r.score for r in recs], np.sort(scores)[::-1][:5], rtol=1e-4, atol=1e-4)
    assert h.shape == (1, 6, trainer.config.factors)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_save_load_round_trip_rebuilds_the_same_encoder(trained, encoder, tmp_path):
    _, emb = trained[encoder]
    seq, ts = [103, 104, 105], [T0, T0 + DAY, T0 + 2 * DAY]
    before, _ = S.query_encoder_from_embeddings(emb).encode(seq, ts)
    emb.save(tmp_path / "seq")
    loaded = Embeddings.load(tmp_path / "seq")
    config = json.loads(loaded.extra["sequence/config.json"])
    assert config["encoder"] == encoder and config["training"] == "all_positions" and config["n_layers"] == 1
    assert loaded.manifest["params"]["encoder"] == encoder and loaded.manifest["encoder"]["encoder"] == encoder
    enc = S.query_encoder_from_embeddings(loaded)
    assert enc.net.cfg.encoder == encoder
    after, _ = enc.encode(seq, ts)
    np.testing.assert_array_equal(before, after)


def test_an_artifact_of_the_old_spellings_still_loads(trained):
    _, emb = trained["lstm"]
    config = json.loads(emb.extra["sequence/config.json"])
    old = {("cell" if k == "encoder" else "layers" if k == "n_layers" else "heads" if k == "n_heads"
            else "units" if k == "factors" else k): v for k, v in config.items() if k != "training"}
    old["format"] = 1
    legacy = Embeddings(vectors=emb.vectors, ids=emb.ids, metric="ip", manifest=dict(emb.manifest),
                        extra={**emb.extra, "sequence/config.json": json.dumps(old).encode()})
    a, _ = S.query_encoder_from_embeddings(emb).encode([105, 106])
    enc = S.query_encoder_from_embeddings(legacy)
    b, _ = enc.encode([105, 106])
    assert enc.net.cfg.encoder == "lstm" and enc.net.cfg.training == "windows"
    np.testing.assert_array_equal(a, b)


def test_deprecated_cell_layers_heads_spellings_warn_and_still_work(log):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = S.SequenceTrainer(**tiny_params(cell="lstm", layers=2, heads=4, epochs=1))
    said = sorted(str(w.message).split("(")[1].split("=")[0] for w in caught if w.category is DeprecationWarning)
    assert said == ["cell", "heads", "layers"] and "use encoder=" in " ".join(str(w.message) for w in caught)
    assert (t.config.encoder, t.config.n_layers, t.config.n_heads) == ("lstm", 2, 4)
    t.fit(log)
    assert isinstance(t.net.rnn, torch.nn.LSTM) and t.net.rnn.num_layers == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # the new spelling is silent
        S.SequenceTrainer(**tiny_params(encoder="lstm"))


# ------------------------------------------------------------------------------------------ bad input
def test_unknown_encoder_names_the_valid_ones():
    with pytest.raises(InputError, match="unknown encoder 'rnn'.*'gru', 'lstm', 'transformer'"):
        S.SequenceTrainer(encoder="rnn")
    with pytest.raises(InputError, match="'gru', 'lstm', 'transformer'"), pytest.warns(DeprecationWarning):
        S.SequenceTrainer(cell="mamba")


def test_n_heads_must_divide_the_hidden_size():
    with pytest.raises(InputError, match=r"n_heads \(3\) must divide .*factors \(16\).*1, 2, 4, 8, 16"):
        S.SequenceTrainer(**tiny_params(encoder="transformer", n_heads=3))
    S.SequenceTrainer(**tiny_params(encoder="gru", n_heads=3))     # heads unused by a plain RNN: fine


def test_max_len_beyond_the_positional_table_is_refused(trained):
    _, emb = trained["transformer"]
    with pytest.raises(InputError, match=r"max_len 7 is larger than .*positional table \(6 positions.*<= 6"):
        S.query_encoder_from_embeddings(emb, max_len=7)
    short = S.query_encoder_from_embeddings(emb, max_len=3)       # shorter windows are fine
    a, w = short.encode([100, 101, 102, 103, 104])
    b, _ = short.encode([102, 103, 104])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert any("last 3" in m for m in w)
    rnn = S.query_encoder_from_embeddings(trained["gru"][1], max_len=12)   # an RNN reads any length
    assert rnn.max_len == 12
    net = trained["transformer"][0].net                             # the net itself refuses longer input
    with pytest.raises(InputError, match="positional table"):
        net(torch.ones(1, 7, dtype=torch.long), torch.ones(1, 7, dtype=torch.long))
    config = json.loads(emb.extra["sequence/config.json"])
    tampered = Embeddings(vectors=emb.vectors, ids=emb.ids, metric="ip", manifest=dict(emb.manifest),
                          extra={**emb.extra, "sequence/config.json": json.dumps({**config, "max_len": 9}).encode()})
    with pytest.raises(ArtifactError, match="positional table has 6 positions but .*max_len 9"):
        S.query_encoder_from_embeddings(tampered)


def test_a_checkpoint_of_one_encoder_loaded_as_another_is_refused(trained):
    _, gru = trained["gru"]
    with pytest.raises(InputError, match="holds a 'gru' encoder, not a 'transformer'"):
        S.query_encoder_from_embeddings(gru, encoder="transformer")
    with pytest.raises(InputError, match="unknown encoder"):
        S.query_encoder_from_embeddings(gru, encoder="rnn")
    assert S.query_encoder_from_embeddings(gru, encoder="gru").net.cfg.encoder == "gru"
    config = json.loads(gru.extra["sequence/config.json"])
    for claimed in ("lstm", "transformer"):
        mixed = Embeddings(vectors=gru.vectors, ids=gru.ids, metric="ip", manifest=dict(gru.manifest),
                           extra={**gru.extra,
                                  "sequence/config.json": json.dumps({**config, "encoder": claimed}).encode()})
        with pytest.raises(ArtifactError, match=f"holds a 'gru' encoder but its config.json says '{claimed}'"):
            S.query_encoder_from_embeddings(mixed)
    state = trained["transformer"][0].net.state_dict()
    with pytest.raises(InputError, match="holds a 'transformer' encoder, not a 'lstm'"):
        S.load_state(_net("lstm", n_items=24, factors=16), state)
    assert [S.state_encoder(trained[e][0].net.state_dict()) for e in ENCODERS] == ENCODERS


# ------------------------------------------------------------------------------------------ command line
def test_cli_trains_a_transformer_that_index_build_and_recommend_next_serve(tmp_path):
    runner = CliRunner()
    write_movielens_folder(tmp_path / "data" / "ml-latest-small", cyclic_log())
    out = tmp_path / "model"
    res = runner.invoke(app, ["train", "sequence", "--data-dir", str(tmp_path / "data"), "--encoder", "transformer",
                              "--n-layers", "2", "--n-heads", "4", "--factors", "16", "--item-dim", "8", "--max-len",
                              "6", "--epochs", "25", "--lr", "0.02", "--batch-size", "64", "--val-fraction", "0",
                              "--dropout", "0", "--buckets", "10", "--horizon-fraction", "0", "--no-progress",
                              "--training", "all_positions", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    emb = Embeddings.load(out)
    p = emb.manifest["params"]
    assert (p["encoder"], p["n_layers"], p["n_heads"], p["training"]) == ("transformer", 2, 4, "all_positions")
    res = runner.invoke(app, ["index", "build", "--embeddings", str(out), "--backend", "hnswlib",
                              "--out", str(tmp_path / "idx")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    answers = []
    for extra in ([], ["--index", str(tmp_path / "idx")]):
        res = runner.invoke(app, ["recommend-next", "110", "111", "112", "--embeddings", str(out), "-k", "5",
                                  "--json", str(tmp_path / "r.json"), *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        answers.append([i["item_id"] for i in json.loads((tmp_path / "r.json").read_text())["items"]])
    assert answers[0] == answers[1] and answers[0][0] == 113
    with pytest.raises(InputError, match="unknown encoder 'rnn'.*'transformer'"):
        runner.invoke(app, ["train", "sequence", "--data-dir", str(tmp_path / "data"), "--encoder", "rnn",
                            "--out", str(tmp_path / "bad")], catch_exceptions=False)
    assert not (tmp_path / "bad").exists()


def test_real_data_slice_all_positions_vs_windows(tmp_path):
    """A slice of ml-latest-small (100 users, their 300 most-rated movies): both modes train to a finite,
    falling loss, and all-positions feeds each event through the encoder once (far fewer sequences)."""
    from annrec.data import load_movielens
    from tests._data_fixtures import require_real_data

    ml = load_movielens("ml-latest-small", data_dir=require_real_data(), progress=False)
    counts = np.bincount(ml.item_idx, minlength=ml.n_items)
    top = np.argsort(-counts)[:300]
    small = ml.subset(np.isin(ml.item_idx, top) & (ml.user_idx < 100))
    hist = S._Histories.from_interactions(small)
    n_windows = len(S.build_windows(hist, 20, 1)[0])
    n_chunks = len(S.build_chunks(hist, 20)[0])
    assert n_chunks * 10 < n_windows
    for enc in ("gru", "transformer"):
        t = S.SequenceTrainer(**tiny_params(encoder=enc, max_len=20, epochs=3, lr=5e-3, n_buckets=20))
        t.fit(small)
        losses = [h["loss"] for h in t.result.history]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0]
