"""The gateway's lane for proxied requests without a body (reads, deletes): the most
frequent requests, and the ones a phone waits for. They take `common.lane.Lane` — the
request id, metrics and problems of the stack in one place — with the edge's headers
(`EdgeHeaders`, as `SecurityHeadersMiddleware`) and credentials, the rate limit and the
relay (`Proxy.forward`, as the proxy route).

Everything else goes through the stack: any request with a body (the body limit applies),
a cross-origin request when CORS is configured, every request when tracing is on, and any
path that is not under a service's prefix."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from common.context import request_id_var
from common.errors import AppError, app_error_response
from common.lane import Lane, bodyless
from common.metrics import RequestRecorder
from common.middleware import request_id_from
from gateway.auth.credentials import is_internal
from gateway.breaker import CircuitOpen
from gateway.middleware import EdgeHeaders
from gateway.proxy import (
    _REQUEST_DROP_B,
    _RESPONSE_DROP_B,
    BUFFER_MAX_BYTES,
    PROXIED_METHODS,
    Proxy,
    Upstream,
    UpstreamTimeout,
    UpstreamUnavailable,
    end_to_end,
    forward_head,
    has_dot_segments,
    lists_others,
    upstream_headers,
)
from gateway.ratelimit import MemoryLimiter, key_of
from gateway.upstream_http import (
    LeanSender,
    _Connection,
    _LeanReply,
    _Pool,
    content_length,
    header_lines,
    request_head,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.server import GatewayHttpProtocol, _Done

log = logging.getLogger("lianxin.gateway.lane")
_METHODS = frozenset(PROXIED_METHODS)


class ProxyLane:
    def __init__(
        self,
        app: FastAPI,
        routes: dict[str, str],
        *,
        recorder: RequestRecorder,
        edge: EdgeHeaders,
        cors: bool,
    ) -> None:
        """`routes`: each service's path prefix (`/api/v1/<name>/`) and the route label its
        requests are counted under."""
        self.app = app
        self.routes = {f"/api/v1/{name}/": (name, label) for name, label in routes.items()}
        self.cors = cors
        # The gateway faces clients: what one says about its own address is not believed.
        self.lane = Lane(
            app, recorder, trust_forwarded=False, finish_headers=partial(edge.apply, api=True)
        )

    def takes(self, scope: Scope) -> tuple[str, str] | None:
        """The service and route label of a request the lane serves, else None."""
        path: str = scope["path"]
        if not path.startswith("/api/v1/") or scope["method"] not in _METHODS:
            return None
        end = path.find("/", 8)
        if end < 0:
            return None
        target = self.routes.get(path[: end + 1])
        if target is None or not bodyless(scope):
            return None
        if self.cors and any(name == b"origin" for name, _ in scope["headers"]):
            return None
        return target

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, target: tuple[str, str]
    ) -> None:
        service, route = target
        proxy: Proxy = self.app.state.proxy
        path: str = scope["path"]
        await self.lane.serve(
            scope, receive, send, route, lambda request: proxy.forward(request, service, path)
        )


class FastRelay:
    """The lane's requests that need no decision of the app's, relayed by the server's
    protocol (`gateway.server`) with callbacks: see there for which, and what they get."""

    def __init__(self, proxy_lane: ProxyLane, edge: EdgeHeaders) -> None:
        self.proxy_lane = proxy_lane
        self.app = proxy_lane.app
        self.lane = proxy_lane.lane
        self.recorder = proxy_lane.lane.recorder
        self.edge = edge
        self.answer_drop = _RESPONSE_DROP_B | edge.names

    def answer_lines(self, raw: list[tuple[bytes, bytes]], rid: str) -> bytes:
        """The head lines of a service's answer as the client gets it: its end-to-end
        headers (`end_to_end`), the request id, the edge's (`EdgeHeaders.apply`), in one
        pass."""
        edge = self.edge
        drop = self.answer_drop
        parts: list[bytes] = []
        csp = cache = False
        for name, value in raw:
            name = name.lower()
            if name in drop:
                if name == b"connection" and lists_others(value, drop):
                    return self.edge_lines(end_to_end(raw, _RESPONSE_DROP_B), rid)
                continue
            if name == b"content-security-policy":
                csp = True
            elif name == b"cache-control":
                cache = True
            parts += (name, b": ", value, b"\r\n")
        parts += (b"x-request-id: ", rid.encode(), b"\r\n", edge.lines[csp][cache])
        return b"".join(parts)

    def edge_lines(self, headers: list[tuple[bytes, bytes]], rid: str) -> bytes:
        """`headers` with the request id and the edge's (`EdgeHeaders.apply`), as lines."""
        headers.append((b"x-request-id", rid.encode()))
        return header_lines(self.edge.apply(headers, api=True))

    def ready(self) -> bool:
        """The proxy is up, with the lean client (the relay drives its connections)."""
        proxy = self.app.state._state.get("proxy")  # no `State.__getattr__` per request
        return proxy is not None and isinstance(proxy.sender, LeanSender)

    def start(
        self, protocol: GatewayHttpProtocol, scope: Scope, done: _Done, *, forwarded: bool
    ) -> bool:
        """Sends the request on, or leaves it to the app (False: nothing was done, no
        budget spent). `forwarded`: the server believes `X-Forwarded-*` from some peers
        (uvicorn's proxy headers): a request carrying them is the app's. What
        `ProxyLane.takes` and `bodyless` check is checked here in the same pass over the
        headers as what the relay reads from them."""
        path: str = scope["path"]
        end = path.find("/", 8)
        if end < 0 or not path.startswith("/api/v1/"):
            return False
        target = self.proxy_lane.routes.get(path[: end + 1])
        if target is None:
            return False
        service, route = target
        if has_dot_segments(path) or is_internal(path):
            return False
        cors = self.proxy_lane.cors
        authorization = given_id = host = None
        # The client's end-to-end header lines, taken in the same pass (names in lower
        # case: uvicorn's), for `forward_head`; None: a `Connection` header names others to
        # drop, and `upstream_headers` makes them.
        kept: list[bytes] | None = []
        for name, value in scope["headers"]:
            if name in _REQUEST_DROP_B:
                if name == b"host":
                    if host is None:
                        host = value
                elif name == b"x-request-id":
                    given_id = value
                elif name == b"transfer-encoding" or (
                    forwarded and name.startswith(b"x-forwarded-")
                ):
                    return False
                elif name == b"connection" and lists_others(value, _REQUEST_DROP_B):
                    kept = None
                continue
            if name == b"authorization":
                if authorization is not None:
                    return False
                authorization = value
            elif name == b"content-length":
                if value.strip() not in (b"", b"0"):
                    return False
            elif (
                name == b"x-api-key"
                or (cors and name == b"origin")
                or (forwarded and name.startswith(b"x-forwarded-"))
            ):
                return False
            if kept is not None:
                kept += (name, b": ", value, b"\r\n")
        state = self.app.state._state
        subject = None
        if authorization is not None:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return False
            try:
                subject = state["auth"].verifier.verify(token).subject
            except Exception:  # the app answers it (401), and spends the caller's budget
                return False
        proxy: Proxy = state["proxy"]
        upstream = proxy.upstreams.get(service)
        limiter = state.get("limiter")
        if (
            upstream is None
            or upstream.plain_netloc is None
            or not (limiter is None or isinstance(limiter, MemoryLimiter))
        ):
            return False
        sender = proxy.sender
        assert isinstance(sender, LeanSender)
        pool = sender.pool(upstream)
        conn = pool.take_idle()
        if conn is None:  # the app connects (and waits for a connection) itself
            return False
        try:
            probe = upstream.breaker.acquire()
        except CircuitOpen:
            pool.give_back(conn)
            return False
        # A spent budget: the app answers 429 (its own hit spends nothing more).
        if limiter is not None and not limiter.take(key_of(subject, scope.get("client"))).allowed:
            upstream.breaker.release(probe)
            pool.give_back(conn)
            return False
        rid = request_id_from(given_id)
        query: bytes = scope["query_string"]
        request_target = scope["raw_path"] + (b"?" + query if query else b"")
        netloc = upstream.plain_netloc
        if kept is None:
            head = request_head("GET", request_target, netloc, upstream_headers(scope, rid))
        else:
            head = forward_head(request_target, netloc, kept, rid, scope, host)
        exchange = _Exchange(self, protocol, scope, done, service, upstream, pool, conn)
        exchange.probe, exchange.rid, exchange.route = probe, rid, route
        conn.listener = exchange.event
        assert conn.transport is not None
        conn.transport.write(head)
        read_s = upstream.timeout.read
        if read_s is not None:
            # The protocol's loop: `get_running_loop` costs a system call (getpid) on 3.11.
            conn.watch(protocol.loop, protocol.loop.time() + read_s, exchange.timed_out)
        return True

    async def relay_rest(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange
    ) -> None:
        """An answer too large to hold (or of unknown length), streamed through the app's
        lane once its head has come."""
        reply = _LeanReply(exchange.pool, exchange.conn, exchange.upstream.timeout.read)
        proxy: Proxy = self.app.state.proxy
        scope["app"] = self.app
        await self.lane.serve(
            scope,
            receive,
            send,
            exchange.route,
            lambda request: proxy.relay(reply, exchange.service),
            request_id=exchange.rid,
        )


class _Exchange:
    """One request the relay has sent on, until its answer is written (or handed over)."""

    __slots__ = (
        "conn",
        "done",
        "held",
        "pool",
        "probe",
        "protocol",
        "relay",
        "rid",
        "route",
        "scope",
        "service",
        "start",
        "upstream",
    )

    def __init__(
        self,
        relay: FastRelay,
        protocol: GatewayHttpProtocol,
        scope: Scope,
        done: _Done,
        service: str,
        upstream: Upstream,
        pool: _Pool,
        conn: _Connection,
    ) -> None:
        self.relay, self.protocol, self.scope, self.done = relay, protocol, scope, done
        self.service, self.upstream, self.pool, self.conn = service, upstream, pool, conn
        self.probe = False
        self.held = False
        self.rid = self.route = ""
        self.start = time.perf_counter()
        relay.recorder.metrics.in_flight_now += 1

    def event(self) -> None:
        """Something came from the service (or the connection failed)."""
        conn = self.conn
        try:
            if conn.error is not None:
                self._failed()
            elif conn.complete:
                self._answered()
            elif conn.head_done and not self.held:
                if not _small(conn.status, conn.headers):
                    self._stream()
                else:
                    self.held = True  # whole: written once complete
        except Exception:  # a fault of the relay's own: the client is not left waiting
            log.exception("the relay failed on %s", self.route)
            self.protocol.transport.close()

    def _end(self) -> None:
        self.conn.unwatch()
        self.conn.listener = None
        self.relay.recorder.metrics.in_flight_now -= 1

    def _answered(self) -> None:
        self._end()
        conn = self.conn
        status = conn.status
        lines = self.relay.answer_lines(conn.headers, self.rid)
        body = b"".join(conn.body)
        self.pool.release(conn)
        self.upstream.breaker.success()
        self._write(status, lines, body)

    def _write(self, status: int, lines: bytes, body: bytes) -> None:
        self.protocol.write_answer(self.done, status, lines, body)
        self.relay.recorder.record(
            "GET",
            self.route,
            status,
            time.perf_counter() - self.start,
            failed=False,
            path=self.scope["path"],
        )

    def _stream(self) -> None:
        self._end()
        self.upstream.breaker.success()
        self.protocol.hand_over(
            self.done, self.scope, partial(self.relay.relay_rest, exchange=self)
        )

    def _failed(self) -> None:
        """The connection failed. Before anything came back, the service closed a kept-alive
        connection before the request reached it: the app sends the request again (on a
        new connection). After: the service failed to answer (503 problem)."""
        self._end()
        conn = self.conn
        self.pool._discard(conn)
        self.upstream.breaker.release(self.probe)
        if not conn.received:
            self.protocol.hand_over(self.done, self.scope)
            return
        self._problem(UpstreamUnavailable(f"The {self.service} service failed to answer."))

    def timed_out(self) -> None:
        """The service took longer than its read timeout (504 problem, as the app's)."""
        self._end()
        self.pool._discard(self.conn)
        self.upstream.breaker.release(self.probe)
        self._problem(UpstreamTimeout(f"The {self.service} service did not answer in time."))

    def _problem(self, exc: AppError) -> None:
        token = request_id_var.set(self.rid)
        try:
            response = app_error_response(exc)
        finally:
            request_id_var.reset(token)
        lines = self.relay.edge_lines(list(response.raw_headers), self.rid)
        self._write(response.status_code, lines, bytes(response.body))


def _small(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """An answer of a length the relay holds whole (`BUFFER_MAX_BYTES`), or one that has
    no body whatever it says (`204`, `304`: RFC 9110 §6.4.1)."""
    if status in (204, 304):
        return True
    length = content_length(headers)
    return length is not None and length <= BUFFER_MAX_BYTES
