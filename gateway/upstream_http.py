"""A lean HTTP/1.1 client for the proxy's most frequent calls: a `GET`, `DELETE` or
`OPTIONS` without a body, to a service on the internal network, over kept-alive
connections.

Per proxied read, aiohttp's client cost the gateway more CPU than its own server side:
a request object, a response object, a header multidict, cookie and redirect handling,
timers per socket read. This client writes the request head in one `write` and parses
the answer with `httptools` (the parser uvicorn's server uses) straight into what the
proxy relays: the status, the raw header pairs, the body (whole, or chunk by chunk with
flow control for a large or open-ended one).

- One pool per service, at most `max_connections` connections, the last used reused first;
  a connection idle for longer than `keepalive_s` is closed rather than reused (uvicorn
  closes idle ones after 5 s: reusing one it is closing would fail the request).
- A reused connection that the service closed before answering is retried once on a new
  one (only these idempotent methods come here); a new connection that fails is the
  service's failure.
- Timeouts as the other clients': `connect` per connection attempt, `pool` for a free
  connection, `read` for the answer's head and then for each piece of its body.
- Failures are httpx's errors that say what happened (`ConnectError`, `ConnectTimeout`,
  `PoolTimeout`, `ReadTimeout`, `RemoteProtocolError`, `ReadError`), as the proxy expects.

Anything else (a body to send, `HEAD`, whose answer has a length but no body) goes to the
fallback sender. An answer whose end is only the connection closing (no length, not
chunked: HTTP/1.0 style) ends in `ReadError`; the services (uvicorn) always send a length or
chunks."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, cast

import httptools
import httpx

if TYPE_CHECKING:
    from gateway.proxy import Reply, Sender, Upstream, _Body

LEAN_METHODS = frozenset({"GET", "DELETE", "OPTIONS"})
# Paused reading above this much unread body; resumed below a quarter of it.
HIGH_WATER = 256 * 1024


class _Connection(asyncio.Protocol):
    """One kept-alive connection to a service, carrying one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        # Called instead of waking a waiter, while a relay drives the exchange by callbacks.
        self.listener: Callable[[], None] | None = None
        # The relay's read deadline (`watch`): loop time, what to call, the one timer.
        self.deadline = 0.0
        self.expired: Callable[[], None] | None = None
        self.deadline_timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed answer: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return False  # close: nothing more comes

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(httpx.ReadError(str(exc) if exc else "the service closed the connection"))

    def pause_writing(self) -> None:  # a request head is small: nothing to hold back
        pass

    def resume_writing(self) -> None:
        pass

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # the exchange
    def _wake(self) -> None:
        listener = self.listener
        if listener is not None:
            listener()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def wait(self, limit_s: float | None) -> None:
        """Until something arrives (or the connection fails), at most `limit_s` s."""
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        # The connection's one deadline timer (`watch`), as the relay's: `asyncio.timeout`
        # or a timer per wait cost more.
        if limit_s is not None:
            self.watch(loop, loop.time() + limit_s, partial(_expire, waiter))
        try:
            await waiter
        finally:
            self.waiter = None
            if limit_s is not None:
                self.unwatch()

    def watch(
        self, loop: asyncio.AbstractEventLoop, deadline: float, expired: Callable[[], None]
    ) -> None:
        """`expired()` at `deadline` (`loop`'s time) unless `unwatch` came first: the
        relay's read deadline and `wait`'s. One timer per connection, moved on when it
        fires before the deadline then current, instead of one made and cancelled per
        exchange or wait."""
        self.deadline, self.expired = deadline, expired
        timer = self.deadline_timer
        if timer is not None and timer.when() <= deadline:
            return
        if timer is not None:
            timer.cancel()
        self.deadline_timer = loop.call_at(deadline, self._deadline_check, loop)

    def unwatch(self) -> None:
        self.expired = None

    def _deadline_check(self, loop: asyncio.AbstractEventLoop) -> None:
        self.deadline_timer = None
        expired = self.expired
        if expired is None:
            return
        if loop.time() < self.deadline:
            self.deadline_timer = loop.call_at(self.deadline, self._deadline_check, loop)
            return
        self.expired = None
        expired()

    def take(self) -> bytes:
        chunk = self.body.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered < HIGH_WATER // 4 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        self.closed = True
        self.expired = None
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("the service did not answer in time"))


class _Pool:
    def __init__(self, host: str, port: int, *, limit: int, keepalive_s: float) -> None:
        self.host, self.port = host, port
        self.limit = max(1, limit)
        self.keepalive_s = keepalive_s
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_idle(self) -> _Connection | None:
        """A kept-alive connection to reuse now, if one is idle (else None)."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                conn.reused = True
                return conn
            self._discard(conn)
        return None

    def give_back(self, conn: _Connection) -> None:
        """An idle connection `take_idle` gave, unused: idle again, as it was."""
        self.idle.append(conn)

    async def acquire(self, connect_s: float | None, pool_s: float | None) -> _Connection:
        conn = self.take_idle()
        if conn is not None:
            return conn
        if self.open >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout(pool_s):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection to the service in time") from None
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            return await self.acquire(connect_s, pool_s)
        return await self.connect(connect_s)

    async def connect(self, connect_s: float | None) -> _Connection:
        self.open += 1
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await asyncio.get_running_loop().create_connection(
                    _Connection, self.host, self.port
                )
        except TimeoutError:
            self._closed_one()
            raise httpx.ConnectTimeout("the service did not accept a connection in time") from None
        except OSError as exc:
            self._closed_one()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._closed_one()
            raise
        return conn

    def release(self, conn: _Connection) -> None:
        """Back to the pool when its exchange ended cleanly and both sides keep it alive;
        else closed."""
        if conn.closed or not conn.complete or not conn.keep_alive or conn.error is not None:
            self._discard(conn)
            return
        conn._reset()
        conn.listener = None
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self._notify()

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._closed_one()

    def _closed_one(self) -> None:
        self.open -= 1
        self._notify()

    def _notify(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class _LeanReply:
    def __init__(self, pool: _Pool, conn: _Connection, read_s: float | None) -> None:
        self.pool, self.conn, self.read_s = pool, conn, read_s
        self.status = conn.status
        self.raw_headers = conn.headers
        self.content_length = content_length(conn.headers)
        self._released = False

    async def _next(self) -> bytes | None:
        conn = self.conn
        while True:
            if conn.body:
                return conn.take()
            if conn.complete:
                return None
            if conn.error is not None:
                raise conn.error
            await conn.wait(self.read_s)

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self._next()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._next()) is not None:
            yield chunk

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self.pool.release(self.conn)


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """An answer's `Content-Length`, when it has a valid one."""
    for name, value in headers:
        if name.lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


def header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """`name: value` lines, each ended by CRLF."""
    return b"".join(b"%s: %s\r\n" % pair for pair in headers)


def request_head(
    method: str, target: bytes, netloc: bytes, headers: list[tuple[bytes, bytes]]
) -> bytes:
    """An HTTP/1.1 request's head, in one piece."""
    return b"".join(
        (
            method.encode("ascii"),
            b" ",
            target,
            b" HTTP/1.1\r\nhost: ",
            netloc,
            b"\r\n",
            header_lines(headers),
            b"\r\n",
        )
    )


class LeanSender:
    """`GET`, `DELETE` and `OPTIONS` without a body over this module's pools; the rest
    through `fallback`."""

    def __init__(self, fallback: Sender, *, max_connections: int, keepalive_s: float) -> None:
        self.fallback = fallback
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self._pools: dict[str, _Pool] = {}

    def pool(self, upstream: Upstream) -> _Pool:
        pool = self._pools.get(upstream.name)
        if pool is None:
            url = upstream.base_url
            port = url.port or (443 if url.scheme == "https" else 80)
            pool = _Pool(url.host, port, limit=self.max_connections, keepalive_s=self.keepalive_s)
            self._pools[upstream.name] = pool
        return pool

    async def send(
        self,
        method: str,
        upstream: Upstream,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: _Body | None,
    ) -> Reply:
        if body is not None or method not in LEAN_METHODS or upstream.base_url.scheme != "http":
            return await self.fallback.send(method, upstream, target, headers, body)
        head = request_head(method, target, upstream.base_url.netloc, headers)
        timeout = upstream.timeout
        pool = self.pool(upstream)
        for attempt in (1, 2):
            conn = await pool.acquire(timeout.connect, timeout.pool)
            try:
                assert conn.transport is not None
                conn.transport.write(head)
                while not conn.head_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(timeout.read)
            except httpx.ReadError:
                pool._discard(conn)
                # A kept-alive connection the service closed before our request reached
                # it: once more on a new one.
                if attempt == 1 and conn.reused and not conn.received:
                    continue
                raise
            except BaseException:
                pool._discard(conn)
                raise
            return _LeanReply(pool, conn, timeout.read)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
