"""Dynamic batching of served searches: concurrent single-vector searches of one index become one batch search.

Each search handed to a worker thread costs the event loop a thread hand-off and a wake-up, which at
thousands of requests per second is most of a worker's GIL time. :class:`SearchBatcher` keeps, per index
and per compatible request shape (``k``, query parameters, ``include_metadata``), at most
``max_in_flight`` batches running in worker threads; a request that arrives while they run waits for the
next batch, which takes every request waiting then (up to ``max_batch``). So an idle server answers a
request at once (a batch of one, no added wait), and a loaded one answers many per hand-off: the wait is
bounded by the duration of the batch ahead (TensorFlow Serving's and Triton's dynamic batching, with the
queue delay set by the load instead of a timer).

A batch is one :meth:`annrec.recommend.Recommender.search` over the stacked query vectors (hnswlib and
FAISS answer a batch with the same neighbours as one query at a time); each request is checked on its own
first, so a bad vector fails only its own request, and each answer is serialised separately in the worker
thread. Searches with a filter, allow- or deny-list, or a batch body are not coalesced (they run as before).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np


@dataclass
class _Group:
    waiting: deque = field(default_factory=deque)
    in_flight: int = 0


class SearchBatcher:
    """Coalesces concurrent searches per index and request shape (one per app; event-loop side only).

    Args:
        limiter: the app's search thread limiter (``anyio.CapacityLimiter``).
        max_batch: most requests in one batch. max_in_flight: batches of one group running at once (2 per
            core keeps every core busy while the next batch gathers).
        on_batch: ``(size, queue seconds of its oldest request)`` per batch (metrics).
    """

    def __init__(self, limiter, max_batch: int = 64, max_in_flight: int = 2,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.limiter = limiter
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.on_batch = on_batch
        self._groups: dict[tuple, _Group] = {}

    async def submit(self, key: tuple, item: Any, run: Callable[[list], list]) -> Any:
        """Queue ``item`` under ``key`` and return its answer. ``run(items)`` is called in a worker thread with a
        batch of items of one key and returns one answer per item: a value, or an exception to raise."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
        group.waiting.append((item, fut, time.perf_counter()))
        if group.in_flight < self.max_in_flight:
            self._dispatch(key, group, run)
        answer = await fut
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _dispatch(self, key: tuple, group: _Group, run: Callable[[list], list]) -> None:
        batch = [group.waiting.popleft() for _ in range(min(self.max_batch, len(group.waiting)))]
        if not batch:
            if group.in_flight == 0:
                self._groups.pop(key, None)
            return
        group.in_flight += 1
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - batch[0][2])
        asyncio.get_running_loop().create_task(self._run(key, group, batch, run))

    async def _run(self, key: tuple, group: _Group, batch: list, run: Callable[[list], list]) -> None:
        try:
            answers = await anyio.to_thread.run_sync(run, [item for item, _, _ in batch], limiter=self.limiter)
        except BaseException as e:  # noqa: BLE001 - the whole batch failed: every request gets the error
            answers = [e] * len(batch)
        for (_, fut, _), answer in zip(batch, answers):
            if not fut.done():
                fut.set_result(answer)
        group.in_flight -= 1
        self._dispatch(key, group, run)


def batchable(body) -> bool:
    """A single-vector search without filters (a :class:`~annrec.service.schemas.SearchRequest`): one that
    dynamic batching may coalesce with others."""
    return body.vector is not None and body.filter is None and body.allowed_ids is None and body.denied_ids is None


async def submit_search(batcher: SearchBatcher, srv, body, params: dict | None, threads: int) -> bytes:
    """A :func:`batchable` search answered through ``batcher``, as JSON bytes (the route and the fast path).

    Raises:
        the request's own error (wrong dimension, answer too large, …), as the unbatched search would.
    """
    key = (id(srv), body.k, tuple(sorted(params.items())) if params else None, body.include_metadata)
    return await batcher.submit(key, body, lambda bodies: batch_search(srv, bodies, params, threads))


def batch_search(srv, bodies: list, params: dict | None, threads: int) -> list:
    """One search over the single-vector requests ``bodies`` of one index and shape; their JSON answers (bytes),
    or the error of a request that fails its own checks. Blocking: runs in a worker thread."""
    from annrec.service import schemas as S
    from annrec.service.limits import to_queries
    from annrec.service.routers.indexes import hit_list

    answers: list = [None] * len(bodies)
    rows, good = [], []
    for i, body in enumerate(bodies):
        try:
            rows.append(to_queries([body.vector], srv.index.dim)[0])
            good.append(i)
        except Exception as e:  # noqa: BLE001 - this request's own error (wrong dimension, not finite)
            answers[i] = e
    if good:
        first = bodies[good[0]]
        with srv.rw.read():
            lists = srv.recommender.search(np.stack(rows), first.k, params=params, threads=threads,
                                           include_metadata=first.include_metadata)
        from annrec.service.limits import check_response_size

        for i, hits in zip(good, lists):
            body = bodies[i]
            try:
                check_response_size(srv.settings, [hits], body.include_metadata)
            except Exception as e:  # noqa: BLE001 - this request's own answer is too large
                answers[i] = e
                continue
            model = S.SearchResponse(index=srv.name, k=body.k, hits=hit_list(hits, body.include_metadata))
            answers[i] = model.__pydantic_serializer__.to_json(model)
    return answers
