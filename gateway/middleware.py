"""Plain ASGI middleware of the gateway's edge: security headers on every response."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.upstream_http import header_lines

# Nothing may load, frame or submit anything: the API serves JSON, not pages.
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class EdgeHeaders:
    """`nosniff`, `no-referrer`, `DENY`, a strict CSP (a response that brings its own, like
    `/docs`, keeps it), HSTS when configured, and `Cache-Control: no-store` on API
    responses unless the service chose a policy itself."""

    def __init__(self, *, hsts_max_age_s: int = 0) -> None:
        self.always: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]
        if hsts_max_age_s > 0:
            hsts = f"max-age={hsts_max_age_s}; includeSubDomains"
            self.always.append((b"strict-transport-security", hsts.encode()))
        # The edge's own names: `apply` replaces any a response set.
        self.names = frozenset(name for name, _ in self.always)
        # `apply` as header lines, for an answer that already holds a CSP and/or a cache
        # policy (`lines[csp][cache]`: the relay writes heads as bytes, `gateway.server`).
        always = header_lines(self.always)
        csp = b"content-security-policy: " + STRICT_CSP_B + b"\r\n"
        cache = b"cache-control: no-store\r\n"
        self.lines = (
            (always + csp + cache, always + csp),
            (always + cache, always),
        )

    def apply(self, headers: list[tuple[bytes, bytes]], *, api: bool) -> list[tuple[bytes, bytes]]:
        """A response's headers with the edge's added (and any the response set of the
        edge's own names replaced)."""
        out = [(k, v) for k, v in headers if k.lower() not in self.names]
        present = {k.lower() for k, _ in out}
        out.extend(self.always)
        if b"content-security-policy" not in present:
            out.append((b"content-security-policy", STRICT_CSP_B))
        if api and b"cache-control" not in present:
            out.append((b"cache-control", b"no-store"))
        return out


STRICT_CSP_B = STRICT_CSP.encode()


class SecurityHeadersMiddleware:
    """The edge's headers (`EdgeHeaders`) on every response."""

    def __init__(self, app: ASGIApp, *, hsts_max_age_s: int = 0, api_prefix: str = "/api/") -> None:
        self.app = app
        self.api_prefix = api_prefix
        self.edge = EdgeHeaders(hsts_max_age_s=hsts_max_age_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith(self.api_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self.edge.apply(message.get("headers", []), api=api)
            await send(message)

        await self.app(scope, receive, send_with_headers)
