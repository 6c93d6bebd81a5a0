"""Dynamic batching of served searches: coalesced under load, no wait when idle, per-request errors, same answers."""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
import httpx
import numpy as np
from _service_fixtures import ADMIN_KEY, DIM, READ_KEY, ThreadServer, make_model_dir

from annrec.service import create_app
from annrec.service.batching import SearchBatcher
from annrec.service.settings import load_settings

RH = {"X-API-Key": READ_KEY}


def test_an_idle_batcher_runs_at_once_and_a_busy_one_coalesces():
    sizes: list[int] = []

    def run(items):
        sizes.append(len(items))
        time.sleep(0.05)  # a batch in flight: what arrives meanwhile waits for the next one
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    async def main():
        b = SearchBatcher(anyio.CapacityLimiter(4), max_batch=64, max_in_flight=1)
        t0 = time.perf_counter()
        assert await b.submit(("k",), 7, run) == 70
        alone = time.perf_counter() - t0
        results = await asyncio.gather(*(b.submit(("k",), i, run) for i in range(10)), return_exceptions=True)
        return alone, results, b

    alone, results, b = asyncio.run(main())
    assert alone < 0.5 and sizes[0] == 1  # idle: dispatched at once, alone
    assert sizes[1:] == [1, 9]            # the first of the ten went at once; the nine that waited went together
    assert [r for i, r in enumerate(results) if i != 3] == [i * 10 for i in range(10) if i != 3]
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad 3"  # one request's error is its own
    assert b._groups == {}  # nothing left queued


def test_max_batch_and_separate_shapes():
    seen: list[tuple] = []

    def run(items):
        seen.append(tuple(items))
        time.sleep(0.02)
        return items

    async def main():
        b = SearchBatcher(anyio.CapacityLimiter(4), max_batch=4, max_in_flight=1)
        return await asyncio.gather(*(b.submit(("k", i % 2), i, run) for i in range(12)))

    assert asyncio.run(main()) == list(range(12))
    assert all(len(batch) <= 4 for batch in seen)
    assert all(len({i % 2 for i in batch}) == 1 for batch in seen)  # shapes (k, params, ...) never mix


def _hits(r):
    assert r.status_code == 200, r.text
    return [(h["id"], round(h["score"], 4)) for h in r.json()["hits"]]


def test_served_answers_are_the_same_batched_or_not_and_bad_requests_fail_alone(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    queries = np.random.default_rng(2).normal(size=(48, DIM)).round(4).tolist()
    answers = {}
    for batching in (False, True):
        app = create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY, search_batching=batching))
        out: dict = {}
        errors: list = []
        with ThreadServer(app) as srv:
            def client(rows):
                with httpx.Client(base_url=srv.url, timeout=30) as c:
                    for j in rows:
                        body = {"vector": queries[j], "k": 5} if j != 17 else {"vector": queries[j][:3], "k": 5}
                        for index in ("mf-hnsw", "mf-ivf"):
                            r = c.post(f"/v1/indexes/{index}/search", headers=RH, json=body)
                            if j == 17:
                                errors.append((r.status_code, r.json()["message"]))
                            else:
                                out[(index, j)] = _hits(r)

            threads = [threading.Thread(target=client, args=(range(t, 48, 8),)) for t in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            metrics = httpx.get(srv.url + "/metrics", headers=RH).text
        assert errors == [(422, errors[0][1])] * 2 and "dimension 3" in errors[0][1]
        answers[batching] = out
        if batching:
            assert "annrec_search_batch_size_count" in metrics
            count = float(next(line.split()[-1] for line in metrics.splitlines()
                               if line.startswith("annrec_search_batch_size_count")))
            assert 0 < count <= 2 * 48  # every single-vector search went through the batcher
    assert answers[True] == answers[False] and len(answers[True]) == 2 * 47


def test_user_recommendations_and_similar_items_share_batches_and_keep_their_answers(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    paths = [f"/v1/users/{u}/recommendations?k=6&index=mf-hnsw" for u in range(1, 41)] + \
        [f"/v1/indexes/mf-ivf/items/{1000 + i}/similar?k=4" for i in range(0, 320, 8)] + \
        ["/v1/users/999999/recommendations?index=mf-hnsw"]  # unknown user: its own 404
    answers = {}
    for batching in (False, True):
        app = create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY, search_batching=batching))
        got: dict = {}
        with ThreadServer(app) as srv:
            def client(mine):
                with httpx.Client(base_url=srv.url, timeout=30) as c:
                    for p in mine:
                        r = c.get(p, headers=RH)
                        got[p] = (r.status_code, r.json())

            threads = [threading.Thread(target=client, args=(paths[t::8],)) for t in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            batches = [line for line in httpx.get(srv.url + "/metrics", headers=RH).text.splitlines()
                       if line.startswith("annrec_search_batch_size_count")]
        answers[batching] = got
        assert got["/v1/users/999999/recommendations?index=mf-hnsw"][0] == 404
        assert sum(code == 200 for code, _ in got.values()) == len(paths) - 1
        if batching:
            assert batches and 0 < float(batches[0].split()[-1]) <= len(paths)
    assert answers[True] == answers[False]
