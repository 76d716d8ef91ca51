"""A scripted HTTP server on a loopback socket, for tests of what the gateway does on the
wire: every request's head goes to a handler that answers (or misbehaves) as it likes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

Handler = Callable[[int, bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def answer(body: bytes = b"{}", *, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


class Script:
    """A server whose every request goes to `handler(connection number, request head,
    reader, writer)`; the handler returns False to close the connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.heads.append(head)
                if not await self.handler(number, head, reader, writer):
                    return
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def scripted_servers() -> AsyncIterator[Callable[[Handler], Awaitable[Script]]]:
    """`start(handler)`: a new scripted server; all of them closed at the end."""
    scripts: list[Script] = []

    async def start(handler: Handler) -> Script:
        script = Script(handler)
        script.server = await asyncio.start_server(script._serve, "127.0.0.1", 0)
        scripts.append(script)
        return script

    try:
        yield start
    finally:
        for script in scripts:
            assert script.server is not None
            script.server.close()
