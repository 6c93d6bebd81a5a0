"""Dependencies of the routes (``fastapi.Depends``): authentication, the registry, the settings, the
metrics, and running blocking work in the worker-thread pool.

Authentication: a request sends a key in ``X-API-Key`` or as ``Authorization: Bearer <key>`` (the
header wins when both are sent). :func:`require_read` accepts the read or the admin key,
:func:`require_admin` only the admin key (the read key gets 403, and every key gets 403 when the server
has no admin key), :func:`require_metrics` a read key unless ``metrics_public``. No or a wrong key is
401 with a ``WWW-Authenticate`` challenge; ``insecure_no_auth`` lets everything through. Keys are
compared in constant time. The two header schemes are FastAPI security classes, so the OpenAPI schema
declares them (``ApiKey``, ``Bearer``) on every secured operation.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import pydantic_core
from fastapi import Depends, Path, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from annrec.errors import InputError
from annrec.service.errors import ApiError
from annrec.service.guard import is_binary
from annrec.service.metrics import ServiceMetrics
from annrec.service.registry import Registry, ServedIndex
from annrec.service.settings import ServiceSettings

T = TypeVar("T")

_api_key = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False,
                        description="the read key (reads) or the admin key (everything)")
_bearer = HTTPBearer(scheme_name="Bearer", auto_error=False,
                     description="the same keys as 'Authorization: Bearer <key>'")
_CHALLENGE = {"WWW-Authenticate": 'ApiKey header="X-API-Key", Bearer'}


def get_settings(request: Request) -> ServiceSettings:
    """The app's :class:`ServiceSettings`."""
    return request.app.state.settings


def get_registry(request: Request) -> Registry:
    """The app's :class:`Registry`."""
    return request.app.state.registry


def get_metrics(request: Request) -> ServiceMetrics:
    """The app's :class:`ServiceMetrics`."""
    return request.app.state.metrics


Settings = Annotated[ServiceSettings, Depends(get_settings)]
Reg = Annotated[Registry, Depends(get_registry)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]
IndexName = Annotated[str, Path(max_length=256, description="an index name (GET /v1/indexes lists them)")]
ItemIdPath = Annotated[str, Path(max_length=512, description="an item id (integer ids as digits)")]


async def given_key(header: str | None = Security(_api_key),
                    bearer: HTTPAuthorizationCredentials | None = Security(_bearer)) -> str | None:
    """The key a request sends: ``X-API-Key``, else ``Authorization: Bearer <key>``; ``None`` when absent."""
    if header:
        return header
    if bearer is not None and bearer.credentials.strip():
        return bearer.credentials.strip()
    return None


def key_of_headers(headers) -> str | None:
    """:func:`given_key` from raw request headers (case-insensitive mapping, e.g. starlette ``Headers``)."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, cred = (headers.get("authorization") or "").partition(" ")
    return cred.strip() if scheme.lower() == "bearer" and cred.strip() else None


Key = Annotated[str | None, Depends(given_key)]


def _same(given: str, digest: str | None) -> bool:
    """Constant-time comparison of a request's key with a configured key, through their SHA-256 digests."""
    import hashlib

    return digest is not None and hmac.compare_digest(hashlib.sha256(given.encode()).hexdigest(), digest)


def is_admin(settings: ServiceSettings, given: str | None) -> bool:
    """True for the admin key (or a server without keys): what may see server paths and versions."""
    return settings.insecure_no_auth or (bool(given) and _same(given, settings.key_digest("admin")))


def check_key(settings: ServiceSettings, given: str | None, admin: bool) -> None:
    """Raise :class:`ApiError` 401 (no or wrong key) or 403 (read key where ``admin``); else return."""
    if settings.insecure_no_auth:
        return
    if not given:
        raise ApiError(401, "unauthorized", "missing API key: send it in the X-API-Key header (or as "
                                            "'Authorization: Bearer <key>')", _CHALLENGE)
    if _same(given, settings.key_digest("admin")):
        return
    if _same(given, settings.key_digest("read")):
        if admin:
            raise ApiError(403, "forbidden", "this endpoint changes the server and needs the admin key; the "
                                             "read key only reads")
        return
    raise ApiError(401, "unauthorized", "wrong API key: check the key you send in X-API-Key", _CHALLENGE)


async def require_read(settings: Settings, key: Key) -> None:
    """Dependency of the read endpoints: the read or the admin key."""
    check_key(settings, key, admin=False)


async def require_admin(settings: Settings, key: Key) -> None:
    """Dependency of the write and reload endpoints: the admin key (403 when the server has none)."""
    if not settings.insecure_no_auth and settings.key_digest("admin") is None:
        check_key(settings, key, admin=False)  # 401 for no/wrong key first
        raise ApiError(403, "forbidden", "writes and reloads are disabled: the server was started without an "
                                         "admin key (--admin-key-file or ANNREC_ADMIN_KEY)")
    check_key(settings, key, admin=True)


async def require_metrics(settings: Settings, key: Key) -> None:
    """Dependency of ``/metrics``: a read key unless ``metrics_public``."""
    if not settings.metrics_public:
        check_key(settings, key, admin=False)


READ = [Depends(require_read)]
ADMIN = [Depends(require_admin)]


async def in_worker(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, at most ``max_concurrent_searches`` at once."""
    return await anyio.to_thread.run_sync(partial(fn, *args), limiter=request.app.state.search_limiter)


async def reading(request: Request, srv: ServedIndex, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread under ``srv``'s shared (read) lock.

    With dynamic batching (``search_batching``) the calls of concurrent requests to one index share a worker
    thread and one read lock (:class:`~annrec.service.batching.SearchBatcher`): one thread hand-off per batch;
    each call keeps its own answer or error.
    """
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is not None:
        return await batcher.submit(("calls", id(srv)), partial(fn, *args), partial(_run_calls, srv))

    def locked() -> T:
        with srv.rw.read():
            return fn(*args)

    return await in_worker(request, locked)


def _run_calls(srv: ServedIndex, calls: list[Callable[[], Any]]) -> list[Any]:
    out: list[Any] = []
    with srv.rw.read():
        for call in calls:
            try:
                out.append(call())
            except Exception as e:  # noqa: BLE001 - the request's own error, answered by its handler
                out.append(e)
    return out


def mark_deprecated(response: Response, used: list[str]) -> None:
    """Add ``Deprecation`` and ``Warning`` headers naming the old request spellings ``used`` (``"old -> new"``)."""
    if used:
        response.headers["Deprecation"] = "true"
        response.headers["Warning"] = (f'299 - "deprecated request spelling: {", ".join(used)}; the old names '
                                       f'are accepted for one release"')


def parse_json(body: bytes) -> Any:
    """A JSON body as Python objects (pydantic-core's parser; ``NaN`` / ``Infinity`` read as floats).

    Raises:
        json.JSONDecodeError: not JSON (answered 400).
    """
    try:
        return pydantic_core.from_json(body, allow_inf_nan=True)
    except ValueError as e:
        raise json.JSONDecodeError(str(e), body.decode("utf-8", "replace"), 0) from None


class _JsonRequest(Request):
    """A request whose JSON body is read by pydantic-core's parser (~6x faster than :func:`json.loads` for
    a 784-float vector). Like ``json.loads`` it reads the non-standard ``NaN`` / ``Infinity`` tokens, so
    they reach validation and get the 422 that says values must be finite; malformed JSON raises
    :class:`json.JSONDecodeError` (FastAPI answers 400)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
            settings = getattr(self.app.state, "settings", None)
            if settings is not None:
                try:
                    check_batch_size(self._json, settings.max_batch)
                except InputError as e:  # FastAPI turns other errors of a body read into a 400
                    from fastapi import HTTPException

                    raise HTTPException(422, str(e)) from None
        return self._json

    @classmethod
    async def from_binary(cls, request: Request) -> _JsonRequest:
        """A binary search request as the JSON request FastAPI parses into the route's model: the same
        request with ``Content-Type: application/json`` and its body already read as
        :func:`binary_search_body` gives it (so one model, one validation and one route serve both)."""
        from fastapi import HTTPException

        body = await request.body()
        settings = getattr(request.app.state, "settings", None)
        try:
            parsed = binary_search_body(body, request.path_params.get("name"), request.app.state.registry,
                                        request.query_params, settings.max_batch if settings is not None else None)
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        scope = dict(request.scope)
        scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"] + \
            [(b"content-type", b"application/json")]
        new = cls(scope, request.receive)
        new._body = body
        new._json = parsed
        return new


_BINARY_FIELDS = ("k", "ef", "nprobe", "k_factor", "include_metadata")


def binary_search_body(body: bytes, name: str | None, registry, query_params, max_batch: int | None = None
                       ) -> dict[str, Any]:
    """A binary search request as the JSON body it stands for: the body is ``nq × dim`` little-endian float32
    values (``dim`` the index's; ``numpy.ndarray.astype('<f4').tobytes()``), the other fields come from the
    query string (``?k=10&ef=64``; ``filter`` as JSON text). One row answers like ``{"vector": ...}``
    (``hits``), several like ``{"vectors": ...}`` (``results``); the same model validates either.

    Raises:
        InputError: an empty body, a length that is not a whole number of rows of the index's dimension,
            more rows than ``max_batch``, a ``filter`` that is not JSON. UnknownIndexError: no such index.
    """
    import numpy as np

    snap = getattr(registry, "snapshot", None)
    srv = snap.indexes.get(name) if snap is not None and name is not None else None
    out: dict[str, Any] = {}
    for key, text in query_params.items():  # the model is strict: give it numbers and booleans
        if key == "include_metadata":
            flag = {"true": True, "1": True, "false": False, "0": False}.get(text.strip().lower())
            if flag is None:
                raise InputError(f"include_metadata must be true or false; got {text!r}")
            out[key] = flag
        elif key in _BINARY_FIELDS:
            try:
                out[key] = int(text)
            except ValueError:
                raise InputError(f"{key} must be an integer; got {text!r}") from None
    if "filter" in query_params:
        try:
            out["filter"] = parse_json(query_params["filter"].encode())
        except json.JSONDecodeError:
            raise InputError("the filter query parameter is not valid JSON: send a payload filter as JSON text "
                             "(URL-encoded)") from None
    if srv is None:
        srv = registry.get(name)  # raises UnknownIndexError (404) for an index that is not served
    dim = srv.index.dim
    if not body or len(body) % (4 * dim):
        raise InputError(f"a binary search body holds float32 query vectors of dimension {dim} ({4 * dim} bytes "
                         f"each); got {len(body)} bytes: send numpy's array.astype('<f4').tobytes()")
    rows = np.frombuffer(body, dtype="<f4").reshape(-1, dim)
    if max_batch is not None and len(rows) > max_batch:
        raise InputError(f"{len(rows)} vectors in one request is above the limit of {max_batch} (max_batch "
                         f"setting): split the batch")
    if len(rows) == 1:
        out["vector"] = rows[0].tolist()
    else:
        out["vectors"] = rows.tolist()
    return out


def check_batch_size(obj: Any, max_batch: int) -> None:
    """Refuse a body whose ``vectors`` or ``items`` list is longer than ``max_batch`` before the request model
    validates (and copies) every number of it.

    Raises:
        InputError: the message names the setting.
    """
    if isinstance(obj, dict):
        for name in ("vectors", "items"):
            v = obj.get(name)
            if isinstance(v, list) and len(v) > max_batch:
                what = "vectors" if name == "vectors" else "items"
                raise InputError(f"{len(v)} {what} in one request is above the limit of {max_batch} (max_batch "
                                 f"setting): split the batch")


class JsonRoute(APIRoute):
    """The route class of every router: :class:`_JsonRequest` bodies (FastAPI's "custom APIRoute class")."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            if is_binary(request.headers.get("content-type", "")):  # only searches get past the guard
                return await handler(await _JsonRequest.from_binary(request))
            return await handler(_JsonRequest(request.scope, request.receive))

        return route_handler
