"""A lane past the middleware stack, for the requests clients make most (the gateway's
proxied reads, a service's hot reads).

Through the full stack a request passes a dozen ASGI layers — the framework's telemetry,
error and exit-stack layers, the routing, FastAPI's parameter solving, and each of our
middleware — each wrapping `send` once more; for a read that is one indexed SELECT, that
cost as much CPU as the read itself. The lane does the same work in one place, for
exactly the requests where it is the same work:

- the request id, taken (when safe to echo) or made, on the logs' context and in the
  scope's state, echoed on the answer, as `RequestContextMiddleware`; with
  `trust_forwarded`, the client address the gateway forwards, as it takes it;
- the request counted, timed and logged under its route's label, as `MetricsMiddleware`;
- an error rendered by the app's own exception handlers (a problem), as the stack would.

Whoever sends a request here decides it is one the stack would treat the same way: no
body (the body limit has nothing to do), no tracing (the tracing middleware makes spans),
not a deprecated route (its announcement is the stack's)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from common.context import client_addr_var, request_id_var
from common.metrics import RequestRecorder
from common.middleware import request_id_from

if TYPE_CHECKING:
    from starlette.applications import Starlette

Headers = list[tuple[bytes, bytes]]


class Lane:
    def __init__(
        self,
        app: Starlette,
        recorder: RequestRecorder,
        *,
        trust_forwarded: bool,
        finish_headers: Callable[[Headers], Headers] | None = None,
    ) -> None:
        """`finish_headers`: applied to the answer's headers last (the gateway's edge)."""
        self.app = app
        self.recorder = recorder
        self.trust_forwarded = trust_forwarded
        self.finish_headers = finish_headers

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: str,
        answer: Callable[[Request], Awaitable[Response]],
        *,
        request_id: str | None = None,
    ) -> None:
        """Answers the request with `answer(request)`, counted under `route`; `request_id`:
        the one it was given already (else taken from its headers or made)."""
        given = forwarded = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
            elif name == b"x-forwarded-for":
                forwarded = value
        rid = request_id or request_id_from(given)
        addr = None
        if self.trust_forwarded and forwarded:
            addr = forwarded.decode("latin-1").split(",")[0].strip() or None
        if addr is None:
            client = scope.get("client")
            addr = client[0] if client else None
        rid_token = request_id_var.set(rid)
        addr_token = client_addr_var.set(addr)
        scope["app"] = self.app
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        finish = self.finish_headers
        status = 500
        failed = False
        start = time.perf_counter()
        metrics = self.recorder.metrics
        metrics.in_flight_now += 1

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append(rid_header)
                message["headers"] = finish(headers) if finish is not None else headers
            await send(message)

        try:
            request = Request(scope, receive)
            try:
                response = await answer(request)
            except Exception as exc:
                response = await self._problem(request, exc)
            await response(scope, receive, send_with_id)
        except BaseException:
            failed = True
            raise
        finally:
            metrics.in_flight_now -= 1
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
                return await handler(request, exc)  # type: ignore[no-any-return]
        raise exc


def bodyless(scope: Scope) -> bool:
    """A request without a body: no `Content-Length` above 0, no `Transfer-Encoding`."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.strip() not in (b"", b"0"):
                return False
        elif name == b"transfer-encoding":
            return False
    return True
