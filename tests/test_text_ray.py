"""Batch text embedding on Ray Data (map_batches over model actors) gives the vectors of the in-process encoder."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

from annrec.errors import InputError
from annrec.train.text import TextTrainer

from _text_fixtures import minilm_path, movie_items, text_threads  # noqa: F401  (fixtures)

pytestmark = pytest.mark.ray


def test_ray_encoding_equals_local_encoding_in_order(minilm_path, tmp_path):
    pytest.importorskip("ray")
    import ray

    items = movie_items()
    local = TextTrainer(minilm_path, batch_size=8, device="cpu", use_cache=False).fit(items).to_embeddings()
    ray_tmp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 108 bytes
    os.environ["ANNREC_RAY_TMP"] = ray_tmp
    try:
        trainer = TextTrainer(minilm_path, batch_size=8, device="cpu", cache_dir=tmp_path / "cache",
                              executor="ray", num_threads=1)
        emb = trainer.fit(items).to_embeddings()
    finally:
        del os.environ["ANNREC_RAY_TMP"]
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not ray.is_initialized()
    assert emb.ids.tolist() == local.ids.tolist() == items.index.tolist()
    np.testing.assert_allclose(emb.vectors, local.vectors, atol=1e-5)
    f = emb.manifest["figures"]
    assert f["n_items"] == len(items) and f["n_encoded"] == len(items) and f["n_cached"] == 0
    assert emb.manifest["data_hash"] == local.manifest["data_hash"]


def test_unknown_executor_is_refused(minilm_path):
    with pytest.raises(InputError, match="executor must be 'local' or 'ray'"):
        TextTrainer(minilm_path, executor="spark")
