"""TextTrainer: item texts, fit -> Embeddings, query encoder, empty text, artifact round trip."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.embeddings import Embeddings
from annrec.errors import ArtifactError, DataError, InputError
from annrec.train.text import (TextEncoder, TextTrainer, build_item_texts, format_item_text,
                               load_query_encoder)

from _text_fixtures import encode_spy, minilm_path, movie_items, text_threads  # noqa: F401  (fixtures)


# ---------------------------------------------------------------------------------------------- item text
def test_format_item_text_rules():
    rec = {"title": "  Toy   Story (1995) ", "genres": ["Animation", "Adventure"],
           "tags": ["pixar", "Fun", "fun", "PIXAR", "pixar", "", None, "cgi"]}
    assert format_item_text(rec) == "Toy Story (1995). Genres: Animation, Adventure. Tags: pixar, Fun, cgi"
    assert format_item_text(rec, ("tags", "title"), max_list_values=1) == "Tags: pixar. Toy Story (1995)"
    assert format_item_text({"title": "X", "genres": ["(no genres listed)"], "tags": []}) == "X"
    assert format_item_text({"title": None, "genres": [], "tags": []}) == ""
    assert format_item_text({"title": float("nan"), "plot_summary": "a b"}, ("title", "plot_summary")) \
        == "Plot summary: a b"


def test_build_item_texts_deterministic_and_checked():
    items = movie_items()
    a = build_item_texts(items, "title,genres,tags")
    b = build_item_texts(items.iloc[::-1], ["title", "genres", "tags"]).loc[a.index]
    assert a.equals(b) and list(a.index) == list(items.index)
    assert a.loc[1] == "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun"
    assert build_item_texts(items, "title").loc[6] == "Heat (1995)"
    with pytest.raises(InputError, match="plot.*available: title, genres, tags"):
        build_item_texts(items, "title,plot")
    with pytest.raises(InputError, match="duplicates"):
        build_item_texts(items, "title,title")
    with pytest.raises(InputError):
        build_item_texts(items, " , ")
    with pytest.raises(DataError, match="empty"):
        build_item_texts(items.iloc[:0], "title")


# ---------------------------------------------------------------------------------------------- fit
@pytest.fixture(scope="module")
def fitted(minilm_path, tmp_path_factory):
    trainer = TextTrainer(minilm_path, batch_size=8, device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    return trainer, trainer.fit(movie_items(), dataset="movies20").to_embeddings()


def test_fit_shapes_ids_metric_manifest(fitted, minilm_path):
    trainer, emb = fitted
    items = movie_items()
    assert isinstance(emb, Embeddings) and emb.metric == "cosine"
    assert emb.vectors.shape == (len(items), 384) and emb.vectors.dtype == np.float32
    assert emb.ids.tolist() == items.index.tolist() and emb.ids.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    assert emb.items[296] == {"title": "Pulp Fiction (1994)", "genres": ["Comedy", "Crime", "Drama", "Thriller"]}
    m = emb.manifest
    assert m["trainer"] == "text" and m["dataset"] == "movies20"
    assert m["encoder"]["fields"] == ["title", "genres", "tags"] and m["encoder"]["normalize"] is True
    assert m["encoder"]["model"] == minilm_path and m["encoder"]["dim"] == 384
    assert m["figures"]["n_items"] == len(items) and m["figures"]["n_skipped_empty"] == 0
    assert len(m["data_hash"]) == 64


def test_title_query_finds_that_movie_first(fitted):
    trainer, emb = fitted
    titles = [emb.items[i]["title"] for i in emb.ids.tolist()]
    q = trainer.encode_queries(titles)
    assert q.shape == (len(titles), 384) and q.dtype == np.float32
    best = emb.ids[np.argmax(q @ emb.vectors.T, axis=1)]
    assert best.tolist() == emb.ids.tolist()
    # a free-text query lands on a sensible movie
    space = trainer.encode_queries(["space opera with jedi"])
    assert emb.ids[np.argmax(space @ emb.vectors.T)] in (260, 1196)


def test_fit_takes_interactions(minilm_path, tmp_path):
    from annrec.data import Interactions

    items = movie_items()
    inter = Interactions.from_arrays([0, 0, 1], [1, 6, 1], name="tiny", items_meta=items)
    emb = TextTrainer(minilm_path, fields="title", device="cpu", cache_dir=tmp_path).fit(inter).to_embeddings()
    assert emb.manifest["dataset"] == "tiny" and len(emb) == len(items)  # unrated items are encoded too
    with pytest.raises(DataError, match="no item metadata"):
        TextTrainer(minilm_path, use_cache=False).fit(Interactions.from_arrays([0], [1]))
    with pytest.raises(InputError):
        TextTrainer(minilm_path, use_cache=False).fit([1, 2, 3])


def test_refit_encodes_only_changed_items(encode_spy, minilm_path, tmp_path):
    items = movie_items()
    trainer = TextTrainer(minilm_path, device="cpu", cache_dir=tmp_path)
    trainer.fit(items)
    assert encode_spy.n_texts == len(items)
    encode_spy.reset()
    emb = trainer.fit(items).to_embeddings()
    assert encode_spy.n_texts == 0 and emb.manifest["figures"]["n_cached"] == len(items)
    items.loc[6, "tags"] = ["al pacino", "los angeles"]
    emb = trainer.fit(items).to_embeddings()
    assert encode_spy.calls == [["Heat (1995). Genres: Action, Crime, Thriller. Tags: al pacino, los angeles"]]
    assert emb.manifest["figures"]["n_encoded"] == 1


def test_empty_item_text_error_or_skip(minilm_path, tmp_path):
    items = movie_items()
    items.loc[6, "title"] = "   "
    items.loc[47, "title"] = None
    with pytest.raises(DataError, match=r"2 item\(s\) have empty text.*6, 47.*--skip-empty"):
        TextTrainer(minilm_path, fields="title", use_cache=False).fit(items)
    emb = TextTrainer(minilm_path, fields="title", on_empty="skip", device="cpu", cache_dir=tmp_path).fit(items).to_embeddings()
    assert emb.manifest["figures"]["n_skipped_empty"] == 2 and len(emb) == len(items) - 2
    assert 6 not in emb.ids.tolist() and 47 not in emb.ids.tolist()
    # with more fields the same items have text again
    assert len(TextTrainer(minilm_path, fields="title,tags", device="cpu", cache_dir=tmp_path).fit(items).to_embeddings()) == 20
    items["title"] = ""
    with pytest.raises(DataError, match="every item has empty text"):
        TextTrainer(minilm_path, fields="title", on_empty="skip", use_cache=False).fit(items)
    with pytest.raises(InputError, match="on_empty"):
        TextTrainer(minilm_path, on_empty="drop")


def test_artifact_round_trip_and_query_encoder(fitted, tmp_path):
    trainer, emb = fitted
    out = emb.save(tmp_path / "text-emb")
    back = Embeddings.load(out)
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    assert back.ids.tolist() == emb.ids.tolist() and back.metric == "cosine"
    assert back.items[1]["title"] == "Toy Story (1995)"
    assert back.manifest["encoder"] == emb.manifest["encoder"]
    qe = load_query_encoder(out, device="cpu")
    assert isinstance(qe, TextEncoder) and qe.normalize and qe.max_seq_length == trainer.encoder_.max_seq_length
    np.testing.assert_allclose(qe.encode_queries(["Heat (1995)"]), trainer.encode_queries(["Heat (1995)"]), atol=1e-6)
    assert back.ids[np.argmax(qe.encode_queries("Heat (1995)") @ back.vectors.T)] == 6


def test_query_encoder_refuses_another_model(fitted):
    _, emb = fitted
    bad = {**emb.manifest, "encoder": {**emb.manifest["encoder"], "model_fingerprint": "0" * 64}}
    with pytest.raises(ArtifactError, match="not the one the artifact was made with"):
        load_query_encoder(bad, device="cpu")
    with pytest.raises(ArtifactError, match="no text encoder"):
        load_query_encoder({"trainer": "als"})


@pytest.mark.slow
def test_real_movielens_items(minilm_path, tmp_path, monkeypatch):
    """ml-latest-small through annrec.data.load_movielens: ids are movieIds, texts come from the real tags."""
    import os

    if not os.environ.get("ANNREC_DATA_DIR"):
        pytest.skip("set ANNREC_DATA_DIR to the folder holding ml-latest-small")
    from annrec.data import load_movielens

    try:
        ml = load_movielens("ml-latest-small", download=False)
    except FileNotFoundError:
        pytest.skip("ml-latest-small is not available locally")
    texts = build_item_texts(ml.items)
    assert len(texts) == 9742 and (texts != "").all()
    assert texts.loc[1].startswith("Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: ")
    sub = ml.items.loc[[1, 2, 296, 318, 356, 2571, 4993, 79132]]
    emb = TextTrainer(minilm_path, device="cpu", cache_dir=tmp_path).fit(sub).to_embeddings()
    assert emb.ids.tolist() == sub.index.tolist()
    q = TextTrainer(minilm_path, use_cache=False, device="cpu").encode_queries(sub["title"].tolist())
    assert emb.ids[np.argmax(q @ emb.vectors.T, axis=1)].tolist() == sub.index.tolist()


def test_service_query_encoder_hook(fitted):
    """The API's hook finds this module's encoder and gets one unit (1, dim) vector per query."""
    from annrec.train.text import query_encoder_from_embeddings

    _, emb = fitted
    enc = query_encoder_from_embeddings(emb)
    assert isinstance(enc, TextEncoder) and enc.use_cache is False and enc.show_progress_bar is False
    assert query_encoder_from_embeddings(Embeddings(emb.vectors, emb.ids, "cosine", manifest={})) is None
    registry = pytest.importorskip("annrec.service.registry")
    kind, enc = registry.query_encoder(emb)
    vec, warnings = registry.encode_with(enc, ["Heat (1995)"])
    assert kind == "text" and vec.shape == (1, emb.dim) and warnings == []
    assert emb.ids[np.argmax(vec @ emb.vectors.T)] == 6
