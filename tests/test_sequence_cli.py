"""``annrec train sequence`` and ``annrec recommend-next`` end to end on a small synthetic MovieLens folder,
plus one slow real-data smoke test on ml-latest-small."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from annrec.cli import app  # noqa: E402
from annrec.embeddings import Embeddings  # noqa: E402
from tests._sequence_fixtures import cyclic_log, write_movielens_folder  # noqa: E402

runner = CliRunner()

TINY = ["--factors", "16", "--item-dim", "8", "--max-len", "6", "--horizon", "1", "--epochs", "12", "--lr", "0.02",
        "--batch-size", "64", "--val-fraction", "0", "--dropout", "0", "--buckets", "10", "--no-progress"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqcli")
    write_movielens_folder(root / "data" / "ml-latest-small", cyclic_log())
    out = root / "model"
    res = runner.invoke(app, ["train", "sequence", "--data-dir", str(root / "data"), *TINY, "--out", str(out),
                              "--json", str(root / "train.json")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def test_train_writes_an_ip_artifact_and_a_report(model_dir):
    emb = Embeddings.load(model_dir)
    assert emb.metric == "ip" and emb.manifest["trainer"] == "sequence" and emb.dim == 17
    assert emb.items[105]["title"] == "Movie 105 (2000)"
    report = json.loads((model_dir.parent / "train.json").read_text())
    assert report["command"] == "train sequence" and report["params"]["max_len"] == 6
    losses = [h["loss"] for h in report["history"]]
    assert len(losses) == 12 and losses[-1] < losses[0]  # training lowers the next-item loss


def test_recommend_next_prints_titles(model_dir):
    res = runner.invoke(app, ["recommend-next", "105", "106", "107", "--embeddings", str(model_dir), "-k", "3",
                              "--timestamps", "1500000000,1500000060,1500000120", "--json",
                              str(model_dir.parent / "next.json")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Movie 108 (2000)" in res.output.splitlines()[0]
    got = json.loads((model_dir.parent / "next.json").read_text())
    assert [i["item_id"] for i in got["items"]][0] == 108 and got["warnings"] == []


def test_recommend_next_through_a_built_index_agrees_with_exact(model_dir, tmp_path):
    res = runner.invoke(app, ["index", "build", "--embeddings", str(model_dir), "--backend", "hnswlib",
                              "--out", str(tmp_path / "idx")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    outs = []
    for extra in ([], ["--index", str(tmp_path / "idx")]):
        res = runner.invoke(app, ["recommend-next", "110", "111", "--embeddings", str(model_dir), "-k", "5",
                                  "--json", str(tmp_path / "r.json"), *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outs.append([i["item_id"] for i in json.loads((tmp_path / "r.json").read_text())["items"]])
    assert outs[0] == outs[1] and outs[0][0] == 112


def test_recommend_next_warns_about_unknown_ids(model_dir):
    res = runner.invoke(app, ["recommend-next", "105", "424242", "--embeddings", str(model_dir), "-k", "2"])
    assert res.exit_code == 0 and "warning" in res.output and "424242" in res.output


@pytest.mark.parametrize("args, match", [
    (["424242"], "none of the 1 item ids"),
    (["105", "106", "--timestamps", "1500000060,1500000000"], "out of order"),
    (["105", "--timestamps", "x"], "integers"),
    (["105", "-k", "0"], "k must be"),
])
def test_recommend_next_bad_input_is_one_clear_error(model_dir, args, match, capsys, monkeypatch):
    from annrec.cli import main

    monkeypatch.setattr(sys, "argv", ["annrec", "recommend-next", *args, "--embeddings", str(model_dir)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    out = capsys.readouterr().out
    assert "error:" in out and match in out


def test_train_rejects_max_len_zero(tmp_path):
    from annrec.errors import InputError

    with pytest.raises(InputError, match="max_len"):
        runner.invoke(app, ["train", "sequence", "--max-len", "0", "--out", str(tmp_path / "m")],
                      catch_exceptions=False)
    assert not (tmp_path / "m").exists()


def _write_log_csv(path, log) -> None:
    lines = ["uid,sku,when"]  # non-default column names, ISO-8601 timestamps
    import datetime as dt

    for u, i, t in zip(log.user_ids[log.user_idx], log.item_ids[log.item_idx], log.timestamp):
        lines.append(f"u{u},{i},{dt.datetime.fromtimestamp(int(t), dt.UTC).isoformat()}")
    path.write_text("\n".join(lines) + "\n")


def test_train_on_an_interaction_log_file_learns_the_order(tmp_path):
    """--ratings with named columns and ISO timestamps: the artifact predicts the cyclic successor."""
    _write_log_csv(tmp_path / "log.csv", cyclic_log())
    res = runner.invoke(app, ["train", "sequence", "--ratings", str(tmp_path / "log.csv"), "--user-col", "uid",
                              "--item-col", "sku", "--timestamp-col", "when", *TINY, "--out", str(tmp_path / "m")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["recommend-next", "110", "111", "112", "--embeddings", str(tmp_path / "m"), "-k", "1",
                              "--json", str(tmp_path / "n.json")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "n.json").read_text())["items"][0]["item_id"] == 113


def test_train_on_a_log_file_without_timestamp_col_is_refused(tmp_path):
    from annrec.errors import InputError

    _write_log_csv(tmp_path / "log.csv", cyclic_log())
    with pytest.raises(InputError, match="pass --timestamp-col"):
        runner.invoke(app, ["train", "sequence", "--ratings", str(tmp_path / "log.csv"), "--user-col", "uid",
                            "--item-col", "sku", *TINY, "--out", str(tmp_path / "m")], catch_exceptions=False)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_real_data_smoke(tmp_path):
    """A short training (2 epochs of 20 windows per user) on ml-latest-small's temporal split: a sane artifact and
    Recall@10 clearly above chance (popularity reaches 0.082, the full model ~0.15: bench/sequence_eval.py)."""
    from tests._data_fixtures import require_real_data

    root = require_real_data()
    res = runner.invoke(app, ["train", "sequence", "--data-dir", str(root), "--eval", "--factors", "32",
                              "--item-dim", "32", "--max-windows-per-user", "20", "--epochs", "2",
                              "--val-fraction", "0", "--no-progress", "--out", str(tmp_path / "m"),
                              "--json", str(tmp_path / "r.json")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["topn"]["users"] == 610 and report["topn"]["recall@10"] > 0.05
    emb = Embeddings.load(tmp_path / "m")
    assert len(emb) == 9724 and np.isfinite(emb.vectors).all()
    res = runner.invoke(app, ["recommend-next", "1", "260", "1196", "--embeddings", str(tmp_path / "m"), "-k", "3"],
                        catch_exceptions=False)
    assert res.exit_code == 0 and len(res.output.strip().splitlines()) >= 3


def test_http_api_serves_next_items_with_the_real_encoder(model_dir, tmp_path):
    """`annrec index build` + POST /v1/recommendations/next (the service's registry finds our encoder)."""
    pytest.importorskip("fastapi")
    import shutil

    from fastapi.testclient import TestClient

    from annrec.service import create_app, load_settings

    models = tmp_path / "models"
    shutil.copytree(model_dir, models / "seq")
    res = runner.invoke(app, ["index", "build", "--embeddings", str(models / "seq"), "--backend", "hnswlib",
                              "--out", str(models / "seq-hnsw")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    key = "read-key-0123456789"
    api = create_app(load_settings(model_dir=models, read_key=key, admin_key="admin-key-0123456789"))
    with TestClient(api) as c:
        h = {"X-API-Key": key}
        r = c.post("/v1/recommendations/next", json={"items": [105, 106, 107], "k": 3,
                                                      "timestamps": [1500000000, 1500000060, 1500000120]}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["hits"][0]["id"] == 108 and "warnings" not in r.json()
        r = c.post("/v1/recommendations/next", json={"items": [105, 424242], "k": 3}, headers=h)
        assert r.status_code == 200 and any("424242" in w for w in r.json()["warnings"])
        r = c.post("/v1/recommendations/next", json={"items": [424242], "k": 3}, headers=h)
        assert r.status_code == 404 and "424242" in r.json()["message"]
        r = c.post("/v1/recommendations/next", json={"items": [105, 106], "timestamps": [1500000060, 1500000000]},
                   headers=h)
        assert r.status_code == 422 and "out of order" in r.json()["message"]
