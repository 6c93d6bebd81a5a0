"""Bounded connections: idle and slow clients cannot take the server's file descriptors.

uvicorn closes a keep-alive connection that stays idle after a response (``timeout_keep_alive``) but not a
connection that never finishes its first request's headers — an idle socket, or a "slowloris" client that
sends a header byte at a time — so a few hundred such sockets exhaust the process's descriptors and every
other client is refused. :class:`GuardedHttpToolsProtocol` is uvicorn's httptools protocol with two additions
(the defences nginx and Apache apply: ``client_header_timeout``, ``RequestReadTimeout``, and dropping idle
connections first when at capacity):

* **header timeout**: a connection whose request headers are not complete ``header_timeout`` seconds after
  it opened (or after its previous response) is closed;
* **connection cap**: when a new connection makes more than ``max_connections``, the oldest connections that
  are not in the middle of a request (idle, or still sending headers) are closed to make room, so a normal
  client always gets in.

:func:`connection_limits` sizes the cap from the process's open-file limit.
"""

from __future__ import annotations

import resource

# descriptors kept for everything but client sockets: index files, the write-ahead logs, libraries, logs
RESERVED_FDS = 64


def connection_limits(requested: int | None = None) -> int:
    """The most client connections: ``requested``, else the soft open-file limit less :data:`RESERVED_FDS`
    (at least 16)."""
    if requested is not None:
        return requested
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65_536
    return max(16, int(soft) - RESERVED_FDS)


#: the limits the protocol applies (set by :func:`configure`; worker processes configure it on import from the
#: settings ``annrec serve`` hands them)
HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = connection_limits()


def configure(header_timeout: float, max_connections: int | None) -> None:
    """Set the header timeout (seconds) and the connection cap (``None``: from the open-file limit)."""
    global HEADER_TIMEOUT_S, MAX_CONNECTIONS
    HEADER_TIMEOUT_S = float(header_timeout)
    MAX_CONNECTIONS = connection_limits(max_connections)


def _configure_from_env() -> None:
    import json
    import os

    from annrec.service.settings import SETTINGS_ENV

    raw = os.environ.get(SETTINGS_ENV)
    if raw:
        try:
            d = json.loads(raw)
            configure(d.get("header_timeout_s", HEADER_TIMEOUT_S), d.get("max_connections"))
        except (ValueError, TypeError):
            pass


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

if HttpToolsProtocol is not None:
    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the header timeout and the connection cap (module docstring)."""

        _header_timer = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._opened_at = self.loop.time()
            if len(self.connections) > MAX_CONNECTIONS:
                self._make_room()
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                self.transport.close()

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _make_room(self) -> None:
            idle = sorted((c for c in self.connections if c is not self and hasattr(c, "_waiting_for_headers")
                           and c._waiting_for_headers() and not c.transport.is_closing()),
                          key=lambda c: c._opened_at)
            for c in idle[:max(1, len(self.connections) - MAX_CONNECTIONS)]:
                c.transport.close()

_configure_from_env()
