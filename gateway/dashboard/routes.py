"""Serves the dashboard page and its files. Everything comes from this package: no CDN, no
inline script or style, so the page runs under a strict CSP of its own (scripts, styles and
fetches from the gateway itself only). None of it is in the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from common.errors import NotFound

STATIC = Path(__file__).parent / "static"

# The page's own policy (the security headers middleware keeps a response's CSP): its
# script, stylesheet and API calls from this origin, nothing inline, nothing framed.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The only files served, by name: no path from the request reaches the file system.
FILES: dict[str, str] = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def _file(name: str, media_type: str) -> FileResponse:
    return FileResponse(
        STATIC / name,
        media_type=media_type,
        headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache"},
    )


@router.get("/dashboard")
async def dashboard() -> FileResponse:
    return _file("index.html", "text/html; charset=utf-8")


@router.get("/dashboard/static/{name}")
async def dashboard_static(name: str) -> FileResponse:
    media_type = FILES.get(name)
    if media_type is None:
        raise NotFound("No such file.")
    return _file(name, media_type)
