"""Browser safety: the server answers only its own Host names, no cross-site page, and JSON bodies only.

A server on 127.0.0.1 is reachable by every web page its user opens: a page can POST to it (a "simple"
cross-site request needs no permission when its body is ``text/plain`` or a form), and DNS rebinding makes
a page's own host name resolve to 127.0.0.1 so that even reads look same-origin. Three checks, applied with
and without API keys, close both (the measures OWASP lists against CSRF and rebinding):

* **Host allow-list** (``allowed_hosts``; default the bind address, ``localhost``, ``127.0.0.1`` and ``::1``,
  or any host when listening on every interface): a request for another host name is answered 400;
* **Origin**: a request that carries an ``Origin`` (browsers send it on cross-site requests) other than the
  server's own, or one of ``cors_origins``, is answered 403;
* **JSON only**: a request body on ``POST`` / ``PUT`` / ``PATCH`` must say ``Content-Type: application/json``
  (or ``…+json``), else 415 — no browser can send that cross-site without a CORS preflight, which is refused
  unless ``cors_origins`` names the page. The one exception is a search's binary body
  (``POST /v1/indexes/{name}/search`` with ``Content-Type: application/octet-stream``), which needs a preflight
  just the same (it is not one of the CORS-safelisted types).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from annrec.service.errors import JSON, dumps

ANY_INTERFACE = ("0.0.0.0", "::", "")
BODY_METHODS = ("POST", "PUT", "PATCH")
_BINARY_PATH = re.compile(r"^/v1/indexes/[^/]+/search$")  # the route that also takes a binary body


def default_hosts(bind: str) -> list[str]:
    """The host names a server bound to ``bind`` answers to by default (``["*"]``: any)."""
    if bind in ANY_INTERFACE:
        return ["*"]
    return sorted({bind.strip("[]"), "localhost", "127.0.0.1", "::1"})


def _hostname(host: str) -> str:
    """``host[:port]`` (or ``[v6]:port``) without the port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BrowserGuard:
    """ASGI middleware applying the three checks above; everything else passes through untouched."""

    def __init__(self, app, settings) -> None:
        self.app = app
        hosts = settings.allowed_hosts if settings.allowed_hosts is not None else default_hosts(settings.host)
        self.any_host = "*" in hosts
        self.hosts = {_hostname(h) for h in hosts}
        self.origins = {o.rstrip("/").lower() for o in settings.cors_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = ctype = ""
        body = False
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"content-type":
                ctype = value.decode("latin-1")
            elif name == b"content-length":
                body = body or value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                body = True
        if not self.any_host and _hostname(host) not in self.hosts:
            await self._refuse(send, 400, "host_not_allowed",
                               f"this server does not answer to the host name {_hostname(host)!r}: use one of "
                               f"{', '.join(sorted(self.hosts))} (the allowed_hosts setting)")
            return
        if origin and not self._same_origin(origin, host) and origin.rstrip("/").lower() not in self.origins:
            await self._refuse(send, 403, "cross_origin_refused",
                               f"requests from the web origin {origin!r} are refused: list it in the cors_origins "
                               f"setting to allow a browser page there to call this server")
            return
        if body and scope.get("method") in BODY_METHODS and not _is_json(ctype) \
                and not (is_binary(ctype) and _BINARY_PATH.match(scope.get("path", ""))):
            await self._refuse(send, 415, "unsupported_media_type",
                               f"the request body must be JSON sent with 'Content-Type: application/json' (searches also take "
                               f"float32 vectors as 'application/octet-stream'; got "
                               f"{ctype or 'no Content-Type'})")
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _same_origin(origin: str, host: str) -> bool:
        parts = urlsplit(origin)
        return bool(parts.netloc) and parts.netloc.lower() == host.strip().lower()

    @staticmethod
    async def _refuse(send, status: int, error: str, message: str) -> None:
        payload = dumps({"error": error, "message": message})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", JSON.encode()), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


#: the media type of a binary search body: the query vectors as raw little-endian float32, row after row
BINARY = "application/octet-stream"


def is_binary(ctype: str) -> bool:
    """True for ``Content-Type: application/octet-stream`` (parameters such as ``; charset`` ignored)."""
    return ctype.split(";", 1)[0].strip().lower() == BINARY


def _is_json(ctype: str) -> bool:
    media = ctype.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
