"""The dashboard in headless Chromium against the real system: the gateway and the three
services as uvicorn child processes on a fresh database holding the demo city. The figures
the page shows are compared with the report's JSON read over HTTP in the same test.

Screenshots go to `test-artifacts/dashboard/` at the repository root (ignored by git)."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.contract.system import ADMIN_PASSWORD, ADMIN_USER, System, running_system
from tools.demo import load

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
YEAR = 2003
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Chromium is not installed (/usr/bin/chromium is missing): the dashboard's browser "
    "tests need it; on Debian or Ubuntu run `apt-get install chromium`",
)


@dataclass
class DemoSystem:
    system: System
    city_id: uuid.UUID
    city_name: str
    report: dict[str, Any]
    token_pair: dict[str, Any]

    @property
    def url(self) -> str:
        return self.system.gateway_url


def _login(client: httpx.Client) -> dict[str, Any]:
    r = client.post("/api/v1/auth/token", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    pair: dict[str, Any] = r.json()
    return pair


@pytest.fixture(scope="module")
def demo_system(server_url: str) -> Iterator[DemoSystem]:
    loaded: list[uuid.UUID] = []

    def load_demo(url: str) -> None:
        result = asyncio.run(load(url, seed=2004, year=YEAR, out=io.StringIO()))
        assert result is not None
        loaded.append(result.city_id)

    with running_system(server_url, prepare=load_demo) as system:
        city_id = loaded[0]
        with httpx.Client(base_url=system.gateway_url, timeout=60) as client:
            pair = _login(client)
            headers = {"Authorization": f"Bearer {pair['access_token']}"}
            city = client.get(f"/api/v1/registry/orgs/{city_id}", headers=headers)
            assert city.status_code == 200, city.text
            report = client.get(
                f"/api/v1/reports/orgs/{city_id}", params={"year": YEAR}, headers=headers
            )
            assert report.status_code == 200, report.text
        yield DemoSystem(system, city_id, city.json()["name"], report.json(), pair)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Tab:
    page: Page
    errors: list[str]


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(
        viewport={"width": 1200, "height": 1400}, locale="zh-CN", accept_downloads=True
    )
    try:
        yield ctx
    finally:
        ctx.close()


def _open(ctx: BrowserContext, url: str) -> Tab:
    """A page that records console errors (a CSP violation is one) and uncaught exceptions."""
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/dashboard")
    return Tab(page, errors)


def _show_city_report(tab: Tab, demo: DemoSystem) -> None:
    page = tab.page
    page.fill("#username", ADMIN_USER)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.fill("#year", str(YEAR))
    page.click(f'#org-list button.pick[data-org-id="{demo.city_id}"]')
    page.wait_for_selector(f"#report-title:has-text('{YEAR}')")
    page.wait_for_selector("#sections [data-section]")


def _shown(page: Page) -> dict[str, str]:
    """Every figure on the page: `data-figure` path → the text shown."""
    shown: dict[str, str] = page.eval_on_selector_all(
        "[data-figure]",
        "els => Object.fromEntries(els.map(e => [e.dataset.figure, e.textContent.trim()]))",
    )
    return shown


def _lookup(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for part in path.split("."):
        value = value[part]
    return value


def _expected_text(path: str, value: Any) -> str:
    """How the page writes a JSON value: counts with thousands separators, shares and rates
    as percentages with two places, yuan grouped as `1,234.50 元`."""
    if value is None:
        return "—"
    last = path.rsplit(".", 1)[-1]
    if last in {"allocated", "spent", "per_member"}:
        return f"{Decimal(value):,} 元"
    if last == "service_hours":
        return str(value)
    if last == "share" or last.endswith(("_rate", "coverage")):
        return f"{Decimal(str(value)) * 100:.2f}%"
    return f"{int(value):,}"


def _number(text: str) -> int:
    return int(text.replace(",", ""))


class TestCityReport:
    def test_page_shows_the_city_figures_the_api_gives(
        self, demo_system: DemoSystem, context: BrowserContext
    ) -> None:
        tab = _open(context, demo_system.url)
        _show_city_report(tab, demo_system)
        report = demo_system.report
        shown = _shown(tab.page)

        # Every breakdown users read, each value with its count and share, `unknown` included.
        for section, figure in [
            ("members", "by_category"),
            ("members", "by_age_band"),
            ("members", "by_education_band"),
            ("members", "by_relation"),
            ("mobile", "by_status"),
            ("activities", "by_type"),
            ("orgs", "by_kind"),
        ]:
            for item in report[section][figure]:
                for part in ("count", "share"):
                    path = f"{section}.{figure}.{item}.{part}"
                    assert path in shown, f"{path} is not on the page"
        for unknown in ("by_category", "by_age_band", "by_education_band"):
            assert f"members.{unknown}.unknown.count" in shown

        # Each figure on the page is the JSON's, as the page writes it.
        for path, text in shown.items():
            assert text == _expected_text(path, _lookup(report, path)), path

        # The demo city is the survey's Jiaxing: 76 members flowed in, 264 out in 2003.
        assert _number(shown["flows.inflow"]) == report["flows"]["inflow"] == 76
        assert _number(shown["flows.outflow"]) == report["flows"]["outflow"] == 264
        assert _number(shown["members.total"]) == report["members"]["total"] > 0
        assert shown["dual_management.report_rate"].endswith("%")

        # A bar per category in the chart, grey for `unknown`.
        chart = tab.page.locator('[data-section="members.by_category"] svg.chart')
        assert chart.locator("rect.bar").count() == len(report["members"]["by_category"])
        assert chart.locator("rect.bar.unknown").count() == 1
        assert tab.page.locator('[data-section="members.by_age_band"] tr.unknown').count() == 1

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name, full_page in (("desktop.png", False), ("desktop-full.png", True)):
            shot = ARTIFACTS / name
            tab.page.screenshot(path=str(shot), full_page=full_page)
            print(f"dashboard screenshot: {shot}")
        assert tab.errors == []

    def test_xlsx_and_printable_page_download_the_same_report(
        self, demo_system: DemoSystem, context: BrowserContext
    ) -> None:
        tab = _open(context, demo_system.url)
        _show_city_report(tab, demo_system)
        with tab.page.expect_download() as xlsx_download:
            tab.page.click("#dl-xlsx")
        xlsx = xlsx_download.value
        assert xlsx.suggested_filename == f"report-{demo_system.city_id}-{YEAR}.xlsx"
        sheet = load_workbook(io.BytesIO(Path(xlsx.path()).read_bytes()))["flows"]
        rows = {(r[0], r[1] or ""): r[3] for r in sheet.iter_rows(min_row=2, values_only=True)}
        assert rows[("inflow", "")] == demo_system.report["flows"]["inflow"]

        with tab.page.expect_download() as html_download:
            tab.page.click("#dl-html")
        printable = Path(html_download.value.path()).read_text(encoding="utf-8")
        assert html_download.value.suggested_filename.endswith(f"-{YEAR}.html")
        assert f"（{YEAR}年）" in printable
        assert tab.errors == []


class TestSession:
    def test_wrong_password_is_said_on_the_form(
        self, demo_system: DemoSystem, context: BrowserContext
    ) -> None:
        tab = _open(context, demo_system.url)
        tab.page.fill("#username", ADMIN_USER)
        tab.page.fill("#password", "not-the-password")
        tab.page.click("#login-form button[type=submit]")
        error = tab.page.locator("#login-error")
        error.wait_for(state="visible")
        assert error.text_content() == "用户名或密码不对。"
        assert tab.page.locator("#picker").is_hidden()

    def test_an_expired_access_token_is_refreshed(
        self, demo_system: DemoSystem, context: BrowserContext
    ) -> None:
        with httpx.Client(base_url=demo_system.url, timeout=30) as client:
            pair = _login(client)
        tab = _open(context, demo_system.url)
        # A tab that holds a dead access token and a live refresh token.
        tab.page.evaluate(
            "refresh => sessionStorage.setItem('lianxin.dashboard.tokens', "
            "JSON.stringify({access: 'expired.access.token', refresh}))",
            pair["refresh_token"],
        )
        tab.page.reload()
        tab.page.locator("#picker").wait_for(state="visible")
        assert tab.page.locator("#who-name").text_content() == f"{ADMIN_USER}（admin）"
        stored = tab.page.evaluate("JSON.parse(sessionStorage.getItem('lianxin.dashboard.tokens'))")
        assert stored["access"] != "expired.access.token"
        assert stored["refresh"] != pair["refresh_token"]  # rotated: the old one is spent
        tab.page.locator(f'#org-list button.pick[data-org-id="{demo_system.city_id}"]').wait_for()
        # The tokens never reach the address bar.
        assert pair["refresh_token"] not in tab.page.url

    def test_search_finds_an_org_by_part_of_its_name(
        self, demo_system: DemoSystem, context: BrowserContext
    ) -> None:
        tab = _open(context, demo_system.url)
        _log_in(tab, ADMIN_USER, ADMIN_PASSWORD)
        tab.page.fill("#org-search", "南河头")
        hit = tab.page.locator("#org-list button.pick", has_text="南河头社区党委")
        hit.wait_for()
        assert re.search("查找“南河头”", tab.page.locator("#crumbs").text_content() or "")


def _log_in(tab: Tab, username: str, password: str) -> None:
    tab.page.fill("#username", username)
    tab.page.fill("#password", password)
    tab.page.click("#login-form button[type=submit]")
    tab.page.locator("#picker").wait_for(state="visible")


class TestPicker:
    def test_drilling_down_lists_the_orgs_children(
        self, demo_system: DemoSystem, context: BrowserContext
    ) -> None:
        headers = {"Authorization": f"Bearer {demo_system.token_pair['access_token']}"}
        with httpx.Client(base_url=demo_system.url, timeout=30, headers=headers) as client:
            children = client.get(
                f"/api/v1/registry/orgs/{demo_system.city_id}/children", params={"limit": 500}
            ).json()["items"]
        assert children
        tab = _open(context, demo_system.url)
        _log_in(tab, ADMIN_USER, ADMIN_PASSWORD)
        tab.page.click(f'#org-list button.down[data-drill-id="{demo_system.city_id}"]')
        tab.page.locator("#crumbs", has_text=demo_system.city_name).wait_for()
        listed = tab.page.eval_on_selector_all(
            "#org-list button.pick", "els => els.map(e => e.dataset.orgId)"
        )
        assert listed == [c["id"] for c in children]
        assert tab.errors == []

    def test_org_admin_sees_only_their_subtree(
        self, demo_system: DemoSystem, context: BrowserContext
    ) -> None:
        headers = {"Authorization": f"Bearer {demo_system.token_pair['access_token']}"}
        password = "Nanhetou-2003-admin"
        with httpx.Client(base_url=demo_system.url, timeout=60, headers=headers) as client:
            org = client.get("/api/v1/registry/orgs", params={"q": "南河头社区党委"}).json()
            community = org["items"][0]
            created = client.post(
                "/api/v1/auth/users",
                json={
                    "username": "nanhetou-admin",
                    "password": password,
                    "role": "org_admin",
                    "org_id": community["id"],
                },
            )
            assert created.status_code == 201, created.text
            own = httpx.post(
                f"{demo_system.url}/api/v1/auth/token",
                data={"username": "nanhetou-admin", "password": password},
                timeout=30,
            ).json()
            report = client.get(
                f"/api/v1/reports/orgs/{community['id']}",
                params={"year": YEAR},
                headers={"Authorization": f"Bearer {own['access_token']}"},
            ).json()
        tab = _open(context, demo_system.url)
        _log_in(tab, "nanhetou-admin", password)
        listed = tab.page.locator("#org-list button.pick")
        listed.first.wait_for()
        assert listed.evaluate_all("els => els.map(e => e.dataset.orgId)") == [community["id"]]
        tab.page.fill("#year", str(YEAR))
        listed.first.click()
        tab.page.wait_for_selector(f"#report-title:has-text('{community['name']}')")
        shown = _shown(tab.page)
        assert _number(shown["members.total"]) == report["members"]["total"]
        assert report["members"]["total"] < demo_system.report["members"]["total"]
        assert tab.errors == []


class TestPhone:
    def test_report_fits_a_375px_wide_screen(
        self, demo_system: DemoSystem, browser: Browser
    ) -> None:
        ctx = browser.new_context(
            viewport={"width": 375, "height": 812},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale="zh-CN",
        )
        try:
            tab = _open(ctx, demo_system.url)
            _show_city_report(tab, demo_system)
            page = tab.page
            width = page.evaluate("document.documentElement.clientWidth")
            assert width == 375
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            wider = page.eval_on_selector_all(
                "body *",
                "(els, w) => els.filter(e => { const r = e.getBoundingClientRect();"
                " return r.width > 0 && (r.right > w + 0.5 || r.left < -0.5); })"
                ".map(e => e.tagName + '#' + e.id + '.' + e.getAttribute('class'))",
                width,
            )
            assert wider == []
            shown = _shown(page)
            assert _number(shown["members.total"]) == demo_system.report["members"]["total"]
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for name, full_page in (("phone.png", False), ("phone-full.png", True)):
                shot = ARTIFACTS / name
                page.screenshot(path=str(shot), full_page=full_page)
                print(f"dashboard phone screenshot: {shot}")
            assert tab.errors == []
        finally:
            ctx.close()
