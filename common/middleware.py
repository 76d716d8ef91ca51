"""Plain ASGI middleware every app mounts: request ids, request body limits and the
announcement of deprecated routes."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.context import client_addr_var, request_id_var

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _RequestIds:
    """New request ids: 32 hex digits, a random half per process and a counter. Unique
    (the random half is drawn again in a forked child), not secret — they are echoed to
    clients and logged — and without a system call per request, as `os.urandom` made."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_ids = _RequestIds()


def request_id_from(value: bytes | None) -> str:
    """The client's `X-Request-ID` when it is safe to echo and log, else a new one."""
    if value:
        raw = value.decode("latin-1")
        if _SAFE_ID.match(raw):
            return raw
    return _ids.new()


class RequestContextMiddleware:
    """Takes `X-Request-ID` (or makes one), exposes it to logs and errors, and echoes it."""

    def __init__(self, app: ASGIApp, *, trust_forwarded: bool = True) -> None:
        # Services sit behind the gateway and take the client address it forwards; the
        # gateway faces clients and must not believe a client-supplied X-Forwarded-For.
        self.app = app
        self.trust_forwarded = trust_forwarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = request_id_from(headers.get(b"x-request-id"))
        forwarded = ""
        if self.trust_forwarded:
            raw_fwd = headers.get(b"x-forwarded-for", b"").decode("latin-1")
            forwarded = raw_fwd.split(",")[0].strip()
        client = scope.get("client")
        addr = forwarded or (client[0] if client else None)
        rid_token = request_id_var.set(rid)
        addr_token = client_addr_var.set(addr)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *[(k, v) for k, v in message["headers"] if k.lower() != b"x-request-id"],
                    (b"x-request-id", rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(rid_token)
            client_addr_var.reset(addr_token)


class _TooLarge(HTTPException):
    """Raised from `receive` mid-stream; FastAPI lets HTTP exceptions raised while reading
    the body through, and the app's handler renders it as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"The request body exceeds {limit} bytes.")


class BodyLimitMiddleware:
    """Refuses request bodies over a size (by `Content-Length` up front, and by counting
    while streaming) with a 413 problem, before the app reads them."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = False
            if too_big:
                await _send_413(send, limit)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_413(send, limit)


async def _send_413(send: Send, limit: int) -> None:
    rid = request_id_var.get()
    body = json.dumps(
        {
            "type": "urn:lianxin:problem:payload-too-large",
            "title": "Payload too large",
            "status": 413,
            "detail": f"The request body exceeds {limit} bytes.",
            "instance": f"urn:lianxin:request:{rid}" if rid else None,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _http_date(value: str) -> str:
    """`2027-06-30` or an ISO timestamp → an IMF-fixdate (`Sunset` is an HTTP-date)."""
    from datetime import UTC, datetime
    from email.utils import format_datetime

    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def deprecation_headers(route: object) -> list[tuple[bytes, bytes]]:
    """What a call to a `deprecated=True` route answers with: `Deprecation` (RFC 9745: the
    moment it was deprecated, `@<unix seconds>`, from the route's `x-deprecated-at`, else
    `true`), and `Sunset` (RFC 8594) when the route names its `x-sunset` date. Both dates
    go in the route's `openapi_extra`, so the document shows them as well."""
    if not getattr(route, "deprecated", False):
        return []
    from datetime import UTC, datetime

    extra = getattr(route, "openapi_extra", None) or {}
    since = extra.get("x-deprecated-at")
    if since:
        moment = datetime.fromisoformat(str(since))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        value = f"@{int(moment.timestamp())}"
    else:
        value = "true"
    headers = [(b"deprecation", value.encode())]
    if extra.get("x-sunset"):
        headers.append((b"sunset", _http_date(str(extra["x-sunset"])).encode()))
    return headers


class DeprecationMiddleware:
    """Announces deprecated routes on every response they give (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_announced(message: Message) -> None:
            # The router records the matched route in this same scope before it runs.
            if message["type"] == "http.response.start":
                extra = deprecation_headers(scope.get("route"))
                if extra:
                    names = {name for name, _ in extra}
                    message["headers"] = [
                        *[(k, v) for k, v in message.get("headers", []) if k.lower() not in names],
                        *extra,
                    ]
            await send(message)

        await self.app(scope, receive, send_announced)
