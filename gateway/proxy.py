"""Streams `/api/v1/<service>/...` to the service that owns it, with one pooled client."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from common.context import request_id_var
from common.errors import GatewayTimeout, NotFound, ServiceUnavailable

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
})


class Proxy:
    def __init__(self, upstreams: dict[str, str], client: httpx.AsyncClient) -> None:
        self.upstreams = upstreams
        self.client = client

    async def forward(self, request: Request, service: str, path: str) -> StreamingResponse:
        base = self.upstreams.get(service)
        if base is None:
            raise NotFound(f"No service {service!r}.")
        headers: list[tuple[str, str]] = [
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        ]
        headers.append(("x-request-id", request_id_var.get() or ""))
        client = request.client
        if client is not None:
            headers.append(("x-forwarded-for", client.host))
        url = httpx.URL(base).join(f"/api/v1/{service}/{path}")
        upstream_req = self.client.build_request(
            request.method, url.copy_with(query=request.url.query.encode()),
            headers=headers, content=request.stream(),
        )
        try:
            upstream = await self.client.send(upstream_req, stream=True)
        except httpx.TimeoutException as exc:
            raise GatewayTimeout(f"The {service} service did not answer in time.") from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"The {service} service is unavailable.") from exc
        out_headers: dict[str, Any] = {
            k: v for k, v in upstream.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "x-request-id"
        }
        return StreamingResponse(
            upstream.aiter_raw(), status_code=upstream.status_code, headers=out_headers,
            background=BackgroundTask(upstream.aclose),
        )
