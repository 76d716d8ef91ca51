"""A tiny stand-in service for the gateway's routing tests, mounted where mobility lives
(`/api/v1/mobility`). It shows the gateway's behaviour from the far side: the headers that
arrive, bodies streamed both ways, slow answers, connection-specific headers.

Run over a real socket with `uvicorn tests.gateway.upstream_app:app`, or in-process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

PREFIX = "/api/v1/mobility"
CHUNK = 64 * 1024
WAIT_LIMIT_S = 10.0


class Digest(BaseModel):
    bytes: int
    sha256: str


class Seen(BaseModel):
    first_chunk: bool
    bytes: int


def pattern(size: int) -> bytes:
    """The deterministic bytes `/blob` sends (a test computes the same)."""
    block = bytes(range(256)) * (CHUNK // 256)
    return (block * (size // len(block) + 1))[:size]


def create_app() -> FastAPI:
    app = FastAPI(
        title="Fake mobility",
        version="0.0.1",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    releases: dict[str, asyncio.Event] = {}
    uploads: dict[str, Seen] = {}
    router = APIRouter(prefix=PREFIX, tags=["fake"])

    @router.get("/echo/headers", operation_id="fakeEchoHeaders", summary="Headers received")
    async def echo_headers(request: Request) -> dict[str, object]:
        return {
            "headers": [[k.decode(), v.decode()] for k, v in request.headers.raw],
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
        }

    async def digest(request: Request) -> Digest:
        h, n = hashlib.sha256(), 0
        async for chunk in request.stream():
            h.update(chunk)
            n += len(chunk)
        return Digest(bytes=n, sha256=h.hexdigest())

    for method in ("POST", "PUT"):
        router.add_api_route(
            "/echo/digest",
            digest,
            methods=[method],
            operation_id=f"fakeDigest{method.capitalize()}",
            summary="Length and SHA-256 of the body received",
        )

    @router.get("/blob", operation_id="fakeBlob", summary="`size` bytes, streamed")
    async def blob(size: Annotated[int, Query(ge=0, le=1 << 30)]) -> StreamingResponse:
        data = pattern(size)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, size, CHUNK):
                yield data[i : i + CHUNK]

        return StreamingResponse(
            chunks(),
            media_type="application/octet-stream",
            headers={"content-length": str(size)},
        )

    @router.get(
        "/held/{token}",
        operation_id="fakeHeld",
        summary="One chunk now, the rest once `/release/{token}` is called",
    )
    async def held(token: str) -> StreamingResponse:
        event = releases.setdefault(token, asyncio.Event())

        async def chunks() -> AsyncIterator[bytes]:
            yield b"first;"
            async with asyncio.timeout(WAIT_LIMIT_S):
                await event.wait()
            yield b"rest"

        return StreamingResponse(chunks(), media_type="text/plain")

    @router.post("/release/{token}", operation_id="fakeRelease", summary="Release `/held`")
    async def release(token: str) -> Response:
        releases.setdefault(token, asyncio.Event()).set()
        return Response(status_code=204)

    @router.post(
        "/upload/{token}",
        operation_id="fakeUpload",
        summary="Consume a body, telling `/seen/{token}` as soon as its first chunk arrives",
    )
    async def upload(token: str, request: Request) -> Seen:
        seen = uploads[token] = Seen(first_chunk=False, bytes=0)
        async for chunk in request.stream():
            seen.first_chunk = True
            seen.bytes += len(chunk)
        return seen

    @router.get("/seen/{token}", operation_id="fakeSeen", summary="Progress of an upload")
    async def seen(token: str) -> Seen:
        return uploads.get(token, Seen(first_chunk=False, bytes=0))

    @router.get("/slow", operation_id="fakeSlow", summary="Answers after `seconds`")
    async def slow(seconds: Annotated[float, Query(ge=0, le=30)]) -> dict[str, float]:
        await asyncio.sleep(seconds)  # the slowness under test, on the far side
        return {"slept": seconds}

    @router.get(
        "/connection-headers",
        operation_id="fakeConnectionHeaders",
        summary="A response carrying connection-specific headers and its own date/server",
    )
    async def connection_headers() -> Response:
        response = JSONResponse({"ok": True})
        response.raw_headers.extend(
            [
                (b"connection", b"x-private-hop"),
                (b"x-private-hop", b"secret"),
                (b"keep-alive", b"timeout=5"),
                (b"proxy-authenticate", b"Basic"),
                (b"upgrade", b"h2c"),
                (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"),
                (b"server", b"fake-upstream"),
                (b"x-kept", b"yes"),
                (b"set-cookie", b"a=1"),
                (b"set-cookie", b"b=2"),
            ]
        )
        return response

    @router.get("/status/{code}", operation_id="fakeStatus", summary="Answers with `code`")
    async def status(code: int) -> Response:
        return JSONResponse({"code": code}, status_code=code if 200 <= code < 600 else 400)

    app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
