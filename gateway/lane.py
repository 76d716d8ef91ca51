"""The gateway's lane for proxied requests without a body (reads, deletes): the most
frequent requests, and the ones a phone waits for. They take `common.lane.Lane` — the
request id, metrics and problems of the stack in one place — with the edge's headers
(`EdgeHeaders`, as `SecurityHeadersMiddleware`) and credentials, the rate limit and the
relay (`Proxy.forward`, as the proxy route).

Everything else goes through the stack: any request with a body (the body limit applies),
a cross-origin request when CORS is configured, every request when tracing is on, and any
path that is not under a service's prefix."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from common.lane import Lane, bodyless
from common.metrics import RequestRecorder
from gateway.middleware import EdgeHeaders
from gateway.proxy import PROXIED_METHODS, Proxy

if TYPE_CHECKING:
    from fastapi import FastAPI

_METHODS = frozenset(PROXIED_METHODS)


class ProxyLane:
    def __init__(
        self,
        app: FastAPI,
        routes: dict[str, str],
        *,
        recorder: RequestRecorder,
        edge: EdgeHeaders,
        cors: bool,
    ) -> None:
        """`routes`: each service's path prefix (`/api/v1/<name>/`) and the route label its
        requests are counted under."""
        self.app = app
        self.routes = {f"/api/v1/{name}/": (name, label) for name, label in routes.items()}
        self.cors = cors
        # The gateway faces clients: what one says about its own address is not believed.
        self.lane = Lane(
            app, recorder, trust_forwarded=False, finish_headers=partial(edge.apply, api=True)
        )

    def takes(self, scope: Scope) -> tuple[str, str] | None:
        """The service and route label of a request the lane serves, else None."""
        path: str = scope["path"]
        if not path.startswith("/api/v1/") or scope["method"] not in _METHODS:
            return None
        end = path.find("/", 8)
        if end < 0:
            return None
        target = self.routes.get(path[: end + 1])
        if target is None or not bodyless(scope):
            return None
        if self.cors and any(name == b"origin" for name, _ in scope["headers"]):
            return None
        return target

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, target: tuple[str, str]
    ) -> None:
        service, route = target
        proxy: Proxy = self.app.state.proxy
        path: str = scope["path"]
        await self.lane.serve(
            scope, receive, send, route, lambda request: proxy.forward(request, service, path)
        )
