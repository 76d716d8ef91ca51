"""`/dashboard` serves its page and files under a CSP of its own, only the files it ships,
and stays out of the public API description."""

from __future__ import annotations

import httpx
import pytest

from gateway.dashboard.routes import DASHBOARD_CSP


def _directives(csp: str) -> dict[str, str]:
    return {d.split()[0]: d.strip() for d in csp.split(";") if d.strip()}


class TestDashboardPage:
    async def test_page_is_html_with_its_own_strict_csp(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/dashboard")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["content-security-policy"] == DASHBOARD_CSP
        csp = _directives(DASHBOARD_CSP)
        assert csp["script-src"] == "script-src 'self'"
        assert csp["style-src"] == "style-src 'self'"
        assert csp["frame-ancestors"] == "frame-ancestors 'none'"
        assert "unsafe" not in DASHBOARD_CSP
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"

    async def test_page_has_no_inline_script_or_style(self, anon: httpx.AsyncClient) -> None:
        page = (await anon.get("/dashboard")).text
        assert '<meta name="viewport"' in page
        assert '<script src="/dashboard/static/dashboard.js"' in page
        assert "<script>" not in page and "<style" not in page and " style=" not in page
        assert "http://" not in page and "https://" not in page  # nothing from elsewhere

    @pytest.mark.parametrize(
        ("name", "media"), [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")]
    )
    async def test_static_files_are_served_with_their_type(
        self, anon: httpx.AsyncClient, name: str, media: str
    ) -> None:
        r = await anon.get(f"/dashboard/static/{name}")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(media)
        assert r.headers["content-security-policy"] == DASHBOARD_CSP
        assert len(r.content) > 1000

    @pytest.mark.parametrize(
        "path",
        [
            "/dashboard/static/index.html.bak",
            "/dashboard/static/routes.py",
            "/dashboard/static/..%2Froutes.py",
            "/dashboard/static/%2e%2e%2f%2e%2e%2fapp.py",
        ],
    )
    async def test_other_files_are_404(self, anon: httpx.AsyncClient, path: str) -> None:
        r = await anon.get(path)
        assert r.status_code == 404
        assert "import" not in r.text

    async def test_script_fetches_nothing_from_elsewhere(self, anon: httpx.AsyncClient) -> None:
        script = (await anon.get("/dashboard/static/dashboard.js")).text
        assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in script
        assert "innerHTML" not in script  # server text goes in through textContent only

    async def test_dashboard_is_not_in_the_openapi_document(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/api/v1/openapi.json")
        assert r.status_code == 200
        assert not [p for p in r.json()["paths"] if "dashboard" in p]
