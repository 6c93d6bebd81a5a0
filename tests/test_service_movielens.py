"""The API over real data: a truncated-SVD model of MovieLens ml-latest-small served through an HNSW index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from _service_fixtures import ADMIN_KEY, AH, READ_KEY, RH
from annrec.embeddings import Embeddings
from annrec.index import build_index
from annrec.service import create_app, load_settings

ML = Path(os.environ.get("ANNREC_DATA_DIR", "")) / "ml-latest-small"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (ML / "ratings.csv").exists(), reason="ml-latest-small not available")]


@pytest.fixture(scope="module")
def ml_model_dir(tmp_path_factory):
    """MF by truncated SVD (32 factors) of the user x movie rating matrix: items V·√S, users U·√S, metric ip."""
    import pandas as pd
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    ratings = pd.read_csv(ML / "ratings.csv")
    movies = pd.read_csv(ML / "movies.csv").set_index("movieId")
    users, u = np.unique(ratings.userId.to_numpy(), return_inverse=True)
    items, i = np.unique(ratings.movieId.to_numpy(), return_inverse=True)
    r = sp.csr_matrix((ratings.rating.to_numpy(np.float32), (u, i)), shape=(len(users), len(items)))
    U, S, Vt = svds(r, k=32, random_state=0)
    root = np.sqrt(S)
    seen = r.copy()
    seen.data[:] = 1
    meta = {int(m): {"title": movies.loc[m, "title"], "genres": movies.loc[m, "genres"].split("|")} for m in items}
    emb = Embeddings((Vt.T * root).astype(np.float32), items, "ip", queries=(U * root).astype(np.float32),
                     query_ids=users, items=meta, seen=seen, manifest={"trainer": "mf", "params": {"factors": 32}})
    d = tmp_path_factory.mktemp("ml") / "models"
    emb.save(d / "mf")
    idx = build_index(emb.vectors, emb.ids, "ip", backend="hnswlib", M=16, ef_construction=200, ef=100)
    idx.source = {"embeddings": str((d / "mf").resolve()), "embeddings_name": "mf"}
    idx.save(d / "mf-hnsw")
    return d


def test_movielens_recommendations_and_similar_items(ml_model_dir):
    emb = Embeddings.load(ml_model_dir / "mf")
    app = create_app(load_settings(model_dir=ml_model_dir, read_key=READ_KEY, admin_key=ADMIN_KEY))
    with TestClient(app) as c:
        info = c.get("/v1/indexes/mf-hnsw", headers=RH).json()
        assert info["count"] == len(emb) == 9724 and info["n_users"] == 610
        r = c.get("/v1/users/1/recommendations?k=10", headers=RH)
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        seen = set(emb.seen_ids(1).tolist())
        assert len(hits) == 10 and not seen & {h["id"] for h in hits}
        assert all(h["metadata"]["title"] for h in hits)
        # exact maximum inner product answer (seen excluded) vs the served HNSW answer
        scores = emb.vectors @ emb.queries[emb.query_row_of(1)]
        exact = [m for m in emb.ids[np.argsort(-scores)].tolist() if m not in seen][:10]
        assert len(set(exact) & {h["id"] for h in hits}) >= 9
        r = c.get("/v1/indexes/mf-hnsw/items/260/similar?k=10", headers=RH)  # Star Wars: Episode IV (1977)
        ids = [h["id"] for h in r.json()["hits"]]
        assert 260 not in ids and {1196, 1210} & set(ids)  # Episode V or VI among its neighbours
        # a new movie placed on top of user 1's taste is recommended right after the upsert
        v = (emb.queries[emb.query_row_of(1)] * 5).tolist()
        r = c.put("/v1/indexes/mf-hnsw/items", headers=AH,
                  json={"items": [{"id": 999999, "vector": v, "metadata": {"title": "Made for user 1 (2025)"}}]})
        assert r.status_code == 200 and r.json()["persisted"]
        top = c.get("/v1/users/1/recommendations?k=1", headers=RH).json()["hits"][0]
        assert top["id"] == 999999 and top["metadata"]["title"] == "Made for user 1 (2025)"
