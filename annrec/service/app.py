"""The FastAPI application: endpoints, authentication, limits, error handling and metrics.

>>> from annrec.service import create_app, load_settings
>>> app = create_app(load_settings(model_dir="models", read_key="r" * 16, admin_key="a" * 16))

Every answer that is not a success is ``{"error": code, "message": ..., "details": [...]}`` with a 4xx
status for bad input (401 no/wrong key, 403 read key on an admin endpoint, 404 unknown index or id,
413 body too large, 400 malformed JSON, 422 invalid values, 409 a write or reload that cannot be done
now). A 500 says only "internal error" (the traceback goes to the server log, never to the client).

Searches run in worker threads (:func:`anyio.to_thread.run_sync`, at most ``max_concurrent_searches``
at once) under the index's shared lock; responses are serialised with orjson in the same thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

import annrec
from annrec._validate import as_matrix, check_k, normalize_ids
from annrec.errors import AnnrecError, ArtifactError, DataNotFoundError, InputError, UnknownIdError
from annrec.service import schemas as S
from annrec.service.metrics import ServiceMetrics
from annrec.service.registry import PersistError, Registry, ServedIndex, encode_with
from annrec.service.settings import ServiceSettings, settings_from_env

log = logging.getLogger("annrec.service")

try:  # orjson is ~5x faster than json for the float-heavy responses; json works too
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
except ImportError:  # pragma: no cover
    import json

    def _default(o: Any) -> Any:
        return o.tolist() if hasattr(o, "tolist") else str(o)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, allow_nan=False, default=_default, separators=(",", ":")).encode()


JSON = "application/json"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type=JSON, headers=headers)


# ----------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answer with a status, a short code and a message for the client."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, details=None, headers=None) -> Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return json_response(body, status, headers)


def _annrec_status(e: AnnrecError) -> tuple[int, str]:
    if isinstance(e, UnknownIdError):
        return 404, "not_found"
    if isinstance(e, PersistError):
        return 503, "persist_failed"
    if isinstance(e, (ArtifactError, DataNotFoundError)):
        return 409, "conflict"
    return 422, "invalid_request"


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return _error(e.status, e.code, e.message, headers=e.headers)

    @app.exception_handler(AnnrecError)
    async def _annrec_error(request: Request, e: AnnrecError):
        status, code = _annrec_status(e)
        return _error(status, code, str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        details, parts = [], []
        status = 422
        for err in e.errors():
            loc = [x for x in err.get("loc", ())]
            msg = str(err.get("msg", "invalid"))
            if err.get("type") == "json_invalid":
                status = 400
                msg = f"request body is not valid JSON ({err.get('ctx', {}).get('error', msg)})"
            details.append({"loc": loc, "msg": msg, "type": err.get("type")})
            where = ".".join(str(x) for x in loc)
            parts.append(f"{where}: {msg}" if where else msg)
        if len(parts) > 5:
            parts = parts[:5] + [f"… and {len(parts) - 5} more"]
        return _error(status, "bad_request" if status == 400 else "invalid_request",
                      "invalid request: " + "; ".join(parts), details[:50])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        code = _STATUS_CODES.get(e.status_code, "error")
        msg = e.detail if isinstance(e.detail, str) else code
        if e.status_code == 404 and msg == "Not Found":
            msg = f"no such endpoint: {request.method} {request.url.path} (GET /docs lists the endpoints)"
        elif e.status_code == 405:
            msg = f"method {request.method} is not allowed on {request.url.path}"
        return _error(e.status_code, code, msg, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, e: Exception):
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal error: the server log has the details")


# ----------------------------------------------------------------------------- ASGI middleware
SEARCH_PREFIX, SEARCH_SUFFIX, SEARCH_ROUTE = "/v1/indexes/", "/search", "/v1/indexes/{name}/search"


class _BodyTooLarge(BaseException):
    """Raised from ``receive`` past the body limit; a BaseException so no body parser turns it into a 400."""


class ServiceMiddleware:
    """Body-size limit (413) and per-route metrics, as plain ASGI (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app, settings: ServiceSettings, metrics: ServiceMetrics, fast_search=None) -> None:
        self.app = app
        self.limit = settings.max_body_bytes
        self.metrics = metrics
        self.fast_search = fast_search

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        started = False
        limit = self.limit

        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    n = int(value)
                except ValueError:
                    n = -1
                if n > limit or n < 0:
                    await self._too_large(send, n)
                    self._observe(scope, 413, t0)
                    return
                break

        received = 0
        if self.fast_search is not None and scope["method"] == "POST" and scope["path"].startswith(SEARCH_PREFIX) \
                and scope["path"].endswith(SEARCH_SUFFIX):
            await self._search(scope, receive, send, t0)
            return

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._too_large(send, received)
                status = 413
        finally:
            self.metrics.in_progress.dec()
            self._observe(scope, status, t0)

    async def _search(self, scope, receive, send, t0: float) -> None:
        """The hot path, ``POST /v1/indexes/{name}/search``, without Starlette routing and dependency injection.

        The body is read (within the limit) and handed to ``fast_search``; a request it does not answer
        (any error: auth, validation, unknown index, …) is replayed to the FastAPI route with the same body, so
        every error answer comes from one place.
        """
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(send, size)
                self._observe(scope, 413, t0, SEARCH_ROUTE)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.metrics.in_progress.inc()
        status = 500
        try:
            data = None
            try:
                data = await self.fast_search(scope, body)
            except Exception:  # noqa: BLE001 - the FastAPI route answers it (and logs a real failure)
                data = None
            if data is not None:
                status = 200
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(data)).encode())]})
                await send({"type": "http.response.body", "body": data})
                return
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            async def tracking_send(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, replay, tracking_send)
        finally:
            self.metrics.in_progress.dec()
            self._observe(scope, status, t0, SEARCH_ROUTE)

    def _observe(self, scope, status: int, t0: float, route_path: str | None = None) -> None:
        if route_path is not None:
            self.metrics.observe(scope.get("method", "?"), route_path, status, time.perf_counter() - t0)
            return
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.metrics.observe(scope.get("method", "?"), path, status, time.perf_counter() - t0)

    async def _too_large(self, send, n: int) -> None:
        what = "of unknown size" if n < 0 else f"of {n} bytes" if n else "too large"
        body = dumps({"error": "payload_too_large",
                      "message": f"request body {what} exceeds the limit of {self.limit} bytes: send fewer "
                                 f"vectors per request (max_body_bytes setting)"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- auth
# One plain dependency per level that reads the headers itself (FastAPI's Security(APIKeyHeader) chains
# cost ~0.1 ms a request); the schemes are declared in the OpenAPI schema by _openapi() below.
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "the read key (reads) or the admin key (everything)"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "the same keys as 'Authorization: Bearer <key>'"},
}
_SECURED = {"security": [{"ApiKey": []}, {"Bearer": []}]}


def _same(given: str, secret) -> bool:
    return secret is not None and hmac.compare_digest(given.encode(), secret.get_secret_value().encode())


def _given_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request sends: ``X-API-Key``, else ``Authorization: Bearer <key>``; ``None`` when absent.

    ``headers``: case-insensitive request headers (``Request.headers`` or ``starlette.datastructures.Headers``).
    """
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization")
    if auth:
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "bearer" and cred.strip():
            return cred.strip()
    return None


def _check_key(settings: ServiceSettings, given: str | None, admin: bool) -> None:
    if settings.insecure_no_auth:
        return
    challenge = {"WWW-Authenticate": 'ApiKey header="X-API-Key", Bearer'}
    if not given:
        raise ApiError(401, "unauthorized", "missing API key: send it in the X-API-Key header (or as "
                                            "'Authorization: Bearer <key>')", challenge)
    if _same(given, settings.admin_key):
        return
    if _same(given, settings.read_key):
        if admin:
            raise ApiError(403, "forbidden", "this endpoint changes the server and needs the admin key; the "
                                             "read key only reads")
        return
    raise ApiError(401, "unauthorized", "wrong API key: check the key you send in X-API-Key", challenge)


async def require_read(request: Request) -> None:
    _check_key(request.app.state.settings, _given_key(request.headers), admin=False)


async def require_admin(request: Request) -> None:
    s = request.app.state.settings
    if not s.insecure_no_auth and s.admin_key is None:
        _check_key(s, _given_key(request.headers), admin=False)  # 401 for no/wrong key first
        raise ApiError(403, "forbidden", "writes and reloads are disabled: the server was started without an "
                                         "admin key (--admin-key)")
    _check_key(s, _given_key(request.headers), admin=True)


async def require_metrics(request: Request) -> None:
    if not request.app.state.settings.metrics_public:
        _check_key(request.app.state.settings, _given_key(request.headers), admin=False)


# ----------------------------------------------------------------------------- request bodies
# Bodies are parsed and validated in one step by pydantic-core's JSON parser (model_validate_json), ~5x
# cheaper than json.loads + validation for a 784-float vector. It also reads the non-standard NaN and
# Infinity tokens some clients send, so those reach the finite-value check and get a 422 that says so.
_BODY_MODELS: dict[str, type] = {}


def _body_spec(model: type, description: str) -> dict:
    _BODY_MODELS[model.__name__] = model
    return {"requestBody": {"required": True, "description": description, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


async def parse_body(request: Request, model: type[BaseModel]):
    """Read and validate a JSON body; a bad one raises RequestValidationError (400 not JSON, 422 invalid)."""
    body = await request.body()
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as e:
        errors = []
        for err in e.errors(include_url=False, include_input=False):
            err = dict(err)
            err["loc"] = ("body", *err.get("loc", ()))
            errors.append(err)
        raise RequestValidationError(errors) from None


# ----------------------------------------------------------------------------- request helpers
def _state(request: Request):
    return request.app.state


def _check_limits(settings: ServiceSettings, *, k: int | None = None, batch: int | None = None,
                  ids: dict[str, list | None] | None = None, ef: int | None = None, nprobe: int | None = None,
                  text: str | None = None) -> None:
    if k is not None and k > settings.max_k:
        raise InputError(f"k={k} is above this server's limit of {settings.max_k} (max_k setting)")
    if batch is not None and batch > settings.max_batch:
        raise InputError(f"{batch} vectors in one request is above the limit of {settings.max_batch} "
                         f"(max_batch setting): split the batch")
    for name, lst in (ids or {}).items():
        if lst is not None:
            if len(lst) > settings.max_ids:
                raise InputError(f"{name} has {len(lst)} ids, above the limit of {settings.max_ids} (max_ids setting)")
            for v in lst:
                if isinstance(v, str) and len(v) > settings.max_string_length:
                    raise InputError(f"an id in {name} is {len(v)} characters long, above the limit of "
                                     f"{settings.max_string_length}")
    if ef is not None and ef > settings.max_ef:
        raise InputError(f"ef={ef} is above this server's limit of {settings.max_ef} (max_ef setting)")
    if nprobe is not None and nprobe > settings.max_nprobe:
        raise InputError(f"nprobe={nprobe} is above this server's limit of {settings.max_nprobe}")
    if text is not None and len(text) > settings.max_string_length:
        raise InputError(f"the query is {len(text)} characters long, above the limit of "
                         f"{settings.max_string_length} (max_string_length setting)")


def _query_params(srv: ServedIndex, ef: int | None, nprobe: int | None) -> dict[str, int] | None:
    names = srv.query_param_names()
    params = {}
    for api_name, value in (("ef", ef), ("nprobe", nprobe)):
        if value is None:
            continue
        if api_name not in names:
            have = ", ".join(sorted(names)) or "none"
            raise InputError(f"{api_name} does not apply to index {srv.name!r} ({srv.index.backend} "
                             f"{srv.index.params.get('factory_resolved') or srv.index.params.get('factory') or ''}"
                             f"); it understands: {have}")
        params[names[api_name]] = int(value)
    return params or None


def _to_queries(vectors: list[list[float]], dim: int) -> np.ndarray:
    for i, v in enumerate(vectors):
        if len(v) != dim:
            raise InputError(f"query vector {i} has dimension {len(v)} but the index expects {dim}: encode it with "
                             f"the same model the index was built from")
    return as_matrix(vectors, dim=dim, name="query vectors")


def _hits(srv: ServedIndex, ids: np.ndarray, scores: np.ndarray, meta: bool) -> list[dict]:
    out = []
    for i, s in zip(ids.tolist(), scores.tolist()):
        if i is None or (i == -1 and not isinstance(i, str)):
            continue
        h = {"id": i, "score": s}
        if meta:
            h["item"] = srv.item_meta(i)
        out.append(h)
    return out


def _coerce_filter(srv: ServedIndex, ids: list | None):
    return None if ids is None else [srv.coerce_id(i) for i in ids]


# -- the blocking parts, run in worker threads
def _do_search(srv: ServedIndex, vectors, k, params, allowed, denied, meta, threads) -> bytes:
    q = _to_queries(vectors, srv.index.dim)
    with srv.rw.read():
        ids, scores = srv.index.search(q, k, params=params, allowed_ids=allowed, denied_ids=denied, threads=threads)
        results = [_hits(srv, ids[r], scores[r], meta) for r in range(len(q))]
    return dumps({"index": srv.name, "k": k, "results": results})


def _do_similar(srv: ServedIndex, item_id: str, k: int, params, meta, threads) -> bytes:
    with srv.rw.read():
        iid = srv.coerce_id(item_id)
        q = srv.index.get_vector(iid)
        k = check_k(k, limit=max(len(srv.index) - 1, 0))
        ids, scores = srv.index.search(q, k, params=params, denied_ids=[iid], threads=threads)
        hits = _hits(srv, ids[0], scores[0], meta)
    return dumps({"index": srv.name, "k": k, "item_id": iid, "hits": hits})


def _do_user(srv: ServedIndex, user_id: str, k: int, exclude_seen: bool, params, meta, threads) -> bytes:
    emb = srv.embeddings
    row = emb.query_row_of(user_id)
    uid = emb.query_ids[row].item() if hasattr(emb.query_ids[row], "item") else emb.query_ids[row]
    seen = emb.seen_ids(user_id) if exclude_seen else None
    with srv.rw.read():
        n_seen = 0 if seen is None else int(sum(1 for s in seen.tolist() if s in srv.index))
        k = check_k(k, limit=max(len(srv.index) - n_seen, 0))
        ids, scores = srv.index.search(emb.queries[row], k, params=params,
                                       denied_ids=seen if seen is not None and len(seen) else None, threads=threads)
        hits = _hits(srv, ids[0], scores[0], meta)
    return dumps({"index": srv.name, "k": k, "user_id": uid, "exclude_seen": exclude_seen, "hits": hits})


def _do_encoded(srv: ServedIndex, vec: np.ndarray, k: int, params, allowed, denied, meta, threads,
                extra: dict) -> bytes:
    with srv.rw.read():
        n_denied = 0 if denied is None else sum(1 for i in set(denied) if i in srv.index)
        k = check_k(k, limit=max(len(srv.index) - n_denied, 0))
        ids, scores = srv.index.search(vec, k, params=params, allowed_ids=allowed, denied_ids=denied,
                                       threads=threads)
        hits = _hits(srv, ids[0], scores[0], meta)
    return dumps({"index": srv.name, "k": k, **extra, "hits": hits})


def _upsert(srv: ServedIndex, vectors: np.ndarray, ids: np.ndarray, meta: dict | None) -> None:
    srv.index.add(vectors, ids, items=meta)


def _delete(srv: ServedIndex, item_id) -> None:
    srv.index.remove([item_id])


# ----------------------------------------------------------------------------- the app
_ERR = {"model": S.ErrorBody}
READ_ERRORS = {401: _ERR, 404: _ERR, 422: _ERR}
BODY_ERRORS = {400: _ERR, 401: _ERR, 404: _ERR, 413: _ERR, 422: _ERR}


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
    if registry is not None and registry.on_save is None:
        registry.on_save = metrics.on_save
    holder["r"] = reg

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.search_limiter = anyio.CapacityLimiter(settings.max_concurrent_searches)
        if settings.insecure_no_auth:
            log.warning("annrec serve is running WITHOUT authentication (--insecure-no-auth): anyone who can reach "
                        "%s:%s can read%s", settings.host, settings.port,
                        "" if settings.read_only else ", change and reload the indexes")
        if not reg.snapshot.indexes:
            await anyio.to_thread.run_sync(reg.load)
        reg.last_reload_token = reg.read_token()
        snap = reg.snapshot
        for line in snap.errors:
            log.info("not served: %s", line)
        log.info("serving %d index(es) from %s: %s", len(snap.indexes), settings.model_dir,
                 ", ".join(f"{n} ({s.index.backend}, {len(s.index)} items)" for n, s in sorted(snap.indexes.items())))
        app.state.ready = True
        poller = None
        if settings.workers > 1 and reg.token_file() is not None:
            poller = asyncio.create_task(_poll_reloads(reg, metrics))
        try:
            yield
        finally:
            app.state.ready = False
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            await anyio.to_thread.run_sync(reg.close)

    app = FastAPI(
        title="annrec", version=annrec.__version__, lifespan=lifespan,
        summary="Vector search and recommendations over annrec indexes (FAISS, hnswlib).",
        description="Send the read key (reads) or the admin key (writes, reload) in the `X-API-Key` header. "
                    "Errors are `{error, message, details}`; bad input is always a 4xx.",
    )
    app.state.settings = settings
    app.state.registry = reg
    app.state.metrics = metrics
    app.state.ready = False
    threads = settings.search_threads

    async def fast_search(scope, raw: bytes) -> bytes | None:
        """Answer a search that passes every check, else ``None`` (the FastAPI route then answers it)."""
        _check_key(settings, _given_key(Headers(scope=scope)), admin=False)  # raises: the route answers
        name = scope["path"][len(SEARCH_PREFIX):-len(SEARCH_SUFFIX)]
        srv = reg.snapshot.indexes.get(name)
        if srv is None or "/" in name:
            return None
        try:
            body = S.SearchRequest.model_validate_json(raw or b"null")
        except ValidationError:
            return None
        if (body.vector is None) == (body.vectors is None):
            return None
        vectors = [body.vector] if body.vector is not None else body.vectors
        _check_limits(settings, k=body.k, batch=len(vectors), ef=body.ef, nprobe=body.nprobe,
                      ids={"allowed_ids": body.allowed_ids, "denied_ids": body.denied_ids})
        params = _query_params(srv, body.ef, body.nprobe)
        k = check_k(body.k, limit=len(srv.index))
        return await anyio.to_thread.run_sync(
            partial(_do_search, srv, vectors, k, params, _coerce_filter(srv, body.allowed_ids),
                    _coerce_filter(srv, body.denied_ids), body.include_metadata, threads),
            limiter=app.state.search_limiter)

    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics,
                       fast_search=fast_search if settings.fast_search else None)
    _install_error_handlers(app)
    read = [Depends(require_read)]
    admin = [Depends(require_admin)]

    async def run(fn, *args):
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=app.state.search_limiter)

    # -- probes
    @app.get("/health", response_model=S.Health, tags=["probes"], summary="The process is alive")
    async def health():
        return json_response({"status": "ok"})

    @app.get("/ready", response_model=S.Ready, tags=["probes"], summary="Artifacts are loaded",
             responses={503: {"model": S.Ready}})
    async def ready(request: Request):
        snap = reg.snapshot
        ok = bool(request.app.state.ready) and bool(snap.indexes)
        return json_response({"status": "ready" if ok else "loading", "indexes": len(snap.indexes),
                              "generation": snap.generation, "worker": os.getpid()}, 200 if ok else 503)

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics", dependencies=[Depends(require_metrics)], openapi_extra=_SECURED,
             responses={200: {"content": {"text/plain": {}}}, 401: _ERR})
    async def prometheus_metrics():
        # in a thread: the index-size collector may wait for an index's read lock
        return Response(await anyio.to_thread.run_sync(metrics.render), media_type=metrics.content_type)

    # -- indexes
    @app.get("/v1/indexes", response_model=S.IndexList, tags=["indexes"], dependencies=read, openapi_extra=_SECURED,
             summary="The served indexes", responses={401: _ERR})
    async def list_indexes():
        snap = reg.snapshot
        return json_response({"indexes": [srv.describe(full=False) for _, srv in sorted(snap.indexes.items())],
                              "generation": snap.generation})

    @app.get("/v1/indexes/{name}", response_model=S.IndexDetail, tags=["indexes"], dependencies=read,
             openapi_extra=_SECURED,
             summary="One index: backend, metric, dim, count, parameters", responses=READ_ERRORS)
    async def get_index(name: str = Path(max_length=256)):
        srv = reg.get(name)
        return json_response(await anyio.to_thread.run_sync(srv.describe))

    @app.post("/v1/indexes/{name}/search", response_model=S.SearchResponse, tags=["search"], dependencies=read,
              summary="Nearest items of one query vector or a batch", responses=BODY_ERRORS,
              openapi_extra={**_SECURED, **_body_spec(S.SearchRequest, "one query vector or a batch")})
    async def search(request: Request, name: str = Path(max_length=256)):
        body = await parse_body(request, S.SearchRequest)
        if (body.vector is None) == (body.vectors is None):
            raise InputError("give exactly one of 'vector' (one query) or 'vectors' (a batch)")
        vectors = [body.vector] if body.vector is not None else body.vectors
        _check_limits(settings, k=body.k, batch=len(vectors), ef=body.ef, nprobe=body.nprobe,
                      ids={"allowed_ids": body.allowed_ids, "denied_ids": body.denied_ids})
        srv = reg.get(name)
        params = _query_params(srv, body.ef, body.nprobe)
        k = check_k(body.k, limit=len(srv.index))
        data = await run(_do_search, srv, vectors, k, params, _coerce_filter(srv, body.allowed_ids),
                         _coerce_filter(srv, body.denied_ids), body.include_metadata, threads)
        return Response(data, media_type=JSON)

    @app.get("/v1/indexes/{name}/items/{item_id}", response_model=S.ItemResponse, tags=["indexes"],
             dependencies=read, summary="One item's metadata (and optionally its stored vector)", openapi_extra=_SECURED,
             responses=READ_ERRORS)
    async def get_item(name: str = Path(max_length=256), item_id: str = Path(max_length=512),
                       include_vector: bool = False):
        srv = reg.get(name)

        def get():
            with srv.rw.read():
                iid = srv.coerce_id(item_id)
                vec = srv.index.get_vector(iid)
                return {"index": srv.name, "id": iid, "item": srv.item_meta(iid),
                        "vector": vec if include_vector else None}

        return json_response(await anyio.to_thread.run_sync(get))

    @app.get("/v1/indexes/{name}/items/{item_id}/similar", response_model=S.SimilarResponse, tags=["search"],
             dependencies=read, summary="Items most similar to an item (the item itself excluded)", openapi_extra=_SECURED,
             responses=READ_ERRORS)
    async def similar(name: str = Path(max_length=256), item_id: str = Path(max_length=512),
                      k: int = Query(10, ge=1), ef: int | None = Query(None, ge=1),
                      nprobe: int | None = Query(None, ge=1), include_metadata: bool = True):
        _check_limits(settings, k=k, ef=ef, nprobe=nprobe)
        srv = reg.get(name)
        params = _query_params(srv, ef, nprobe)
        return Response(await run(_do_similar, srv, item_id, k, params, include_metadata, threads), media_type=JSON)

    # -- recommendations
    @app.get("/v1/users/{user_id}/recommendations", response_model=S.UserRecommendationResponse,
             tags=["recommendations"], dependencies=read, responses=READ_ERRORS, openapi_extra=_SECURED,
             summary="Top-k items for a user of a collaborative-filtering model (maximum inner product search)")
    async def user_recommendations(user_id: str = Path(max_length=512), k: int = Query(10, ge=1),
                                   exclude_seen: bool = True, index: str | None = Query(None, max_length=256),
                                   ef: int | None = Query(None, ge=1), nprobe: int | None = Query(None, ge=1),
                                   include_metadata: bool = True):
        _check_limits(settings, k=k, ef=ef, nprobe=nprobe)
        srv = reg.pick("users", index)
        params = _query_params(srv, ef, nprobe)
        return Response(await run(_do_user, srv, user_id, k, exclude_seen, params, include_metadata, threads),
                        media_type=JSON)

    @app.post("/v1/recommendations/next", response_model=S.NextResponse, tags=["recommendations"],
              dependencies=read, responses=BODY_ERRORS,
              summary="Next items after a sequence of item ids (sequence models; 404 when none is loaded)",
              openapi_extra={**_SECURED, **_body_spec(S.NextRequest, "a sequence of item ids, oldest first")})
    async def recommend_next(request: Request):
        body = await parse_body(request, S.NextRequest)
        _check_limits(settings, k=body.k, ids={"items": body.items})
        if body.timestamps is not None and len(body.timestamps) != len(body.items):
            raise InputError(f"{len(body.timestamps)} timestamps for {len(body.items)} items: give one per item "
                             f"or none")
        srv = reg.pick("sequence", body.index)
        items = [srv.coerce_id(i) for i in body.items]

        def go():
            vec, warnings = encode_with(srv.encoder, items, body.timestamps)
            extra = {"warnings": warnings} if warnings else {}
            return _do_encoded(srv, vec, body.k, None, None, items if body.exclude_input else None,
                               body.include_metadata, threads, extra)

        return Response(await run(go), media_type=JSON)

    @app.post("/v1/search/text", response_model=S.TextSearchResponse, tags=["search"], dependencies=read,
              responses=BODY_ERRORS,
              summary="Items nearest to a text query (text-encoder models; 404 when none is loaded)",
              openapi_extra={**_SECURED, **_body_spec(S.TextSearchRequest, "a text query")})
    async def search_text(request: Request):
        body = await parse_body(request, S.TextSearchRequest)
        _check_limits(settings, k=body.k, text=body.query, ef=body.ef, nprobe=body.nprobe,
                      ids={"allowed_ids": body.allowed_ids, "denied_ids": body.denied_ids})
        srv = reg.pick("text", body.index)
        params = _query_params(srv, body.ef, body.nprobe)

        def go():
            vec, warnings = encode_with(srv.encoder, [body.query])
            extra = {"query": body.query, **({"warnings": warnings} if warnings else {})}
            return _do_encoded(srv, vec, body.k, params, _coerce_filter(srv, body.allowed_ids),
                               _coerce_filter(srv, body.denied_ids), body.include_metadata, threads, extra)

        return Response(await run(go), media_type=JSON)

    # -- writes (admin)
    @app.put("/v1/indexes/{name}/items", response_model=S.WriteResponse, tags=["writes"], dependencies=admin,
             summary="Insert or replace items (vectors, ids, metadata); saved to the index folder",
             responses={**BODY_ERRORS, 403: _ERR, 409: _ERR, 503: _ERR},
             openapi_extra={**_SECURED, **_body_spec(S.UpsertRequest, "items to insert or replace")})
    async def upsert(request: Request, name: str = Path(max_length=256)):
        body = await parse_body(request, S.UpsertRequest)
        _check_limits(settings, batch=len(body.items),
                      ids={"items": [it.id for it in body.items]})
        srv0 = reg.get(name)
        dim = srv0.index.dim
        for i, it in enumerate(body.items):
            if len(it.vector) != dim:
                raise InputError(f"item {i} (id {it.id!r}) has a vector of dimension {len(it.vector)} but index "
                                 f"{name!r} expects {dim}")
        vectors = as_matrix([it.vector for it in body.items], dim=dim, name="item vectors")
        ids = normalize_ids([it.id for it in body.items], "item ids")
        meta = {it.id: it.metadata for it in body.items if it.metadata is not None} or None

        def go():
            srv, version, _ = reg.write(name, lambda s: _upsert(s, vectors, ids, meta))
            metrics.writes.labels(srv.name, "upsert").inc(len(ids))
            saved = reg.wait_saved(srv, version)
            return {"index": srv.name, "upserted": int(len(ids)), "count": len(srv.index), "persisted": saved}

        return json_response(await anyio.to_thread.run_sync(go))

    @app.delete("/v1/indexes/{name}/items/{item_id}", response_model=S.WriteResponse, tags=["writes"],
                dependencies=admin, summary="Delete an item; saved to the index folder",
                responses={**READ_ERRORS, 403: _ERR, 409: _ERR, 503: _ERR}, openapi_extra=_SECURED)
    async def delete_item(name: str = Path(max_length=256), item_id: str = Path(max_length=512)):
        reg.get(name)

        def go():
            holder_id = {}

            def fn(s):
                iid = s.coerce_id(item_id)
                holder_id["id"] = iid
                _delete(s, iid)

            srv, version, _ = reg.write(name, fn)
            metrics.writes.labels(srv.name, "delete").inc()
            saved = reg.wait_saved(srv, version)
            return {"index": srv.name, "deleted": holder_id["id"], "count": len(srv.index), "persisted": saved}

        return json_response(await anyio.to_thread.run_sync(go))

    @app.post("/v1/admin/reload", response_model=S.ReloadResponse, tags=["admin"], dependencies=admin,
              summary="Load the artifacts anew beside the served ones and swap atomically",
              responses={401: _ERR, 403: _ERR, 409: _ERR}, openapi_extra=_SECURED)
    async def reload():
        try:
            snap, secs = await anyio.to_thread.run_sync(reg.reload)
        except AnnrecError as e:
            metrics.reloads.labels("failed").inc()
            raise ApiError(409, "conflict", f"reload failed, still serving generation {reg.snapshot.generation}: "
                                            f"{e}") from None
        metrics.reloads.labels("ok").inc()
        if settings.workers > 1:
            await anyio.to_thread.run_sync(reg.publish_reload)
        return json_response({"generation": snap.generation, "indexes": sorted(snap.indexes),
                              "seconds": round(secs, 4), "skipped": list(snap.errors)})

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 description=app.description, routes=app.routes)
            comps = schema.setdefault("components", {})
            comps.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
            schemas = comps.setdefault("schemas", {})
            for name, model in _BODY_MODELS.items():
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for dname, d in js.pop("$defs", {}).items():
                    schemas.setdefault(dname, d)
                schemas[name] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
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
