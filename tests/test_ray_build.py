"""Shard builds on Ray Data (groupby(shard).map_groups) write the same sharded index as the in-process build."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest

from annrec.errors import InputError
from annrec.index import load_index
from annrec.index.sharded import build_sharded

pytestmark = pytest.mark.ray


@pytest.fixture()
def ray_tmp():
    pytest.importorskip("ray")
    d = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 108 bytes
    os.environ["ANNREC_RAY_TMP"] = d
    yield d
    del os.environ["ANNREC_RAY_TMP"]
    shutil.rmtree(d, ignore_errors=True)


def test_ray_data_shard_build_equals_the_local_build(tmp_path, ray_tmp):
    import ray

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    ids = np.arange(5000, 5600)
    items = {int(i): {"title": f"item {i}"} for i in ids[::7]}
    kw = dict(shards=3, backend="faiss", factory="Flat", items=items, source={"data_hash": "abc"})
    build_sharded(x, ids, "l2", tmp_path / "local", **kw)
    build_sharded(x, ids, "l2", tmp_path / "ray", executor="ray", **kw)
    assert not ray.is_initialized()  # the local Ray it started is shut down
    a, b = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("local", "ray"))
    assert a == b and a["counts"] == [200, 200, 200]
    la, lb = load_index(tmp_path / "local"), load_index(tmp_path / "ray")
    q = rng.normal(size=(20, 16)).astype(np.float32)
    ia, sa = la.search(q, 10)
    ib, sb = lb.search(q, 10)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)
    exact = ids[np.argsort(((q[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :10]]
    np.testing.assert_array_equal(ib, exact)  # Flat shards: exactly brute force
    assert lb.shards[1].info()["count"] == 200
    got = load_index(tmp_path / "ray" / "shard-000")  # each shard an ordinary index, with its metadata
    assert all(got.items[i] == items[i] for i in got.items) and set(got.items) <= set(items)
    la.close()
    lb.close()


def test_a_bad_parameter_in_a_ray_task_is_the_users_error(tmp_path, ray_tmp):
    x = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float32)
    with pytest.raises(InputError, match="M"):
        build_sharded(x, np.arange(100), "l2", tmp_path / "bad", shards=2, backend="hnswlib", M=-3,
                      executor="ray")
    assert not (tmp_path / "bad").exists()


def test_cli_ray_build_needs_shards(tmp_path, monkeypatch, capsys):
    from _mf_fixtures import run_main
    from _service_fixtures import make_model_dir

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    code, text = run_main(["index", "build", "--embeddings", d / "mf", "--backend", "faiss", "--out",
                           tmp_path / "one", "--ray"], monkeypatch, capsys)
    assert code == 2 and "add --shards" in text and not (tmp_path / "one").exists()
