"""Real sockets for the gateway's routing tests: the stand-in service and the registry in
child processes (`tools.servers.UvicornProcess`), and the gateway served by uvicorn inside
the test's own event loop, so a test can both talk to it over TCP and look at its state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn
from fastapi import FastAPI

from gateway.server import GatewayHttpProtocol
from tools.pg import free_port
from tools.servers import UvicornProcess

START_LIMIT_S = 10.0


class _InProcessServer(uvicorn.Server):
    """uvicorn without taking over the test runner's signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: FastAPI, *, keep_alive_s: float = 5.0) -> AsyncIterator[str]:
    """Serves `app` (whose lifespan the caller runs) on a loopback port; yields its URL.
    `keep_alive_s`: uvicorn's `timeout_keep_alive` (its default)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=keep_alive_s,
        http=GatewayHttpProtocol,  # as the gateway is served (tools.servers.serving_args)
    )
    server = _InProcessServer(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(START_LIMIT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the gateway's server stopped while starting")
                await asyncio.sleep(0.01)  # polling the server's start, bounded
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(START_LIMIT_S):
            await task


def fake_service(**env: str) -> UvicornProcess:
    """The stand-in service (`tests/gateway/upstream_app.py`) in a child process."""
    return UvicornProcess("tests.gateway.upstream_app:app", env=env)


def registry_service(
    database_url: str, public_pem: str, port: int | None = None, **env: str
) -> UvicornProcess:
    """The registry in a child process, as `make run` serves it; `env` adds to its
    environment."""
    return UvicornProcess(
        "services.registry.app:app",
        env={
            "DATABASE_URL": database_url,
            "LIANXIN_JWT_PUBLIC_KEY": public_pem,
            "LIANXIN_ENVIRONMENT": "test",
            "LIANXIN_DB_POOL_SIZE": "4",
            **env,
        },
        port=port,
        ready_path="/readyz",
    )


async def poll(
    client: httpx.AsyncClient,
    url: str,
    *,
    until: int,
    limit_s: float,
    every_s: float = 0.05,
    **kwargs: object,
) -> httpx.Response:
    """GET `url` until it answers `until` (or `limit_s` runs out: then the last answer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        response = await client.get(url, **kwargs)  # type: ignore[arg-type]
        if response.status_code == until or loop.time() >= deadline:
            return response
        await asyncio.sleep(every_s)
