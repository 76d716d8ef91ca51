"""The gateway benchmark's reference proxy (`bench/_byte_pipe.py`), in a child process as the
benchmark runs it (`tools.servers.UvicornProcess` with a command of its own): each client
connection gets a connection of its own to the service, kept as long as the client's, and
the bytes go both ways unchanged."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.gateway.scripted import Script, answer, scripted_servers
from tools.servers import UvicornProcess

LIMIT_S = 10.0


async def keep_alive(number: int, head: bytes, r: asyncio.StreamReader, w: Any) -> bool:
    w.write(answer(b'{"connection": %d}' % number, extra=b"x-odd-Case: kept\r\n"))
    await w.drain()
    return True


@pytest.fixture
async def piped() -> AsyncIterator[tuple[Script, UvicornProcess]]:
    async with scripted_servers() as start, asyncio.timeout(LIMIT_S * 3):
        script = await start(keep_alive)
        upstream = script.url.removeprefix("http://")
        pipe = UvicornProcess(
            "bench._byte_pipe",
            command=(sys.executable, "-m", "bench._byte_pipe", "--upstream", upstream),
        )
        # Its readiness is a GET through it to the scripted service, served by this loop.
        await asyncio.to_thread(pipe.start, LIMIT_S)
        try:
            yield script, pipe
        finally:
            await asyncio.to_thread(pipe.close)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /x HTTP/1.1\r\nhost: pipe\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


async def test_each_client_connection_has_its_own_and_bytes_pass_unchanged(
    piped: tuple[Script, UvicornProcess],
) -> None:
    script, pipe = piped
    before = script.connections  # the readiness check's
    host, port = pipe.url.removeprefix("http://").split(":")
    first = await asyncio.open_connection(host, int(port))
    second = await asyncio.open_connection(host, int(port))
    try:
        async with asyncio.timeout(LIMIT_S):
            one = [await exchange(*first), await exchange(*first)]
            two = await exchange(*second)
    finally:
        for _, writer in (first, second):
            writer.close()
    mine = before + 1, before + 2
    assert {one[0], two} == {
        answer(b'{"connection": %d}' % n, extra=b"x-odd-Case: kept\r\n") for n in mine
    }
    assert one[1] == one[0]  # the same service connection, kept alive through the pipe
    assert script.heads[-1] == b"GET /x HTTP/1.1\r\nhost: pipe\r\n\r\n"
    assert script.connections == before + 2
