"""Index shards in Ray actors, with per-shard dynamic batching (``load_index(path, backend="ray")``).

One actor per shard loads its ordinary index folder from storage every node can read (the folder on disk
is the source of truth, never Ray's object store). Actors restart by themselves (``max_restarts=-1``) and
reload their folder; searches are retried across a restart (``max_task_retries=-1``), writes are not and
fail with :class:`ShardUnavailableError` (the service answers 503) while a shard is down.

One Ray call costs ~1 ms of CPU against 0.2–0.4 ms for a search (docs/scale-out.md), so a shard is never
called once per query: concurrent searches are queued per shard and sent as one ``search_many`` call
per tick (:class:`RayShard`; at most ``batch_wait_ms`` of waiting, at most ``max_batch`` requests).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from annrec.errors import AnnrecError


class ShardUnavailableError(AnnrecError):
    """A shard actor is restarting or gone: a write cannot be done now (retry after the restart)."""


def init_ray(address: str | None = None, *, num_cpus: int | None = None, temp_dir: str | None = None) -> None:
    """Start or join Ray once: ``address=None`` starts a local Ray on 127.0.0.1 (dashboard off, temporary files
    under ``temp_dir`` or ``$ANNREC_RAY_TMP``); otherwise join the cluster at ``address`` (``"auto"``, ``ray://…``)."""
    if address is None:  # Ray's single-machine mode: every Ray process talks over 127.0.0.1 only
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    if address is None:
        with contextlib.suppress(ImportError, AttributeError):  # ray imported before the variable was set
            import ray._private.ray_constants as ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
        tmp = temp_dir or os.environ.get("ANNREC_RAY_TMP")
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 _temp_dir=tmp, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)


@contextlib.contextmanager
def ray_session(address: str | None = None):
    """Ray for one offline job (shard builds, batch embedding, recommend-all): start a local Ray or join
    ``address`` (:func:`init_ray`), raise an error inside a task or actor as the error itself (an
    :class:`~annrec.errors.InputError` stays one, not a ``RayTaskError``), and shut down a local Ray it
    started.

    Raises:
        ImportError: Ray is not installed (``pip install -e ".[ray]"``).
    """
    import ray

    started = not ray.is_initialized()
    init_ray(address)
    try:
        yield ray
    except ray.exceptions.RayTaskError as e:
        cause = e.as_instanceof_cause()
        inner = getattr(cause, "cause", None)
        raise (inner if isinstance(inner, Exception) else cause) from None
    finally:
        if started and address is None:
            ray.shutdown()


def process_memory() -> dict[str, int | None]:
    """This process's memory in bytes, from ``/proc/self/smaps_rollup`` (Linux; ``None`` elsewhere):
    ``rss_bytes`` (resident set), ``pss_bytes`` (proportional set: shared pages divided among the processes
    that map them) and ``uss_bytes`` (unique set: private pages, what the process adds to the machine — the
    measure of ``psutil.Process.memory_full_info``)."""
    fields = {"Rss": 0, "Pss": 0, "Private_Clean": 0, "Private_Dirty": 0}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in fields:
                fields[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {"rss_bytes": None, "pss_bytes": None, "uss_bytes": None}
    return {"rss_bytes": fields["Rss"], "pss_bytes": fields["Pss"],
            "uss_bytes": fields["Private_Clean"] + fields["Private_Dirty"]}


def _actor_class():
    import ray

    @ray.remote(max_restarts=-1, max_task_retries=-1)
    class ShardActor:
        """One shard: an annrec index loaded from its folder (again after every restart)."""

        def __init__(self, path: str) -> None:
            from annrec.index.sharded import LocalShard

            self.shard = LocalShard(Path(path))

        def search_many(self, requests: list[tuple]) -> list[Any]:
            """Answer ``[(queries, k, params, allowed, denied, threads), ...]``: requests without filters and
            with the same ``k`` and parameters become one matrix search. Errors are returned per request."""
            out: list[Any] = [None] * len(requests)
            groups: dict[tuple, list[int]] = {}
            for i, (q, k, params, allowed, denied, threads) in enumerate(requests):
                if allowed is None and denied is None:
                    groups.setdefault((k, tuple(sorted((params or {}).items())), threads), []).append(i)
                else:
                    out[i] = self._one(q, k, params, allowed, denied, threads)
            for (k, params, threads), rows in groups.items():
                qs = [requests[i][0] for i in rows]
                try:
                    ids, scores = self.shard.search_batch(np.concatenate(qs), k, dict(params) or None, None, None,
                                                          threads)
                except Exception as e:  # noqa: BLE001 - each request gets the error
                    for i in rows:
                        out[i] = e
                    continue
                start = 0
                for i, q in zip(rows, qs):
                    out[i] = (ids[start:start + len(q)], scores[start:start + len(q)])
                    start += len(q)
            return out

        def _one(self, q, k, params, allowed, denied, threads):
            try:
                return self.shard.search_batch(q, k, params, allowed, denied, threads)
            except Exception as e:  # noqa: BLE001
                return e

        @ray.method(max_task_retries=0)
        def add(self, vectors, ids, items):
            self.shard.add(vectors, ids, items)

        @ray.method(max_task_retries=0)
        def remove(self, ids):
            self.shard.remove(ids)

        @ray.method(max_task_retries=0)
        def save(self):
            self.shard.save()

        def info(self):
            import ray

            return {**self.shard.info(), "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                    **process_memory()}

        def reload(self):
            self.shard.reload()

        def get_vector(self, item_id):
            return self.shard.get_vector(item_id)

        def contains(self, ids):
            return self.shard.contains(ids)

        def ids(self):
            return self.shard.ids()

    return ShardActor


class RayShard:
    """The client side of one shard actor: the :class:`~annrec.index.sharded.ShardBackend` protocol, with
    concurrent searches coalesced into one ``search_many`` call per tick."""

    def __init__(self, actor, *, batch_wait_ms: float = 2.0, max_batch: int = 256, min_rows: int = 32) -> None:
        self.actor = actor
        self.batch_wait = batch_wait_ms / 1000.0
        self.max_batch = max_batch
        self.min_rows = min_rows  # a batch of fewer query rows waits up to batch_wait_ms for more requests
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="annrec-ray-batcher")
        self._thread.start()

    def _loop(self) -> None:
        import ray

        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            rows = len(first[0][0])
            try:
                while len(batch) < self.max_batch:
                    # what queued during the previous call joins at once; waiting for more only pays while the
                    # batch is small (a request that is itself a batch of queries goes out without delay)
                    item = self._queue.get(timeout=self.batch_wait) if rows < self.min_rows else \
                        self._queue.get_nowait()
                    if item is None:
                        self._queue.put(None)
                        break
                    batch.append(item)
                    rows += len(item[0][0])
            except queue.Empty:
                pass
            try:
                answers = ray.get(self.actor.search_many.remote([req for req, _ in batch]))
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                answers = [e] * len(batch)
            for (_, fut), ans in zip(batch, answers):
                if isinstance(ans, BaseException):
                    fut.set_exception(ans)
                else:
                    fut.set_result(ans)

    def search_batch(self, queries, k, params, allowed_ids, denied_ids, threads):
        fut: Future = Future()
        self._queue.put(((np.ascontiguousarray(queries), k, params, allowed_ids, denied_ids, threads), fut))
        return fut.result()

    def _call(self, method: str, *args, write: bool = False):
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        try:
            return ray.get(getattr(self.actor, method).remote(*args))
        except (RayActorError, ActorDiedError, ActorUnavailableError) as e:
            if write:
                raise ShardUnavailableError(f"a shard is restarting ({type(e).__name__}): the write was not applied; "
                                            f"retry in a few seconds") from None
            raise

    def add(self, vectors, ids, items):
        self._call("add", vectors, ids, items, write=True)

    def remove(self, ids):
        self._call("remove", ids, write=True)

    def save(self):
        self._call("save", write=True)

    def info(self):
        return self._call("info")

    def reload(self):
        self._call("reload")

    def get_vector(self, item_id):
        return self._call("get_vector", item_id)

    def contains(self, ids):
        return self._call("contains", ids)

    def ids(self):
        return self._call("ids")

    def close(self) -> None:
        self._queue.put(None)


def ray_shards(folders: list[Path], *, address: str | None = None, num_cpus: float = 0.5,
               batch_wait_ms: float = 2.0, memory_overhead_mb: int = 100) -> list[RayShard]:
    """One actor per shard folder (``SPREAD`` over the nodes, ``num_cpus`` each, ``memory`` = folder size +
    ``memory_overhead_mb``), wrapped as :class:`RayShard` clients; Ray is started or joined first."""
    init_ray(address)
    cls = _actor_class()
    shards = []
    for folder in folders:
        size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        actor = cls.options(num_cpus=num_cpus, memory=int(size + memory_overhead_mb * 2**20),
                            scheduling_strategy="SPREAD").remote(str(Path(folder).resolve()))
        shards.append(RayShard(actor, batch_wait_ms=batch_wait_ms))
    return shards
