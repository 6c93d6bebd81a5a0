"""The search fast path: ``POST /v1/indexes/{name}/search`` answered before Starlette routing and
dependency injection, with the route's own code.

It authenticates with :func:`~annrec.service.deps.check_key`, parses the body as the route does
(:func:`~annrec.service.deps.parse_json`, then the route's :class:`~annrec.service.schemas.SearchRequest`), runs
:func:`~annrec.service.routers.indexes.prepare_search` and
:func:`~annrec.service.routers.indexes.answer_search` in the same worker-thread pool under the index's
read lock, and serialises the same response model. Every error is answered by the app's own exception
handlers (:mod:`annrec.service.errors`), so an answer is the same either way; nothing is replayed.
``bench/service_fastpath.py`` measures what it saves (about half the server CPU of a single-vector
search). ``fast_search: false`` sends searches through the FastAPI route instead.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import anyio.to_thread
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from annrec.service import schemas as S
from annrec.service.deps import binary_search_body, check_batch_size, check_key, key_of_headers, parse_json
from annrec.service.guard import is_binary
from annrec.service.errors import JSON
from annrec.service.batching import batchable, submit_search
from annrec.service.routers.indexes import answer_search, prepare_search

PREFIX, SUFFIX = "/v1/indexes/", "/search"


class SearchFastPath:
    """ASGI: answers ``POST /v1/indexes/{name}/search``; hands every other request to ``app``.

    ``app`` is the FastAPI application's inner stack; ``fastapi_app`` the application (settings,
    registry, exception handlers).
    """

    def __init__(self, app, fastapi_app) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.route = SimpleNamespace(path=PREFIX + "{name}" + SUFFIX)  # what the metrics read of a route

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        name = path[len(PREFIX):-len(SUFFIX)]
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(PREFIX) \
                or not path.endswith(SUFFIX) or not name or "/" in name:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # the metrics' route label
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            response = await self._answer(scope, name, b"".join(chunks))
        except Exception as e:  # noqa: BLE001 - answered by the app's handler for it, as on the route
            response = await self._error(scope, e)
        await response(scope, receive, send)

    async def _answer(self, scope, name: str, raw: bytes) -> Response:
        state = self.fastapi_app.state
        headers = Headers(scope=scope)
        check_key(state.settings, key_of_headers(headers), admin=False)
        try:
            if not raw:
                raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
            if is_binary(headers.get("content-type", "")):  # float32 rows, the other fields in the query string
                obj = binary_search_body(raw, name, state.registry, Request(scope).query_params,
                                         state.settings.max_batch)
            else:
                obj = parse_json(raw)
                check_batch_size(obj, state.settings.max_batch)  # before the model copies every number
            body = S.SearchRequest.model_validate(obj, from_attributes=True)  # as FastAPI does
        except json.JSONDecodeError as e:  # as FastAPI reports it on the route
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error",
                                           "ctx": {"error": e.msg}}]) from None
        except ValidationError as e:
            raise RequestValidationError([{**err, "loc": ("body", *err.get("loc", ()))}
                                          for err in e.errors(include_url=False)]) from None
        srv, params = prepare_search(state.registry, name, body, state.settings)
        batcher = getattr(state, "batcher", None)
        if batcher is not None and batchable(body):
            return Response(await submit_search(batcher, srv, body, params, state.settings.search_threads),
                            media_type=JSON)

        def go() -> bytes:
            with srv.rw.read():
                model = answer_search(srv, body, params, state.settings.search_threads)
            return model.__pydantic_serializer__.to_json(model)

        return Response(await anyio.to_thread.run_sync(go, limiter=state.search_limiter), media_type=JSON)

    async def _error(self, scope, e: Exception) -> Response:
        handlers = self.fastapi_app.exception_handlers
        handler = next((handlers[t] for t in type(e).__mro__ if t in handlers), handlers[Exception])
        return await handler(Request(scope), e)
