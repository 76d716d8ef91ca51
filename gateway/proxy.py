"""Streams `/api/v1/<service>/...` to the service that owns it (httpx's streaming proxy
recipe): one long-lived pooled client per gateway, request and response bodies streamed,
hop-by-hop headers dropped, `X-Request-ID` and `X-Forwarded-*` passed on.

Per upstream: a short connect timeout and a configurable read timeout (504 problem), retries
on connect errors for idempotent methods only, and a circuit breaker (503 problem at once
while open). A service that is down takes none of the others with it."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import anyio
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport as _BaseAiohttpTransport
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from common.context import request_id_var
from common.errors import AppError, GatewayTimeout, NotFound, ServiceUnavailable
from common.tracing import trace_headers
from gateway.breaker import CircuitBreaker
from gateway.ratelimit import enforce as enforce_rate_limit
from gateway.settings import GatewaySettings
from gateway.upstream_http import LeanSender

log = logging.getLogger("lianxin.gateway.proxy")

# RFC 9110 §7.6.1 connection-specific fields, plus what the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "expect",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
}
# The gateway's server stamps its own `date` and `server`; two of each would be wrong.
_RESPONSE_DROP = HOP_BY_HOP | {"date", "server", "x-request-id"}
_REQUEST_DROP_B = frozenset(n.encode("latin-1") for n in _REQUEST_DROP)
_RESPONSE_DROP_B = frozenset(n.encode("latin-1") for n in _RESPONSE_DROP)
# An answer up to this size with a `Content-Length` is read whole and sent in one piece.
BUFFER_MAX_BYTES = 64 * 1024

PROXIED_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_BACKOFF_S = 0.02
# The lean client reuses a connection idle for less than this: uvicorn closes them at 5 s.
LEAN_KEEPALIVE_S = 4.0

Authorize = Callable[[Request], Awaitable[object]]


class UpstreamUnavailable(ServiceUnavailable):
    """The service could not be reached (refused, reset, or no route)."""


class UpstreamTimeout(GatewayTimeout):
    """The service took longer than its timeout."""


class _RequestBodyFailed(Exception):
    """Reading the client's body failed (too large, or the client went away)."""


def end_to_end(raw: list[tuple[bytes, bytes]], drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """Header pairs with their names in lower case, without `drop` and without what
    `Connection` lists (hop-by-hop too, RFC 9110 §7.6.1)."""
    pairs = [(k.lower(), v) for k, v in raw]
    for name, value in pairs:
        if name == b"connection":
            drop = drop | {t.strip().lower() for t in value.split(b",") if t.strip()}
    return [(k, v) for k, v in pairs if k not in drop]


@dataclass
class Upstream:
    name: str
    base_url: httpx.URL
    timeout: httpx.Timeout
    breaker: CircuitBreaker

    def __post_init__(self) -> None:
        self.timeout_extension: dict[str, float | None] = self.timeout.as_dict()
        # What a request's own path and query follow (`upstream_url` keeps no base path).
        self.origin = f"{self.base_url.scheme}://{self.base_url.netloc.decode('ascii')}"
        # The `Host` the relay writes (`gateway.server`: plain HTTP only), else None.
        self.plain_netloc: bytes | None = (
            self.base_url.netloc if self.base_url.scheme == "http" else None
        )
        # As httpx-aiohttp maps httpx's timeouts: connect per socket, the pool wait overall.
        self.aiohttp_timeout = aiohttp.ClientTimeout(
            sock_connect=self.timeout.connect,
            sock_read=self.timeout.read,
            connect=self.timeout.pool,
        )


class _Body:
    """The client's request body, streamed once; remembers whether it was started (a retry
    is only safe before) and whether reading it failed (too large, the client went away:
    the client's side, not the upstream's)."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.started = False
        self.error: Exception | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        try:
            async for chunk in self._request.stream():
                if chunk:
                    yield chunk
        except Exception as exc:
            self.error = exc
            raise _RequestBodyFailed from exc


def upstream_headers(scope: Scope, request_id: str) -> list[tuple[bytes, bytes]]:
    """The headers a request goes on to its service with: the client's end-to-end ones,
    the request id, and `X-Forwarded-For`/`-Proto`/`-Host` as the gateway saw them."""
    out = end_to_end(scope["headers"], _REQUEST_DROP_B)
    out.append((b"x-request-id", request_id.encode("latin-1")))
    client = scope.get("client")
    if client:
        # The gateway is the edge: what a client says about its own address is ignored.
        out.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
    out.append((b"x-forwarded-proto", str(scope["scheme"]).encode("latin-1")))
    for name, value in scope["headers"]:
        if name == b"host":
            if value:
                out.append((b"x-forwarded-host", value))
            break
    return out


def lists_others(connection: bytes, drop: frozenset[bytes]) -> bool:
    """A `Connection` header's value naming a header that `drop` does not hold."""
    return any(t.strip().lower() not in drop for t in connection.split(b",") if t.strip())


def forward_head(
    target: bytes,
    netloc: bytes,
    kept: list[bytes],
    request_id: str,
    scope: Scope,
    host: bytes | None,
) -> bytes:
    """The head of a `GET` as `request_head` writes it with `upstream_headers`, from the
    client's end-to-end header lines (`kept`: `name`, `: `, `value`, CRLF, names in lower
    case) and its first `Host` header, which the relay takes in its one pass over the
    headers."""
    client = scope.get("client")
    tail = [b"x-request-id: ", request_id.encode("latin-1")]
    if client:
        tail += (b"\r\nx-forwarded-for: ", str(client[0]).encode("latin-1"))
    tail += (b"\r\nx-forwarded-proto: ", str(scope["scheme"]).encode("latin-1"))
    if host:
        tail += (b"\r\nx-forwarded-host: ", host)
    tail.append(b"\r\n\r\n")
    return b"".join(
        (b"GET ", target, b" HTTP/1.1\r\nhost: ", netloc, b"\r\n", b"".join(kept), *tail)
    )


def has_dot_segments(path: str) -> bool:
    """`.` or `..` among a path's segments: it could leave the service's prefix."""
    if "." not in path:
        return False
    segments = path.split("/")
    return ".." in segments or "." in segments


def _upstream_target(request: Request, service: str) -> bytes:
    """The path and query as the client sent them (still percent-encoded), refused when
    dot segments could make it leave the service's prefix."""
    path: str = request.scope["path"]
    raw_path: bytes = request.scope.get("raw_path") or path.encode()
    if has_dot_segments(path):
        raise NotFound("No such path.")
    if not path.startswith(f"/api/v1/{service}/"):
        raise NotFound("No such path.")
    query: bytes = request.scope.get("query_string") or b""
    return raw_path + (b"?" + query if query else b"")


# A target of only these (RFC 3986 path and query characters, `%` only as an escape) is
# what `httpx.URL.copy_with(raw_path=...)` keeps as it is: it needs no parsing again.
_PLAIN_TARGET = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")


def upstream_url(base: httpx.URL, target: bytes) -> httpx.URL:
    """`base.copy_with(raw_path=target)`: the service's URL of a request. httpx parses and
    checks the whole URL again for that (~50 µs a request, an eighth of the gateway's own
    CPU per proxied request); a target the server already took and that holds nothing to
    escape or normalize (the usual one) only replaces the base's path and query."""
    reference = getattr(base, "_uri_reference", None)
    if reference is None or not _PLAIN_TARGET.fullmatch(target) or not target.startswith(b"/"):
        return base.copy_with(raw_path=target)
    path, question, query = target.decode("ascii").partition("?")
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = reference._replace(path=path, query=query if question else None)
    return url


def _has_body(request: Request) -> bool:
    for name, value in request.scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


class Proxy:
    def __init__(
        self,
        upstreams: dict[str, Upstream],
        client: httpx.AsyncClient,
        *,
        authorize: Authorize | None = None,
        retries: int = 2,
    ) -> None:
        self.upstreams = upstreams
        self.client = client
        # Requests go straight to the client's transport: `client.send` would add the
        # client's cookie jar (one for every caller: a service's `Set-Cookie` would be
        # replayed to it for the next caller) and per-request work a proxy has no use for.
        # Over aiohttp, straight to its session: no httpx request or response is built.
        transport = client._transport
        self.sender: Sender = (
            AiohttpSender(transport)
            if isinstance(transport, AiohttpTransport)
            else HttpxSender(transport)
        )
        self.authorize = authorize
        self.retries = max(0, retries)

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        client: httpx.AsyncClient,
        *,
        authorize: Authorize | None = None,
    ) -> Proxy:
        upstreams = {}
        for name, url in settings.upstreams().items():
            read = settings.upstream_read_timeouts.get(name, settings.upstream_timeout_s)
            upstreams[name] = Upstream(
                name=name,
                base_url=httpx.URL(url),
                timeout=httpx.Timeout(
                    connect=settings.upstream_connect_timeout_s,
                    read=read,
                    write=read,
                    pool=max(read, settings.upstream_connect_timeout_s),
                ),
                breaker=CircuitBreaker(
                    name,
                    threshold=settings.breaker_threshold,
                    reset_after_s=settings.breaker_reset_s,
                ),
            )
        proxy = cls(upstreams, client, authorize=authorize, retries=settings.upstream_retries)
        if settings.upstream_transport == "lean" and isinstance(proxy.sender, AiohttpSender):
            proxy.sender = LeanSender(
                proxy.sender,
                max_connections=settings.upstream_max_connections,
                keepalive_s=LEAN_KEEPALIVE_S,
            )
        return proxy

    async def aclose(self) -> None:
        """Closes what the proxy opened itself (the lean client's connections); the
        upstream client is its owner's to close."""
        if isinstance(self.sender, LeanSender):
            await self.sender.aclose()

    async def forward(self, request: Request, service: str, path: str) -> Response:
        upstream = self.upstreams.get(service)
        if upstream is None:
            raise NotFound(f"There is no service {service!r}.")
        await self._authorize(request)
        headers = self._request_headers(request)
        target = _upstream_target(request, service)
        body = _Body(request) if _has_body(request) else None
        method = request.method
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        for attempt in range(attempts):
            probe = upstream.breaker.acquire()  # raises CircuitOpen: 503, no connect attempt
            try:
                reply = await self.sender.send(method, upstream, target, headers, body)
            except httpx.TransportError as exc:
                if body is not None and body.error is not None:
                    upstream.breaker.release(probe)
                    raise self._body_error(body) from exc
                if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    # Connected, then failed or too slow: the service is there.
                    upstream.breaker.release(probe)
                    if isinstance(exc, httpx.TimeoutException):
                        raise UpstreamTimeout(
                            f"The {service} service did not answer in time."
                        ) from exc
                    raise UpstreamUnavailable(f"The {service} service failed to answer.") from exc
                upstream.breaker.failure()
                log.warning(
                    "upstream %s: %s (attempt %d/%d)",
                    service,
                    type(exc).__name__,
                    attempt + 1,
                    attempts,
                )
                if attempt + 1 == attempts or (body is not None and body.started):
                    if isinstance(exc, httpx.ConnectTimeout):
                        raise UpstreamTimeout(
                            f"The {service} service did not accept a connection in time."
                        ) from exc
                    raise UpstreamUnavailable(f"The {service} service is unavailable.") from exc
                await asyncio.sleep(RETRY_BACKOFF_S * (2**attempt))
            except _RequestBodyFailed:
                upstream.breaker.release(probe)
                raise self._body_error(body) from None
            except BaseException:  # cancelled: nothing learnt about the service
                upstream.breaker.release(probe)
                raise
            else:
                upstream.breaker.success()
                return await self.relay(reply, service)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _authorize(self, request: Request) -> None:
        """Authenticate, then spend a token of the caller's rate budget (keyed by the
        principal when authentication named one, else by address). A failed
        authentication still costs a token, so guessing is rate limited too."""
        failure: AppError | None = None
        if self.authorize is not None:
            try:
                await self.authorize(request)
            except AppError as exc:
                failure = exc
        await enforce_rate_limit(request)
        if failure is not None:
            raise failure

    def _request_headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        out = upstream_headers(request.scope, request_id_var.get() or "")
        traced = trace_headers()  # the gateway's span, when tracing is on
        if traced:
            out = [(k, v) for k, v in out if k not in _TRACE_HEADERS] + traced
        return out

    @staticmethod
    def _body_error(body: _Body | None) -> Exception:
        """What went wrong reading the client's body, as the gateway's handlers (and its
        body limit middleware) expect to see it."""
        error = body.error if body is not None else None
        if error is None or isinstance(error, ClientDisconnect):
            return _ClientClosed("The client closed the request before sending all of it.")
        return error

    @staticmethod
    async def relay(reply: Reply, service: str) -> Response:
        """The service's answer, relayed: a small body of known length read whole and
        sent as one (no relay task per request), anything else streamed as it arrives."""
        headers = end_to_end(reply.raw_headers, _RESPONSE_DROP_B)
        length = reply.content_length
        if length is not None and length <= BUFFER_MAX_BYTES:
            try:
                content = await reply.read()
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await reply.aclose()
                if isinstance(exc, httpx.TransportError):
                    raise UpstreamUnavailable(f"The {service} service failed to answer.") from exc
                raise
            await reply.aclose()  # read to the end: back to the pool, nothing to wait for
            whole = Response(status_code=reply.status)
            whole.body = content
            whole.raw_headers = headers
            return whole
        response = _UpstreamResponse(reply)
        response.raw_headers = headers
        return response


class _UpstreamResponse(StreamingResponse):
    """The service's response, relayed as it arrives. The upstream response goes back to
    the pool however the relay ends, the client going away included."""

    def __init__(self, upstream: Reply) -> None:
        super().__init__(upstream.chunks(), status_code=upstream.status)
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()


class _ClientClosed(AppError):
    status, title, slug = 400, "Bad request", "client-closed-request"


# --- how a request reaches the service ---------------------------------------------------


class Reply(Protocol):
    """A service's answer as the proxy relays it. Errors reading it are httpx's."""

    status: int
    raw_headers: list[tuple[bytes, bytes]]
    content_length: int | None

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Sender(Protocol):
    async def send(
        self,
        method: str,
        upstream: Upstream,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: _Body | None,
    ) -> Reply:
        """The service's answer to a request for `target` (path and query); a failure to
        reach it or to hear from it is an `httpx.TransportError` that says which."""
        ...


def _length(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


class _HttpxReply:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.raw_headers = response.headers.raw
        self.content_length = _length(response.headers.get("content-length"))

    def chunks(self) -> AsyncIterator[bytes]:
        return self.response.aiter_raw()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.response.aiter_raw()])

    async def aclose(self) -> None:
        await self.response.aclose()


class HttpxSender:
    """Any httpx transport: httpx's own pool, or what tests put in place of the network."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def send(
        self,
        method: str,
        upstream: Upstream,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: _Body | None,
    ) -> Reply:
        request = httpx.Request(
            method,
            upstream_url(upstream.base_url, target),
            headers=headers,
            content=body,
            extensions={"timeout": upstream.timeout_extension},
        )
        return _HttpxReply(await self.transport.handle_async_request(request))


# aiohttp adds these unless told not to; the service sees what the caller sent.
_NO_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


class _AiohttpReply:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.status = response.status
        self.raw_headers = list(response.raw_headers)
        self.content_length = response.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise _transport_error(exc) from exc

    async def read(self) -> bytes:
        try:
            return await self.response.read()
        except aiohttp.ClientError as exc:
            raise _transport_error(exc) from exc

    async def aclose(self) -> None:
        # Back to the pool when it was read to the end; a half-read one is closed.
        self.response.release()
        await self.response.wait_for_close()


class AiohttpSender:
    """aiohttp's session, called directly: no httpx request or response built per call
    (that wrapping was a fifth of the gateway's CPU per proxied request)."""

    def __init__(self, transport: AiohttpTransport) -> None:
        self.transport = transport

    async def send(
        self,
        method: str,
        upstream: Upstream,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: _Body | None,
    ) -> Reply:
        if _PLAIN_TARGET.fullmatch(target) and target.startswith(b"/"):
            url = yarl.URL(upstream.origin + target.decode("ascii"), encoded=True)
        else:
            url = yarl.URL(str(upstream_url(upstream.base_url, target)), encoded=True)
        try:
            response = await self.transport.session().request(
                method,
                url,
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                data=body,
                skip_auto_headers=_NO_AUTO_HEADERS,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=upstream.aiohttp_timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc) from exc
        return _AiohttpReply(response)


# --- the upstream client ---------------------------------------------------------------


def make_transport(settings: GatewaySettings) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
        keepalive_expiry=30.0,
    )
    if settings.upstream_transport == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    return AiohttpTransport(limits=limits, trust_env=False)


def make_client(
    settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The gateway's one upstream client. It adds no `Accept`/`Accept-Encoding` of its own:
    the service sees what the caller asked for."""
    client = httpx.AsyncClient(
        transport=transport or make_transport(settings),
        timeout=httpx.Timeout(
            settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
        ),
        trust_env=False,
        follow_redirects=False,
    )
    for name in ("accept", "accept-encoding"):
        del client.headers[name]
    return client


class AiohttpTransport(_BaseAiohttpTransport):
    """httpx-aiohttp's transport with aiohttp's errors mapped by what they mean: its own
    table maps a refused connection to `ConnectTimeout` and a dropped one to `ConnectTimeout`
    too, which would count slow services as dead ones and dead ones as slow."""

    def session(self) -> aiohttp.ClientSession:
        """The transport's aiohttp session (made on first use, in the running loop)."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _remap(exc) from exc.__cause__


def _transport_error(exc: BaseException) -> httpx.TransportError:
    """An aiohttp failure as the httpx error that says what happened."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, _RequestBodyFailed) or isinstance(exc.__cause__, _RequestBodyFailed):
        return httpx.WriteError(message)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return httpx.RemoteProtocolError(message)
    return httpx.TransportError(message)


def _remap(exc: httpx.TransportError) -> httpx.TransportError:
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | _RequestBodyFailed):
        return _transport_error(cause)
    return exc
