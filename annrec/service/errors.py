"""Error answers: every answer that is not a success is ``{"error": code, "message": ..., "details": [...]}``.

Statuses: 400 malformed JSON; 401 no or wrong key; 403 read key on an admin endpoint; 404 unknown
index, item or user (:class:`~annrec.errors.UnknownIdError`); 405; 409 a write or reload that cannot
be done now (:class:`~annrec.errors.ArtifactError`, :class:`~annrec.errors.DataNotFoundError`); 413
body too large (answered by :class:`~annrec.service.middleware.ServiceMiddleware`); 422 invalid values
(:class:`~annrec.errors.InputError`, request validation); 503 a write applied but not saved
(:class:`~annrec.service.storage.PersistError`). A 500 says only "internal error"; the traceback goes
to the server log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from annrec.errors import AnnrecError, ArtifactError, DataNotFoundError, UnknownIdError
from annrec.service import schemas as S
from annrec.service.storage import PersistError

log = logging.getLogger("annrec.service")

try:  # orjson is ~5x faster than json for float-heavy bodies; json works too
    import orjson

    def dumps(obj: Any) -> bytes:
        """``obj`` as compact JSON bytes (numpy arrays and scalars allowed)."""
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
except ImportError:  # pragma: no cover
    import json

    def _default(o: Any) -> Any:
        return o.tolist() if hasattr(o, "tolist") else str(o)

    def dumps(obj: Any) -> bytes:
        """``obj`` as compact JSON bytes (numpy arrays and scalars allowed)."""
        return json.dumps(obj, allow_nan=False, default=_default, separators=(",", ":")).encode()


JSON = "application/json"
FINITE_MESSAGE = "the values must be finite numbers (NaN, Infinity and numbers beyond float range are refused)"

# -- the error answers each kind of route documents in the OpenAPI schema
ERR = {"model": S.ErrorBody}
READ_ERRORS = {400: ERR, 401: ERR, 403: ERR, 404: ERR, 413: ERR, 422: ERR}  # 400 / 403: Host, Origin (guard)
BODY_ERRORS = {400: ERR, 401: ERR, 403: ERR, 404: ERR, 413: ERR, 415: ERR, 422: ERR}
WRITE_ERRORS = {403: ERR, 409: ERR, 503: ERR}


class ApiError(Exception):
    """An error answer with an HTTP ``status``, a short ``code``, a ``message`` for the client and optional
    response ``headers``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, details: list | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """The JSON error answer ``{"error": code, "message": message, "details"?: details}``."""
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return Response(dumps(body), status_code=status, media_type=JSON, headers=headers)


def annrec_status(e: AnnrecError) -> tuple[int, str]:
    """``(HTTP status, error code)`` of a library error."""
    if isinstance(e, UnknownIdError):
        return 404, "not_found"
    if isinstance(e, PersistError):
        return 503, "persist_failed"
    if type(e).__name__ == "ResponseTooLarge":  # annrec.service.limits (imported lazily there)
        return 413, "payload_too_large"
    if isinstance(e, (ArtifactError, DataNotFoundError)):
        return 409, "conflict"
    return 422, "invalid_request"


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests"}


def _validation_parts(e: RequestValidationError) -> tuple[int, list[dict], list[str]]:
    status, details, parts = 422, [], []
    for err in e.errors():
        loc = list(err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        kind = err.get("type")
        if kind == "json_invalid":
            status = 400
            msg = f"request body is not valid JSON ({err.get('ctx', {}).get('error', msg)})"
        elif kind == "finite_number":
            msg = FINITE_MESSAGE
        details.append({"loc": loc, "msg": msg, "type": kind})
        where = ".".join(str(x) for x in loc)
        parts.append(f"{where}: {msg}" if where else msg)
    if len(parts) > 5:
        parts = parts[:5] + [f"… and {len(parts) - 5} more"]
    return status, details, parts


async def _api_error(request: Request, e: ApiError) -> Response:
    return error_response(e.status, e.code, e.message, headers=e.headers)


async def _annrec_error(request: Request, e: AnnrecError) -> Response:
    status, code = annrec_status(e)
    return error_response(status, code, str(e))


async def _validation_error(request: Request, e: RequestValidationError) -> Response:
    status, details, parts = _validation_parts(e)
    return error_response(status, "bad_request" if status == 400 else "invalid_request",
                          "invalid request: " + "; ".join(parts), details[:50])


async def _http_error(request: Request, e: StarletteHTTPException) -> Response:
    code = _STATUS_CODES.get(e.status_code, "error")
    msg = e.detail if isinstance(e.detail, str) else code
    if e.status_code == 404 and msg == "Not Found":
        msg = f"no such endpoint: {request.method} {request.url.path} (GET /docs lists the endpoints)"
    headers = getattr(e, "headers", None)
    if e.status_code == 405:
        allow = _allowed_methods(request)
        msg = f"method {request.method} is not allowed on {request.url.path}" + (
            f": use {', '.join(allow)}" if allow else "")
        if allow:
            headers = {**(headers or {}), "Allow": ", ".join(allow)}
    return error_response(e.status_code, code, msg, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (Starlette's own 405 names only the first route's)."""
    methods: set[str] = set()
    path = request.url.path

    def visit(routes) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI's included routers
            if inner is not None:
                visit(inner.routes)
            elif getattr(route, "methods", None) and getattr(route, "path_regex", None) is not None \
                    and route.path_regex.match(path):
                methods.update(route.methods)

    visit(request.app.routes)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _internal_error(request: Request, e: Exception) -> Response:
    log.exception("internal error answering %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error: the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error answer."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(AnnrecError, _annrec_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
