"""The FastAPI application, built from the settings: lifespan, middleware, error handlers and routers.

>>> from annrec.service import create_app, load_settings
>>> app = create_app(load_settings(model_dir="models", read_key="r" * 16, admin_key="a" * 16))

The routes live in :mod:`annrec.service.routers` (one router per area), their dependencies
(authentication, registry, settings) in :mod:`annrec.service.deps`, the request and response models in
:mod:`annrec.service.schemas` and the error answers in :mod:`annrec.service.errors`. Every route answers
through the served index's one :class:`~annrec.recommend.Recommender`, in a worker thread
(:func:`anyio.to_thread.run_sync`, at most ``max_concurrent_searches`` at once) under the index's
shared lock. Responses are the pydantic models of the route's ``response_model``, serialised to JSON by
pydantic-core. Searches take a fast path past routing and dependency injection that runs the route's
own code (:mod:`annrec.service.fastpath`; ``fast_search: false`` turns it off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

import annrec
from annrec.service.errors import install_error_handlers
from annrec.service.fastpath import SearchFastPath
from annrec.service.metrics import ServiceMetrics
from annrec.service.guard import BrowserGuard
from annrec.service.middleware import ServiceMiddleware
from annrec.service.registry import Registry
from annrec.service.routers import ROUTERS
from annrec.service.settings import ServiceSettings, settings_from_env

log = logging.getLogger("annrec.service")


def _log_start(settings: ServiceSettings, reg: Registry) -> None:
    if settings.insecure_no_auth:
        log.warning("annrec serve is running WITHOUT authentication (--insecure-no-auth): anyone who can reach "
                    "%s:%s can read%s", settings.host, settings.port,
                    ", change and reload the indexes")
    snap = reg.snapshot
    for line in snap.errors:
        log.info("not served: %s", line)
    log.info("serving %d index(es) from %s: %s", len(snap.indexes), settings.model_dir,
             ", ".join(f"{n} ({s.index.backend}, {len(s.index)} items)" for n, s in sorted(snap.indexes.items())))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    """Load the artifacts (unless a loaded registry was given), serve, then snapshot the indexes with logged writes."""
    settings: ServiceSettings = app.state.settings
    reg: Registry = app.state.registry
    app.state.search_limiter = anyio.CapacityLimiter(settings.max_concurrent_searches)
    app.state.batcher = None
    if settings.search_batching:
        from annrec.service.batching import SearchBatcher

        app.state.batcher = SearchBatcher(app.state.search_limiter, max_batch=settings.max_search_batch,
                                          max_in_flight=max(1, os.cpu_count() or 1),
                                          on_batch=app.state.metrics.on_batch)
    if not reg.snapshot.indexes:
        await anyio.to_thread.run_sync(reg.load)
    reg.last_reload_token = reg.read_token()
    _log_start(settings, reg)
    app.state.ready = True
    poller = None
    if settings.workers > 1 and reg.token_file() is not None:
        poller = asyncio.create_task(_poll_reloads(reg, app.state.metrics))
    try:
        yield
    finally:
        app.state.ready = False
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await anyio.to_thread.run_sync(reg.close)


def create_app(settings: ServiceSettings | None = None, registry: Registry | None = None) -> FastAPI:
    """Build the FastAPI app. Artifacts load in the lifespan start-up (``TestClient(app)`` as a context
    manager, or uvicorn), unless a loaded ``registry`` is passed.

    Args:
        settings: resolved settings (default: :func:`~annrec.service.settings.settings_from_env`).
        registry: an already loaded registry (tests); default: one over ``settings.model_dir``.
    """
    settings = settings or settings_from_env()
    holder: dict[str, Registry] = {}
    metrics = ServiceMetrics(lambda: holder["r"].snapshot if "r" in holder else None)
    reg = registry or Registry(settings, on_save=metrics.on_save)
    if reg.on_save is None:
        reg.on_save = metrics.on_save
    holder["r"] = reg
    app = FastAPIOffline(  # /docs and /redoc with their assets from the installed package, no CDN
        title="annrec", version=annrec.__version__, lifespan=lifespan, strict_content_type=False,
        summary="Vector search and recommendations over annrec indexes (FAISS, hnswlib).",
        description="Send the read key (reads) or the admin key (writes, reload) in the `X-API-Key` header. "
                    "Errors are `{error, message, details}`; bad input is always a 4xx. Answers that list "
                    "items call them `hits`: `{id, score, metadata}`.",
    )
    app.state.settings = settings
    app.state.registry = reg
    app.state.metrics = metrics
    app.state.ready = False
    if settings.fast_search:
        app.add_middleware(SearchFastPath, fastapi_app=app)  # inside ServiceMiddleware: body limit, metrics
    app.add_middleware(BrowserGuard, settings=settings)  # Host, Origin, JSON bodies (annrec.service.guard)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"])
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


async def _poll_reloads(reg: Registry, metrics: ServiceMetrics) -> None:
    """With several workers: reload when another worker published a new reload token."""
    while True:
        await asyncio.sleep(reg.settings.reload_poll_s)
        token = await anyio.to_thread.run_sync(reg.read_token)
        if token is not None and token != reg.last_reload_token:
            reg.last_reload_token = token
            try:
                await anyio.to_thread.run_sync(reg.reload)
                metrics.reloads.labels("ok").inc()
            except Exception as e:  # noqa: BLE001 - keep serving the old snapshot
                metrics.reloads.labels("failed").inc()
                log.error("reload requested by another worker failed: %s", e)


def app_from_env() -> FastAPI:
    """uvicorn factory (``annrec.service.app:app_from_env``): settings from ``$ANNREC_SERVICE_SETTINGS_JSON``."""
    settings = settings_from_env()
    if not log.handlers:  # uvicorn configures its own loggers only
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     annrec: %(message)s"))
        log.addHandler(handler)
        log.setLevel(settings.log_level.upper())
        log.propagate = False
    return create_app(settings)
