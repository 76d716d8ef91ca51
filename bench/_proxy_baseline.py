"""The baseline the gateway's own CPU per proxied request is measured against in the same
run: the least a Python reverse proxy does on this stack — a bare ASGI app under uvicorn
that sends each request on to the service with one aiohttp session (the issue's "aiohttp
proxy") and answers with the service's status, headers and body. No auth, no rate limit,
no request id, no metrics, no edge headers, no timeouts, no retries.

    LIANXIN_UPSTREAM=http://127.0.0.1:8001 uvicorn bench._proxy_baseline:app
"""

from __future__ import annotations

import os

import aiohttp
from starlette.types import Message, Receive, Scope, Send

from common.scheduling import apply_cpu_policy

UPSTREAM = os.environ.get("LIANXIN_UPSTREAM", "http://127.0.0.1:8001")
_DROP = frozenset({b"date", b"server", b"connection", b"keep-alive", b"transfer-encoding"})
_SKIP = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class _Proxy:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
                apply_cpu_policy()  # as every server of the system (common/scheduling.py)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        assert self.session is not None
        query = scope.get("query_string") or b""
        url = (
            UPSTREAM + scope["raw_path"].decode("latin-1") + ("?" + query.decode() if query else "")
        )
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = [(k, v) for k, v in headers if k != "host"]
        async with self.session.request(
            scope["method"], url, headers=headers, skip_auto_headers=_SKIP
        ) as answer:
            body = await answer.read()
            relayed = [(k.lower(), v) for k, v in answer.raw_headers if k.lower() not in _DROP]
            await send({"type": "http.response.start", "status": answer.status, "headers": relayed})
            await send({"type": "http.response.body", "body": body})


app = _Proxy()
