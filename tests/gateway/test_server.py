"""The gateway's server protocol (`gateway.server`) over real sockets: a `GET` to a service
over a kept-alive connection is relayed by the protocol itself, with what the app's lane
gives it (request id, forwarded headers, edge headers, the rate budget), and everything
the relay does not decide — a connection to make, a token that does not verify, an API
key, an answer too large to hold, a service that dropped the connection — reaches the
app and is answered as the app answers it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import FakeClock
from tests.gateway.live import serve
from tests.gateway.scripted import Handler, Script, answer, scripted_servers
from tests.helpers import mint
from tools.pg import free_port

LIMIT_S = 5.0
CARD = "/api/v1/registry/members/0b6f3a52-5d1c-4a4e-9d43-2f1f5f9d2c11"
Start = Callable[..., Awaitable[tuple[str, FastAPI, list[bool]]]]


def echo(number: int, head: bytes) -> bytes:
    """The service's answer: which connection, and the request head it got."""
    return json.dumps({"connection": number, "head": head.decode("latin-1")}).encode()


async def keep_alive(number: int, head: bytes, r: asyncio.StreamReader, w: Any) -> bool:
    w.write(answer(echo(number, head)))
    await w.drain()
    return True


def always(reply: bytes) -> Handler:
    """A service that answers every request with `reply`."""

    async def handler(number: int, head: bytes, r: asyncio.StreamReader, w: Any) -> bool:
        w.write(reply)
        await w.drain()
        return True

    return handler


def sent_headers(body: bytes) -> dict[str, str]:
    lines = json.loads(body)["head"].split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


@pytest.fixture
async def start(
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    clock: FakeClock,
) -> AsyncIterator[Start]:
    """`start(handler, keep_alive_s=, **settings)`: a scripted registry and the gateway in
    front of it (`keep_alive_s`: its server's keep-alive timeout);
    gives the gateway's URL, its app and what the relay decided for each request (True:
    relayed by the protocol, False: left to the app)."""
    async with scripted_servers() as script_server, asyncio.timeout(60):
        stack: list[Any] = []

        async def launch(
            handler: Handler, *, keep_alive_s: float = 5.0, **settings: Any
        ) -> tuple[str, FastAPI, list[bool]]:
            script: Script = await script_server(handler)
            configured = gateway_settings.model_copy(
                update={
                    "upstream_transport": "lean",
                    "registry_url": script.url,
                    "mobility_url": f"http://127.0.0.1:{free_port()}",
                    "activities_url": f"http://127.0.0.1:{free_port()}",
                    **settings,
                }
            )
            app = create_app(configured, sessionmaker=db, clock=clock)
            relay = app.fast_relay  # type: ignore[attr-defined]
            decided: list[bool] = []
            original = relay.start

            def spy(*args: Any, **kwargs: Any) -> bool:
                started: bool = original(*args, **kwargs)
                decided.append(started)
                return started

            relay.start = spy
            lifespan = app.router.lifespan_context(app)
            await lifespan.__aenter__()
            stack.append(lifespan)
            served = serve(app, keep_alive_s=keep_alive_s)
            url = await served.__aenter__()
            stack.append(served)
            return url, app, decided

        try:
            yield launch
        finally:
            for context in reversed(stack):
                await context.__aexit__(None, None, None)


def client(url: str, **headers: str) -> httpx.AsyncClient:
    token = mint("admin")
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {token}", **headers},
        timeout=LIMIT_S,
        trust_env=False,
    )


class TestRelayed:
    async def test_kept_alive_reads_are_relayed_with_the_lanes_headers(self, start: Start) -> None:
        url, _, decided = await start(keep_alive)
        async with client(url) as http:
            answers = [await http.get(CARD, params={"n": n}) for n in range(3)]
            given = await http.get(CARD, headers={"X-Request-ID": "trace-me-42"})
        # The first connects (the app's work); then the protocol relays on it.
        assert decided == [False, True, True, True]
        for r in [*answers, given]:
            assert r.status_code == 200
            assert json.loads(r.content)["connection"] == 1
            sent = sent_headers(r.content)
            assert sent["x-request-id"] == r.headers["x-request-id"]
            assert sent["x-forwarded-for"] == "127.0.0.1"
            assert sent["x-forwarded-proto"] == "http"
            assert sent["x-forwarded-host"] == url.removeprefix("http://")
            assert sent["authorization"].startswith("Bearer ")
            assert "connection" not in sent  # hop-by-hop: the client's, not the service's
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["cache-control"] == "no-store"
            assert "default-src 'none'" in r.headers["content-security-policy"]
            assert len(r.headers.get_list("date")) == 1
        assert json.loads(answers[2].content)["head"].startswith(f"GET {CARD}?n=2 HTTP/1.1")
        assert given.headers["x-request-id"] == "trace-me-42"
        assert sent_headers(given.content)["x-request-id"] == "trace-me-42"
        assert len({r.headers["x-request-id"] for r in answers}) == 3

    async def test_relayed_answer_has_the_apps_headers(self, start: Start) -> None:
        url, _, decided = await start(keep_alive)
        async with client(url) as http:
            by_app = await http.get(CARD)
            relayed = await http.get(CARD)
        assert decided == [False, True]

        def shape(r: httpx.Response) -> list[tuple[str, str]]:
            varying = {"date", "x-request-id", "content-length"}
            return sorted((k, "" if k in varying else v) for k, v in r.headers.multi_items())

        assert shape(relayed) == shape(by_app)

    @pytest.mark.parametrize(
        "extra",
        [
            {"X-Client-Note": "a", "Keep-Alive": "timeout=5", "TE": "trailers"},
            # Names another header to drop: not forwarded either way.
            {"Connection": "keep-alive, x-hop-note", "X-Hop-Note": "b", "X-Client-Note": "c"},
            {"Host": ""},  # an empty Host: no X-Forwarded-Host
        ],
    )
    async def test_relayed_request_is_the_one_the_app_sends(
        self, start: Start, extra: dict[str, str]
    ) -> None:
        url, _, decided = await start(keep_alive)
        async with client(url, **extra) as http:
            by_app = await http.get(CARD, params={"q": "x"})
            relayed = await http.get(CARD, params={"q": "x"})
        assert decided == [False, True]

        def head(r: httpx.Response) -> list[str]:
            assert r.status_code == 200
            lines = json.loads(r.content)["head"].split("\r\n")
            return [
                f"x-request-id: {'<id>' if r.headers['x-request-id'] in line else line}"
                if line.startswith("x-request-id:")
                else line
                for line in lines
            ]

        assert head(relayed) == head(by_app)
        sent = sent_headers(relayed.content)
        assert "x-hop-note" not in sent and "keep-alive" not in sent and "te" not in sent
        assert ("x-forwarded-host" in sent) is (extra.get("Host") != "")

    @pytest.mark.parametrize(
        "extra",
        [
            b"cache-control: max-age=60\r\ncontent-security-policy: sandbox\r\n",
            b"x-frame-options: SAMEORIGIN\r\nserver: upstream\r\nx-request-id: theirs\r\n",
            b"connection: x-upstream-note\r\nx-upstream-note: hop\r\nx-kept: 1\r\n",
        ],
    )
    async def test_relayed_answer_is_the_one_the_app_gives(
        self, start: Start, extra: bytes
    ) -> None:
        url, _, decided = await start(always(answer(b'{"a": 1}', extra=extra)))
        async with client(url) as http:
            by_app = await http.get(CARD)
            relayed = await http.get(CARD)
        assert decided == [False, True]

        def shape(r: httpx.Response) -> list[tuple[str, str]]:
            varying = {"date", "x-request-id"}
            return [(k, "" if k in varying else v) for k, v in r.headers.multi_items()]

        assert shape(relayed) == shape(by_app)
        assert relayed.content == by_app.content == b'{"a": 1}'
        assert relayed.headers["x-request-id"] != "theirs"
        assert "x-upstream-note" not in relayed.headers
        assert relayed.headers["x-content-type-options"] == "nosniff"

    async def test_no_token_is_relayed_for_the_service_to_refuse(self, start: Start) -> None:
        url, _, decided = await start(keep_alive)
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=LIMIT_S) as http:
            for _ in range(2):
                assert (await http.get(CARD)).status_code == 200
        assert decided == [False, True]

    async def test_large_answer_is_streamed_whole(self, start: Start) -> None:
        body = bytes(range(256)) * 1024  # 256 KiB: more than the relay holds
        url, _, decided = await start(always(answer(body)))
        async with client(url) as http:
            for _ in range(3):
                r = await http.get(CARD)
                assert r.status_code == 200
                assert r.content == body
                assert r.headers["x-content-type-options"] == "nosniff"
        assert decided == [False, True, True]

    async def test_not_modified_is_relayed_without_a_body(self, start: Start) -> None:
        async def conditional(number: int, head: bytes, r: asyncio.StreamReader, w: Any) -> bool:
            if b"if-none-match" in head.lower():
                w.write(b'HTTP/1.1 304 Not Modified\r\netag: "v7"\r\n\r\n')
            else:
                w.write(answer(b"{}", extra=b'etag: "v7"\r\n'))
            await w.drain()
            return True

        url, _, decided = await start(conditional)
        async with client(url) as http:
            assert (await http.get(CARD)).status_code == 200
            for _ in range(2):
                r = await http.get(CARD, headers={"If-None-Match": '"v7"'})
                assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", '"v7"')
                assert r.headers["x-content-type-options"] == "nosniff"
            after = await http.get(CARD)
        assert after.status_code == 200
        assert decided == [False, True, True, True]

    async def test_chunked_answer_is_streamed_whole(self, start: Start) -> None:
        chunked = always(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked"
            b"\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        url, _, decided = await start(chunked)
        async with client(url) as http:
            for _ in range(2):
                r = await http.get(CARD)
                assert (r.status_code, r.content) == (200, b"hello world")
        assert decided == [False, True]


class TestLeftToTheApp:
    async def test_token_that_does_not_verify_is_the_apps_401(self, start: Start) -> None:
        url, _, decided = await start(keep_alive)
        async with client(url) as http:
            assert (await http.get(CARD)).status_code == 200
            r = await http.get(CARD, headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert decided == [False, False]

    async def test_api_key_is_the_apps(self, start: Start) -> None:
        url, _, decided = await start(keep_alive)
        async with client(url) as http:
            assert (await http.get(CARD)).status_code == 200
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=LIMIT_S) as http:
            r = await http.get(CARD, headers={"X-API-Key": "lx_unknown"})
        assert r.status_code == 401
        assert decided == [False, False]

    async def test_cross_origin_read_is_the_apps_when_cors_is_on(self, start: Start) -> None:
        url, _, decided = await start(keep_alive, cors_origins=["https://app.example.cn"])
        async with client(url) as http:
            assert (await http.get(CARD)).status_code == 200
            plain = await http.get(CARD)
            r = await http.get(CARD, headers={"Origin": "https://app.example.cn"})
        assert decided == [False, True, False]
        assert "access-control-allow-origin" not in plain.headers
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example.cn"

    async def test_get_with_a_body_is_the_apps(self, start: Start) -> None:
        url, _, decided = await start(keep_alive)
        async with client(url) as http:
            assert (await http.get(CARD)).status_code == 200
            r = await http.request("GET", CARD, content=b"{}")
        assert r.status_code == 200
        assert sent_headers(r.content)["content-length"] == "2"
        assert decided == [False, False]

    async def test_spent_rate_budget_is_the_apps_429(self, start: Start) -> None:
        url, app, decided = await start(
            keep_alive, rate_limit_enabled=True, rate_limit_per_s=0.01, rate_limit_burst=2
        )
        async with client(url) as http:
            statuses = [(await http.get(CARD)).status_code for _ in range(3)]
            last = await http.get(CARD)
        # The app spends the first token, the relay the second; the third is refused.
        assert statuses == [200, 200, 429]
        assert decided == [False, True, False, False]
        assert last.status_code == 429
        assert int(last.headers["retry-after"]) >= 1
        # The connection the relay took and did not use is idle again, not closed.
        proxy = app.state.proxy
        pool = proxy.sender.pool(proxy.upstreams["registry"])
        assert [conn.closed for conn in pool.idle] == [False]
        assert pool.open == 1

    async def test_kept_alive_connection_the_service_dropped_is_tried_again(
        self, start: Start
    ) -> None:
        async def once_per_connection(number: int, head: bytes, r: Any, w: Any) -> bool:
            if number == 1 and b"second" in head:
                return False  # closes the kept-alive connection without answering
            w.write(answer(echo(number, head)))
            await w.drain()
            return True

        url, _, decided = await start(once_per_connection)
        async with client(url) as http:
            assert (await http.get(CARD, params={"q": "first"})).status_code == 200
            r = await http.get(CARD, params={"q": "second"})
        assert r.status_code == 200
        assert json.loads(r.content)["connection"] == 2
        assert decided == [False, True]


class TestServiceFailures:
    async def test_no_answer_in_time_is_a_504_problem(self, start: Start) -> None:
        release, hanging = asyncio.Event(), asyncio.Event()

        async def hang_second(number: int, head: bytes, r: Any, w: Any) -> bool:
            if b"hang" in head:
                hanging.set()
                async with asyncio.timeout(LIMIT_S):
                    await release.wait()
                return False
            w.write(answer(echo(number, head)))
            await w.drain()
            return True

        url, app, decided = await start(hang_second, upstream_timeout_s=0.3)
        metrics = app.fast_relay.recorder.metrics  # type: ignore[attr-defined]
        async with client(url) as http:
            assert (await http.get(CARD)).status_code == 200
            waiting = asyncio.create_task(http.get(CARD, params={"q": "hang"}))
            await hanging.wait()
            in_flight = metrics.in_flight_now  # the relayed request, waiting on the service
            r = await waiting
            release.set()
            after = await http.get(CARD)
        assert (in_flight, metrics.in_flight_now) == (1, 0)
        assert decided == [False, True, False]  # the timed-out connection is not reused
        assert r.status_code == 504
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["status"] == 504
        assert problem["instance"] == f"urn:lianxin:request:{r.headers['x-request-id']}"
        assert r.headers["cache-control"] == "no-store"
        assert after.status_code == 200

    async def test_connection_lost_mid_answer_is_a_503_problem(self, start: Start) -> None:
        async def break_second(number: int, head: bytes, r: Any, w: Any) -> bool:
            if b"break" in head:
                w.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial')
                await w.drain()
                return False
            w.write(answer(echo(number, head)))
            await w.drain()
            return True

        url, _, decided = await start(break_second)
        async with client(url) as http:
            assert (await http.get(CARD)).status_code == 200
            r = await http.get(CARD, params={"q": "break"})
            after = await http.get(CARD)
        assert r.status_code == 503
        assert r.json()["status"] == 503
        assert after.status_code == 200
        assert decided[:2] == [False, True]


class TestWire:
    async def test_pipelined_requests_are_answered_in_order(self, start: Start) -> None:
        url, _, decided = await start(keep_alive)
        host, port = url.removeprefix("http://").split(":")
        token = mint("admin")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:

            def get(query: str) -> bytes:
                return (
                    f"GET {CARD}?q={query} HTTP/1.1\r\nhost: {host}\r\n"
                    f"authorization: Bearer {token}\r\n\r\n"
                ).encode()

            async def read_answer() -> tuple[bytes, bytes]:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                return head, await reader.readexactly(length)

            async with asyncio.timeout(LIMIT_S):
                writer.write(get("warm"))
                await read_answer()
                writer.write(get("one") + get("two") + get("three"))
                bodies = [(await read_answer())[1] for _ in range(3)]
        finally:
            writer.close()
        firsts = [json.loads(b)["head"].split("\r\n")[0] for b in bodies]
        assert firsts == [f"GET {CARD}?q={q} HTTP/1.1" for q in ("one", "two", "three")]
        assert decided[:2] == [False, True]

    @pytest.mark.parametrize(
        "path",
        [
            "/api/v1/registry/audit-log",
            "/api/v1/registry/Audit-Log?limit=1",
            "/api/v1/registry//persons/resolve",
            "/api/v1/registry/members/../audit-log",
            "/api/v1/registry/./audit-log",
        ],
    )
    async def test_internal_and_dot_segment_paths_are_the_apps_404(
        self, start: Start, path: str
    ) -> None:
        url, _, decided = await start(keep_alive)
        host, port = url.removeprefix("http://").split(":")
        token = mint("admin")
        reader, writer = await asyncio.open_connection(host, int(port))
        statuses = []
        try:
            async with asyncio.timeout(LIMIT_S):
                for target in (CARD, CARD, path):  # the first connects: then kept alive
                    writer.write(
                        f"GET {target} HTTP/1.1\r\nhost: {host}\r\n"
                        f"authorization: Bearer {token}\r\n\r\n".encode()
                    )
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    await reader.readexactly(length)
                    statuses.append(int(head.split(b" ")[1]))
        finally:
            writer.close()
        assert statuses == [200, 200, 404]
        assert decided == [False, True, False]

    async def test_connection_close_is_honoured(self, start: Start) -> None:
        url, _, decided = await start(keep_alive)
        host, port = url.removeprefix("http://").split(":")
        async with client(url) as http:
            assert (await http.get(CARD)).status_code == 200
            r = await http.get(CARD, headers={"Connection": "close"})
        assert r.status_code == 200
        assert r.headers["connection"] == "close"
        assert decided == [False, True]
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            async with asyncio.timeout(LIMIT_S):
                writer.write(
                    f"GET {CARD} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
                )
                data = await reader.read()  # to the end: the gateway closes the connection
        finally:
            writer.close()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert decided[-1] is True

    async def test_a_connection_is_closed_once_idle_for_the_keep_alive_timeout(
        self, start: Start
    ) -> None:
        """Requests spaced closer than the timeout keep the connection however long they go
        on; once idle for the timeout after its last answer, the gateway closes it."""
        keep_alive_s = 1.0
        url, _, decided = await start(keep_alive, keep_alive_s=keep_alive_s)
        host, port = url.removeprefix("http://").split(":")
        token = mint("admin")
        request = (
            f"GET {CARD} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            async with asyncio.timeout(LIMIT_S):
                first = loop.time()
                for _ in range(8):  # 7 gaps of 0.3 x the timeout: 2.1 x it in all
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    last = loop.time()
                    await asyncio.sleep(keep_alive_s * 0.3)  # idle, well under the timeout
                assert last - first > keep_alive_s * 2
                assert await reader.read() == b""  # closed by the gateway
                closed = loop.time()
        finally:
            writer.close()
        assert closed - last >= keep_alive_s * 0.9  # idle for the timeout, counted from the last
        assert decided[1:] == [True] * 7
