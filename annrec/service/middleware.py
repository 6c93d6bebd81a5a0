"""The ASGI middleware in front of the app: the body-size limit (413) and per-route request metrics."""

from __future__ import annotations

import time

from annrec.service.errors import JSON, dumps
from annrec.service.metrics import ServiceMetrics
from annrec.service.settings import ServiceSettings


class _BodyTooLarge(BaseException):
    """Raised from ``receive`` past the body limit; a BaseException so no body parser turns it into a 400."""


class ServiceMiddleware:
    """Body-size limit and per-route metrics, as plain ASGI (cheaper than ``BaseHTTPMiddleware``).

    A body above ``settings.max_body_bytes`` is answered 413 (``Connection: close``): at once when its
    ``Content-Length`` says so (or is not a number), else as soon as the streamed body passes the
    limit. Every HTTP request is counted in ``metrics`` by method, route template and status, with its
    duration in seconds.
    """

    def __init__(self, app, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
        self.app = app
        self.limit = settings.max_body_bytes
        self.metrics = metrics

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

    def _observe(self, scope, status: int, t0: float) -> None:
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
