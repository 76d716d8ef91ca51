"""The gateway's HTTP server protocol: uvicorn's (httptools), with a relay for the requests
clients make most — a `GET` without a body to a service — done in the protocol itself.

Through ASGI, a proxied read costs the gateway a task, an event, the scope and messages,
a request and a response object, and a future and a timer per wait on the service: for a
member card, three times the CPU of copying its bytes. Here the request's head, once
parsed, goes to a kept-alive connection to the service (`gateway.upstream_http`), and the
service's answer, once whole, goes back to the client in one write, each step a callback:

- what the lane does (`gateway.lane`, `common.lane`): the request id taken or made and
  echoed, the request counted, timed and logged under its service's route, the edge's
  headers; what the proxy does (`gateway.proxy`): the caller authenticated (a bearer
  token; none: the service answers 401), its rate budget spent, the circuit breaker
  consulted, hop-by-hop headers dropped, `X-Forwarded-*` and `X-Request-ID` sent on;
- anything else takes the ASGI app, as it arrives or as soon as the relay cannot go on
  without deciding something the app decides: a method other than `GET`, a body, an
  escaped or dot-segment path, an API key, a token that does not verify, a spent rate
  budget, an open circuit, no idle connection to the service, a reused connection the
  service closed before answering, an answer larger than `BUFFER_MAX_BYTES` or without a
  length. Until the answer's first byte is written, handing over loses nothing: the app
  sees the request as it came.
- A service that does not answer in its read timeout: 504 problem, as through the app.

The keep-alive timeout (uvicorn's `timeout_keep_alive`) is one timer per connection that
moves itself on when it fires early, not a timer made and cancelled per request: a
connection idle for that long is closed, as by uvicorn.

Used with `uvicorn --http gateway.server:GatewayHttpProtocol` (`tools.servers.FAST`); with
any other protocol the app serves everything itself."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httptools
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from gateway.upstream_http import header_lines

if TYPE_CHECKING:
    from gateway.lane import FastRelay

log = logging.getLogger("lianxin.gateway.server")


class _Done:
    """A stand-in for uvicorn's request cycle while the relay answers a request: what the
    protocol's own callbacks look at (a new request pipelined behind it, the client gone,
    the server shutting down)."""

    __slots__ = ("body", "disconnected", "keep_alive", "more_body", "response_complete")

    def __init__(self, keep_alive: bool) -> None:
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = keep_alive
        self.more_body = False
        self.body = b""

    @property
    def message_event(self) -> _Done:
        return self

    def set(self) -> None:  # message_event.set(): nothing waits on it
        pass


class GatewayHttpProtocol(HttpToolsProtocol):
    relay: FastRelay | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relay, self.forwarded = _find_relay(self.app)
        # Loop time since when the connection has waited for a request (None: a request
        # is on), and the one timer that checks it.
        self.idle_since: float | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        # The server's default headers (`date`) and their lines, made once per list.
        self.defaults: tuple[object, bytes] = (None, b"")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        super().data_received(data)

    def on_response_complete(self) -> None:
        """As uvicorn's, with the keep-alive timeout kept by `idle_since` and `idle_timer`."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()  # one uvicorn armed (none, but for safety)
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        self.idle_timer = None
        since = self.idle_since
        if since is None or self.transport.is_closing():
            return  # a request is on: its response's end arms the timer again
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.idle_timer = self.loop.call_later(left, self._idle_check)
        else:
            self.timeout_keep_alive_handler()

    def on_headers_complete(self) -> None:
        relay = self.relay
        cycle = self.cycle
        parser = self.parser
        if (
            relay is None
            or not relay.ready()
            or (cycle is not None and not cycle.response_complete)
            or parser.get_method() != b"GET"
            or parser.get_http_version() != "1.1"
            or parser.should_upgrade()
            or self.limit_concurrency is not None
            or self.root_path
        ):
            super().on_headers_complete()
            return
        parsed = httptools.parse_url(self.url)
        raw_path: bytes = parsed.path
        query: bytes = parsed.query or b""
        scope: Any = self.scope
        scope["method"] = "GET"
        if b"%" in raw_path or not raw_path.isascii():
            super().on_headers_complete()
            return
        path = raw_path.decode("ascii")
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        done = _Done(parser.should_keep_alive())
        self.cycle = done  # type: ignore[assignment]
        try:
            started = relay.start(self, scope, done, forwarded=self.forwarded)
        except Exception:  # a fault of the relay's own: the app answers the request
            log.exception("the relay could not start on %s", path)
            started = False
        if not started:
            self.cycle = cycle
            super().on_headers_complete()

    # called by the relay
    def write_answer(self, done: _Done, status: int, lines: bytes, body: bytes) -> None:
        """The answer (`lines`: its head's header lines), in one write; then what uvicorn
        does once a response is complete."""
        if done.disconnected:
            done.response_complete = True
            return
        defaults = self.server_state.default_headers
        if defaults is not self.defaults[0]:  # uvicorn makes a new list (`date`) each second
            self.defaults = (defaults, header_lines(defaults))
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    self.defaults[1],
                    lines,
                    b"\r\n" if done.keep_alive else b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        done.response_complete = True
        if not done.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def hand_over(self, done: _Done, scope: Any, app: ASGIApp | None = None) -> None:
        """The request to the app (or to `app`), as uvicorn would have given it."""
        cycle = RequestResponseCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=done.keep_alive,
            on_response=self.on_response_complete,
        )
        cycle.more_body = False
        cycle.disconnected = done.disconnected
        if self.cycle is done:  # type: ignore[comparison-overlap]
            self.cycle = cycle
        self._start_asgi_task(cycle, app or self.app)  # type: ignore[arg-type]


def _find_relay(app: Any) -> tuple[FastRelay | None, bool]:
    """The gateway app's relay, under whatever wraps it, and whether something does
    (uvicorn's proxy headers: it believes `X-Forwarded-*` from the peers it trusts)."""
    wrapped = False
    for _ in range(8):
        relay = getattr(app, "fast_relay", None)
        if relay is not None:
            return relay, wrapped
        app = getattr(app, "app", None)
        if app is None:
            break
        wrapped = True
    return None, wrapped
