"""The gateway's lane for proxied requests without a body (reads, deletes): the most
frequent requests, and the ones a phone waits for.

Through the full stack a proxied read passes a dozen ASGI layers (the framework's own
telemetry, error and exit-stack layers, the routing, and each of the gateway's
middleware), each wrapping `send` once more; that cost as much CPU as the proxying itself.
The lane does the same work in one place, outside that stack, for exactly the requests
where it is the same work:

- the request id (taken or made, echoed, on the logs' context), as `RequestContextMiddleware`;
- the request counted, timed and logged under the proxy route's label, as `MetricsMiddleware`;
- the edge's headers (`EdgeHeaders`), as `SecurityHeadersMiddleware`;
- credentials, the rate limit and the relay (`Proxy.forward`), as the proxy route;
- an error rendered by the app's own exception handlers (a problem), as the stack would.

Everything else goes through the stack: any request with a body (the body limit applies),
a cross-origin request when CORS is configured, every request when tracing is on, and any
path that is not under a service's prefix."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from common.context import client_addr_var, request_id_var
from common.metrics import RequestRecorder
from common.middleware import request_id_from
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
        self.recorder = recorder
        self.edge = edge
        self.cors = cors

    def takes(self, scope: Scope) -> tuple[str, str] | None:
        """The service and route label of a request the lane serves, else None."""
        path: str = scope["path"]
        if not path.startswith("/api/v1/") or scope["method"] not in _METHODS:
            return None
        end = path.find("/", 8)
        if end < 0:
            return None
        target = self.routes.get(path[: end + 1])
        if target is None:
            return None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.strip() not in (b"", b"0"):
                    return None
            elif name == b"transfer-encoding" or (self.cors and name == b"origin"):
                return None
        return target

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, target: tuple[str, str]
    ) -> None:
        service, route = target
        proxy: Proxy = self.app.state.proxy
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        rid = request_id_from(given)
        client = scope.get("client")
        rid_token = request_id_var.set(rid)
        addr_token = client_addr_var.set(client[0] if client else None)
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        failed = False
        start = time.perf_counter()
        in_flight = self.recorder.metrics.in_flight
        in_flight.inc()

        async def send_edge(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append(rid_header)
                message["headers"] = self.edge.apply(headers, api=True)
            await send(message)

        try:
            request = Request(scope, receive)
            try:
                response = await proxy.forward(request, service, scope["path"])
            except Exception as exc:
                response = await self._problem(request, exc)
            await response(scope, receive, send_edge)
        except BaseException:
            failed = True
            raise
        finally:
            in_flight.dec()
            self.recorder.record(
                scope["method"],
                route,
                status,
                time.perf_counter() - start,
                failed=failed,
                path=scope["path"],
            )
            request_id_var.reset(rid_token)
            client_addr_var.reset(addr_token)

    async def _problem(self, request: Request, exc: Exception) -> Response:
        """The answer the app's exception handlers give to `exc` (the nearest class's)."""
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                return await handler(request, exc)  # type: ignore[no-any-return,misc]
        raise exc
