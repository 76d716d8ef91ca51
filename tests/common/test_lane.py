"""A service's hot reads take the lane past the middleware stack (`common.lane`): the same
answers, request ids, client address, metrics and problems as through the stack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import ServiceApp, create_service_app
from common.auth import bearer_principal
from common.context import client_addr_var, request_id_var
from common.errors import NotFound
from common.settings import BaseAppSettings
from tests.helpers import client, mint

MISSING = uuid.UUID("00000000-0000-4000-8000-000000000404")
BROKEN = uuid.UUID("00000000-0000-4000-8000-000000000500")
PREFIX = "/api/v1/t"
TEMPLATE = f"{PREFIX}/items/{{item_id}}"

router = APIRouter()


@router.get("/items/{item_id}", operation_id="getItem")
async def get_item(item_id: uuid.UUID, request: Request) -> Response:
    principal = bearer_principal(request)
    if item_id == MISSING:
        raise NotFound("No such item.")
    if item_id == BROKEN:
        raise RuntimeError("internal detail that must not leak")
    return JSONResponse(
        {
            "id": str(item_id),
            "caller": principal.subject,
            "request_id": request_id_var.get(),
            "client_addr": client_addr_var.get(),
            # The stack records the matched route in the scope; the lane matches nothing.
            "through_stack": "route" in request.scope,
        },
        headers={"ETag": '"7"'},
    )


@pytest.fixture
def app(db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]) -> ServiceApp:
    settings = BaseAppSettings(**settings_env)  # type: ignore[arg-type]
    app = create_service_app(
        title="t",
        description="t",
        settings=settings,
        routers=[router],
        prefix=PREFIX,
        sessionmaker=db,
    )
    app.hot_read(TEMPLATE, get_item)
    return app


@pytest.fixture
async def c(app: ServiceApp) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, mint("admin", sub="reader-1")) as cl:
        yield cl


def _lane_and_stack(item: uuid.UUID) -> tuple[str, str]:
    """The same read addressed so the lane takes it (the canonical id) and so it goes
    through the stack (32 hex digits, which only the route's validation accepts)."""
    return f"{PREFIX}/items/{item}", f"{PREFIX}/items/{item.hex}"


def _comparable(r: httpx.Response) -> tuple[int, dict[str, str], object]:
    # (The length differs by the body's `through_stack` and request id.)
    skip = ("date", "x-request-id", "content-length")
    headers = {k: v for k, v in r.headers.items() if k not in skip}
    body = r.json()
    if isinstance(body, dict):
        body.pop("through_stack", None)
        body.pop("request_id", None)
        body.pop("instance", None)  # names the request id
    return r.status_code, headers, body


async def test_the_lane_answers_as_the_stack_does(c: httpx.AsyncClient) -> None:
    item = uuid.uuid4()
    lane, stack = _lane_and_stack(item)
    by_lane, by_stack = await c.get(lane), await c.get(stack)
    assert by_lane.json()["through_stack"] is False
    assert by_stack.json()["through_stack"] is True
    assert by_lane.json()["id"] == str(item) and by_lane.json()["caller"] == "reader-1"
    assert _comparable(by_lane) == _comparable(by_stack)
    assert by_lane.headers["etag"] == '"7"'


@pytest.mark.parametrize(
    ("item", "headers", "status"),
    [
        (MISSING, None, 404),
        (uuid.uuid4(), {"Authorization": ""}, 401),
        (uuid.uuid4(), {"Authorization": "Basic eDp5"}, 401),
        (uuid.uuid4(), {"Authorization": "Bearer not-a-token"}, 401),
    ],
)
async def test_problems_are_the_stacks(
    c: httpx.AsyncClient, item: uuid.UUID, headers: dict[str, str] | None, status: int
) -> None:
    lane, stack = _lane_and_stack(item)
    by_lane = await c.get(lane, headers=headers)
    by_stack = await c.get(stack, headers=headers)
    assert by_lane.status_code == status
    assert by_lane.headers["content-type"] == "application/problem+json"
    assert _comparable(by_lane) == _comparable(by_stack)
    rid = by_lane.headers["x-request-id"]
    assert by_lane.json()["instance"] == f"urn:lianxin:request:{rid}"


async def test_an_unexpected_error_is_a_500_problem_without_detail(app: ServiceApp) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {mint('admin')}", "X-Request-ID": "req-500"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as cl:
        r = await cl.get(f"{PREFIX}/items/{BROKEN}")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "internal detail" not in r.text
    assert r.json()["instance"] == "urn:lianxin:request:req-500"
    assert r.headers["x-request-id"] == "req-500"


async def test_request_id_is_echoed_when_safe_and_made_when_not(c: httpx.AsyncClient) -> None:
    path = f"{PREFIX}/items/{uuid.uuid4()}"
    r = await c.get(path, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123" == r.json()["request_id"]
    r = await c.get(path, headers={"X-Request-ID": "bad id\twith spaces"})
    made = r.headers["x-request-id"]
    assert made != "bad id\twith spaces" and len(made) == 32 and made == r.json()["request_id"]
    other = (await c.get(path)).headers["x-request-id"]
    assert other != made


async def test_the_forwarded_client_address_is_taken_as_the_stack_takes_it(
    c: httpx.AsyncClient,
) -> None:
    lane, stack = _lane_and_stack(uuid.uuid4())
    headers = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
    assert (await c.get(lane, headers=headers)).json()["client_addr"] == "203.0.113.9"
    assert (await c.get(stack, headers=headers)).json()["client_addr"] == "203.0.113.9"
    assert (await c.get(lane)).json()["client_addr"] == (await c.get(stack)).json()["client_addr"]


async def test_requests_are_counted_under_the_routes_template(
    app: ServiceApp, c: httpx.AsyncClient
) -> None:
    def count(text: str, status: str) -> float:
        line = f'lianxin_http_requests_total{{method="GET",route="{TEMPLATE}",status="{status}"}} '
        found = [ln for ln in text.splitlines() if ln.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    before = (await c.get("/metrics")).text
    await c.get(f"{PREFIX}/items/{uuid.uuid4()}")
    await c.get(f"{PREFIX}/items/{uuid.uuid4().hex}")  # the stack's count, same label
    await c.get(f"{PREFIX}/items/{MISSING}")
    after = (await c.get("/metrics")).text
    assert count(after, "200") - count(before, "200") == 2
    assert count(after, "404") - count(before, "404") == 1


@pytest.mark.parametrize(
    "path",
    [
        f"{PREFIX}/items/{'x' * 36}",  # 36 characters, not an id: the route's 422
        f"{PREFIX}/items/{uuid.uuid4()}/more",
        f"{PREFIX}/items/",
    ],
)
async def test_other_paths_go_through_the_stack(c: httpx.AsyncClient, path: str) -> None:
    r = await c.get(path)
    assert r.status_code in (404, 422)
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_request_with_a_body_or_another_method_takes_the_stack(
    c: httpx.AsyncClient,
) -> None:
    path = f"{PREFIX}/items/{uuid.uuid4()}"
    r = await c.request("GET", path, content=b"{}")
    assert r.status_code == 200 and r.json()["through_stack"] is True
    r = await c.post(path)
    assert r.status_code == 405


def test_a_hot_read_ends_in_its_path_parameter(app: ServiceApp) -> None:
    with pytest.raises(ValueError, match="one path parameter"):
        app.hot_read(f"{PREFIX}/items/{{item_id}}/history", get_item)
