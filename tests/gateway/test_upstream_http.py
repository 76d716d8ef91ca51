"""The gateway's lean HTTP/1.1 client against a scripted server on a loopback socket: it
reuses kept-alive connections, retries once a reused one the server closed before
answering (and nothing else), keeps to its pool limit, gives each failure as the httpx
error the proxy expects, and leaves bodies, `HEAD` and other methods to its fallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.breaker import CircuitBreaker
from gateway.proxy import Reply, Upstream
from gateway.upstream_http import LeanSender, _Connection, _LeanReply
from tests.gateway.scripted import Handler, Script, answer, scripted_servers

LIMIT_S = 5.0


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Script]]]:
    async with scripted_servers() as start:
        yield start


class Fallback:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def send(self, method: str, *args: Any) -> Reply:
        self.calls.append(method)
        raise httpx.ConnectError("fallback reached")


def upstream(url: str, *, read_s: float = LIMIT_S, pool_s: float = LIMIT_S) -> Upstream:
    return Upstream(
        name="registry",
        base_url=httpx.URL(url),
        timeout=httpx.Timeout(connect=1.0, read=read_s, write=read_s, pool=pool_s),
        breaker=CircuitBreaker("registry", threshold=5, reset_after_s=5.0),
    )


def lean(*, max_connections: int = 10, keepalive_s: float = 4.0) -> LeanSender:
    return LeanSender(Fallback(), max_connections=max_connections, keepalive_s=keepalive_s)


async def get(sender: LeanSender, up: Upstream, target: bytes = b"/api/v1/x") -> bytes:
    async with asyncio.timeout(LIMIT_S):
        reply = await sender.send("GET", up, target, [(b"accept", b"*/*")], None)
        try:
            assert reply.status == 200
            return await reply.read()
        finally:
            await reply.aclose()


async def keep_alive(number: int, head: bytes, r: asyncio.StreamReader, w: Any) -> bool:
    w.write(answer(b'{"n":%d}' % number))
    await w.drain()
    return True


class TestExchange:
    async def test_request_head_and_answer(self, serve: Any) -> None:
        script = await serve(keep_alive)
        sender = lean()
        up = upstream(script.url)
        async with asyncio.timeout(LIMIT_S):
            reply = await sender.send(
                "GET", up, b"/api/v1/registry/members?q=1", [(b"x-request-id", b"r1")], None
            )
        assert reply.status == 200
        assert (b"content-type", b"application/json") in reply.raw_headers
        assert reply.content_length == len(b'{"n":1}')
        assert await reply.read() == b'{"n":1}'
        await reply.aclose()
        head = script.heads[0]
        host = httpx.URL(script.url).netloc
        assert head.startswith(b"GET /api/v1/registry/members?q=1 HTTP/1.1\r\n")
        assert b"\r\nhost: " + host + b"\r\n" in head
        assert b"\r\nx-request-id: r1\r\n" in head
        await sender.aclose()

    async def test_kept_alive_connection_is_reused(self, serve: Any) -> None:
        script = await serve(keep_alive)
        sender = lean()
        up = upstream(script.url)
        bodies = [await get(sender, up) for _ in range(5)]
        assert bodies == [b'{"n":1}'] * 5
        assert script.connections == 1
        await sender.aclose()

    async def test_connection_idle_too_long_is_not_reused(self, serve: Any) -> None:
        script = await serve(keep_alive)
        sender = lean(keepalive_s=0.0)
        up = upstream(script.url)
        assert [await get(sender, up) for _ in range(2)] == [b'{"n":1}', b'{"n":2}']
        assert script.connections == 2
        await sender.aclose()

    async def test_connection_close_from_the_service_is_honoured(self, serve: Any) -> None:
        async def closing(number: int, head: bytes, r: Any, w: Any) -> bool:
            w.write(answer(b"%d" % number, extra=b"connection: close\r\n"))
            await w.drain()
            return False

        script = await serve(closing)
        sender = lean()
        up = upstream(script.url)
        assert [await get(sender, up) for _ in range(2)] == [b"1", b"2"]
        assert script.connections == 2
        await sender.aclose()

    async def test_chunked_and_large_answers_arrive_whole(self, serve: Any) -> None:
        big = bytes(range(256)) * 8192  # 2 MiB: reading pauses and resumes

        async def chunked(number: int, head: bytes, r: Any, w: Any) -> bool:
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for start in range(0, len(big), 65536):
                piece = big[start : start + 65536]
                w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            w.write(b"0\r\n\r\n")
            await w.drain()
            return True

        script = await serve(chunked)
        sender = lean()
        up = upstream(script.url)
        async with asyncio.timeout(LIMIT_S):
            reply = await sender.send("GET", up, b"/blob", [], None)
            assert reply.content_length is None
            assert isinstance(reply, _LeanReply)
            while not reply.conn.paused:  # unread: the client stops reading, not buffering
                assert reply.conn.buffered < len(big) // 2
                await asyncio.sleep(0.005)
            received = b"".join([chunk async for chunk in reply.chunks()])
            await reply.aclose()
        assert received == big
        assert await get(sender, up) == big  # again, on the same connection
        assert script.connections == 1
        await sender.aclose()


class TestFailures:
    async def test_reused_connection_closed_unanswered_is_retried_once(self, serve: Any) -> None:
        """The service closed a kept-alive connection as the request went out: the request
        goes again on a new connection, and the caller sees only the answer."""

        async def first_then_drop(number: int, head: bytes, r: Any, w: Any) -> bool:
            if number == 1 and len(script.heads) > 1:
                return False  # the second request on connection 1: closed, unanswered
            w.write(answer(b"%d" % number))
            await w.drain()
            return True

        script = await serve(first_then_drop)
        sender = lean()
        up = upstream(script.url)
        assert await get(sender, up) == b"1"
        assert await get(sender, up) == b"2"
        assert script.connections == 2
        assert len(script.heads) == 3
        await sender.aclose()

    async def test_new_connection_closed_unanswered_is_a_read_error(self, serve: Any) -> None:
        async def drop(number: int, head: bytes, r: Any, w: Any) -> bool:
            return False

        script = await serve(drop)
        sender = lean()
        with pytest.raises(httpx.ReadError):
            await get(sender, upstream(script.url))
        assert script.connections == 1  # not retried: the service failed
        await sender.aclose()

    async def test_malformed_answer_is_a_protocol_error(self, serve: Any) -> None:
        async def garbage(number: int, head: bytes, r: Any, w: Any) -> bool:
            w.write(b"NOT HTTP AT ALL\r\n\r\n")
            await w.drain()
            return True

        script = await serve(garbage)
        sender = lean()
        with pytest.raises(httpx.RemoteProtocolError):
            await get(sender, upstream(script.url))
        await sender.aclose()

    async def test_no_answer_in_time_is_a_read_timeout(self, serve: Any) -> None:
        release = asyncio.Event()

        async def hang(number: int, head: bytes, r: Any, w: Any) -> bool:
            await release.wait()
            return False

        script = await serve(hang)
        sender = lean()
        with pytest.raises(httpx.ReadTimeout):
            await get(sender, upstream(script.url, read_s=0.2))
        release.set()
        await sender.aclose()

    async def test_refused_connection_is_a_connect_error(self, serve: Any) -> None:
        script = await serve(keep_alive)
        url = script.url
        script.server.close()
        await script.server.wait_closed()
        sender = lean()
        with pytest.raises(httpx.ConnectError):
            await get(sender, upstream(url))
        await sender.aclose()


class TestPool:
    async def test_waits_for_a_free_connection_and_times_out(self, serve: Any) -> None:
        """One connection allowed: a second request waits while the first answer is being
        read, fails with `PoolTimeout` past the pool timeout, and goes through once the
        first is done."""
        go_on = asyncio.Event()

        async def slow_body(number: int, head: bytes, r: Any, w: Any) -> bool:
            if b"/slow" in head:
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
                await w.drain()
                await go_on.wait()
                w.write(b"cd")
            else:
                w.write(answer(b"fast"))
            await w.drain()
            return True

        script = await serve(slow_body)
        sender = lean(max_connections=1)
        up = upstream(script.url, pool_s=0.2)
        async with asyncio.timeout(LIMIT_S):
            first = await sender.send("GET", up, b"/slow", [], None)
        with pytest.raises(httpx.PoolTimeout):
            await get(sender, up, b"/fast")
        waiting = asyncio.create_task(get(sender, upstream(script.url), b"/fast"))
        go_on.set()
        assert await first.read() == b"abcd"
        await first.aclose()
        assert await waiting == b"fast"
        assert script.connections == 1
        await sender.aclose()

    async def test_a_broken_exchange_gives_its_place_back(self, serve: Any) -> None:
        async def drop(number: int, head: bytes, r: Any, w: Any) -> bool:
            if number == 1:
                return False
            w.write(answer(b"ok"))
            await w.drain()
            return True

        script = await serve(drop)
        sender = lean(max_connections=1)
        up = upstream(script.url, pool_s=0.5)
        with pytest.raises(httpx.ReadError):
            await get(sender, up)
        assert await get(sender, up) == b"ok"
        await sender.aclose()


def test_only_a_plain_http_service_has_a_host_for_the_relay() -> None:
    """The server's relay writes requests on plain connections only (`gateway.server`)."""
    assert upstream("http://registry.internal:8001").plain_netloc == b"registry.internal:8001"
    assert upstream("https://registry.internal:8443").plain_netloc is None


class TestDeadline:
    """The relay's read deadline on a connection (`_Connection.watch`): one timer per
    connection for exchange after exchange, each exchange's deadline kept."""

    async def test_a_later_exchange_keeps_its_own_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        conn = _Connection()
        fired: list[tuple[str, float]] = []
        done = loop.create_future()

        def expired(name: str) -> Callable[[], None]:
            def call() -> None:
                fired.append((name, loop.time()))
                done.set_result(None)

            return call

        first = loop.time() + 0.05
        conn.watch(loop, first, expired("first"))
        conn.unwatch()  # the first exchange was answered
        second = first + 0.1
        conn.watch(loop, second, expired("second"))
        async with asyncio.timeout(LIMIT_S):
            await done
        assert [name for name, _ in fired] == ["second"]
        assert fired[0][1] >= second  # the timer armed for the first moved itself on
        assert conn.deadline_timer is None  # nothing left armed

    async def test_an_earlier_deadline_is_not_missed(self) -> None:
        loop = asyncio.get_running_loop()
        conn = _Connection()
        done = loop.create_future()
        conn.watch(loop, loop.time() + 60, lambda: None)
        conn.unwatch()
        conn.watch(loop, loop.time() + 0.05, lambda: done.set_result(loop.time()))
        async with asyncio.timeout(LIMIT_S):
            await done
        assert conn.deadline_timer is None

    async def test_closing_the_connection_stops_the_watch(self) -> None:
        conn = _Connection()
        loop = asyncio.get_running_loop()
        conn.watch(loop, loop.time() + 60, lambda: None)
        assert conn.deadline_timer is not None
        conn.close()
        assert conn.deadline_timer is None
        assert conn.expired is None


class TestFallback:
    @pytest.mark.parametrize(
        ("method", "body"),
        [("HEAD", None), ("POST", None), ("PATCH", None), ("PUT", None), ("GET", object())],
    )
    async def test_goes_to_the_fallback(self, method: str, body: Any) -> None:
        sender = lean()
        with pytest.raises(httpx.ConnectError, match="fallback reached"):
            await sender.send(method, upstream("http://127.0.0.1:9"), b"/x", [], body)
        assert isinstance(sender.fallback, Fallback)
        assert sender.fallback.calls == [method]

    async def test_https_goes_to_the_fallback(self) -> None:
        sender = lean()
        with pytest.raises(httpx.ConnectError, match="fallback reached"):
            await sender.send("GET", upstream("https://127.0.0.1:9"), b"/x", [], None)
