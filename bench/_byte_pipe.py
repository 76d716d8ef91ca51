"""A byte pipe: the floor of any proxy process, the gateway benchmark's reference for what
an extra process in the chain costs by itself. Each client connection is paired with its
own connection to the service and the bytes are copied both ways as they come: nothing
parsed, added or checked, no pool, no flow control (the benchmark's messages are small).

    python -m bench._byte_pipe --upstream 127.0.0.1:8001 --port 8009

Prints `ready` once it listens; runs until it is stopped."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

from common.scheduling import apply_cpu_policy


class _Service(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.service: _Service | None = None
        self.pending: list[bytes] = []  # what came before the service's connection did
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, service = await loop.create_connection(lambda: _Service(self), self.host, self.port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.service = service
        if self.pending and service.transport is not None:
            service.transport.write(b"".join(self.pending))
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        service = self.service
        if service is None or service.transport is None:
            self.pending.append(data)
        else:
            service.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.service is not None and self.service.transport is not None:
            self.service.transport.close()


async def _serve(upstream: str, port: int) -> None:
    host, _, service_port = upstream.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(host, int(service_port)), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._byte_pipe")
    parser.add_argument("--upstream", required=True, help="host:port of the service")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    apply_cpu_policy()  # as every server of the system (common/scheduling.py)
    uvloop.run(_serve(args.upstream, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
