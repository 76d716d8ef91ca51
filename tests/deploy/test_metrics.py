"""`/metrics` on a service app: request counts and latency per route template and status,
errors, the database pool; and the access log (request id, status, duration, no query)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app
from common.logs import JsonFormatter
from common.settings import BaseAppSettings
from tests.helpers import client, mint

router = APIRouter()


@router.get("/things/{thing_id}", operation_id="getThing")
async def get_thing(thing_id: int) -> dict[str, int]:
    return {"id": thing_id}


@router.get("/held", operation_id="held")
async def held(request: Request) -> dict[str, bool]:
    """Answers once the test lets it go (`app.state.release`)."""
    request.app.state.holding.set()
    await request.app.state.release.wait()
    return {"ok": True}


@router.get("/boom", operation_id="boomAgain")
async def boom() -> None:
    raise RuntimeError("boom")


@pytest.fixture
def app(db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]) -> FastAPI:
    settings = BaseAppSettings(**settings_env)  # type: ignore[arg-type]
    return create_service_app(
        title="Lianxin things",
        description="t",
        settings=settings,
        routers=[router],
        prefix="/api/v1/things",
        sessionmaker=db,
    )


@pytest.fixture
async def c(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, mint("admin")) as cl:
        yield cl


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, object]]]:
    lines: list[dict[str, object]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))

    logger = logging.getLogger("lianxin.access")
    handler = Collect()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def test_counts_and_times_by_route_template(c: httpx.AsyncClient) -> None:
    for n in (1, 2, 3):
        assert (await c.get(f"/api/v1/things/things/{n}")).status_code == 200
    assert (await c.get("/api/v1/things/things/x")).status_code == 422
    assert (await c.get("/api/v1/things/nowhere/at/all")).status_code == 404
    await c.get("/healthz")  # probes are not counted

    r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    text = r.text
    route = "/api/v1/things/things/{thing_id}"
    assert value(text, "lianxin_http_requests_total", method="GET", route=route, status="200") == 3
    assert value(text, "lianxin_http_requests_total", method="GET", route=route, status="422") == 1
    assert (
        value(text, "lianxin_http_requests_total", method="GET", route="<unmatched>", status="404")
        == 1
    )
    assert (
        value(text, "lianxin_http_request_duration_seconds_count", method="GET", route=route) == 4
    )
    assert (
        value(
            text,
            "lianxin_http_request_duration_seconds_bucket",
            method="GET",
            route=route,
            le="+Inf",
        )
        == 4
    )
    assert "/healthz" not in text and "/things/1" not in text  # templates, never raw paths
    assert value(text, "lianxin_app_info", app="things") == 1


async def test_requests_in_flight_are_counted_while_they_run(
    app: FastAPI, c: httpx.AsyncClient
) -> None:
    app.state.holding, app.state.release = asyncio.Event(), asyncio.Event()
    async with asyncio.timeout(10):
        pending = asyncio.create_task(c.get("/api/v1/things/held"))
        await app.state.holding.wait()
        during = value((await c.get("/metrics")).text, "lianxin_http_requests_in_flight")
        app.state.release.set()
        assert (await pending).status_code == 200
        after = value((await c.get("/metrics")).text, "lianxin_http_requests_in_flight")
    assert (during, after) == (1, 0)  # the scrape does not count itself


async def test_errors_are_counted(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as cl:
        headers = {"Authorization": f"Bearer {mint('admin')}"}
        assert (await cl.get("/api/v1/things/boom", headers=headers)).status_code == 500
        text = (await cl.get("/metrics")).text
    route = "/api/v1/things/boom"
    assert value(text, "lianxin_http_errors_total", method="GET", route=route) == 1
    assert value(text, "lianxin_http_requests_total", method="GET", route=route, status="500") == 1


async def test_database_pool_is_reported(c: httpx.AsyncClient) -> None:
    text = (await c.get("/metrics")).text
    assert value(text, "lianxin_db_pool_size") >= 1
    assert ("lianxin_db_pool_checked_out", frozenset()) in samples(text)


async def test_metrics_are_not_in_the_openapi_document(c: httpx.AsyncClient) -> None:
    doc = (await c.get("/api/v1/things/openapi.json")).json()
    assert "/metrics" not in doc["paths"]


async def test_access_log_line(c: httpx.AsyncClient, access_lines: list[dict[str, object]]) -> None:
    r = await c.get(
        "/api/v1/things/things/7?name=%E5%BC%A0%E4%B8%89&id_number=330402197001011231",
        headers={"X-Request-ID": "req-metrics-1"},
    )
    assert r.status_code == 200
    [line] = [x for x in access_lines if x["request_id"] == "req-metrics-1"]
    assert line["logger"] == "lianxin.access"
    assert line["method"] == "GET" and line["status"] == 200
    assert line["route"] == "/api/v1/things/things/{thing_id}"
    assert line["path"] == "/api/v1/things/things/7"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "330402197001011231" not in json.dumps(line) and "name=" not in json.dumps(line)


async def test_consumer_lag_per_consumer_and_source(
    db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]
) -> None:
    from sqlalchemy import text

    async with db() as session:
        await session.execute(
            text(
                "INSERT INTO mobility.consumer_cursors (consumer, source, id) "
                "VALUES ('test.lag', 'registry', 0)"
            )
        )
        for n in range(3):
            await session.execute(
                text(
                    "INSERT INTO registry.outbox (event_id, type, aggregate_type, aggregate_id, "
                    "aggregate_version, payload) VALUES (gen_random_uuid(), 'org.updated', "
                    "'org', gen_random_uuid(), :n, '{}')"
                ),
                {"n": n + 1},
            )
        newest = await session.scalar(text("SELECT max(id) FROM registry.outbox"))
        await session.execute(
            text("UPDATE mobility.consumer_cursors SET id = :id WHERE consumer = 'test.lag'"),
            {"id": newest - 2},
        )
        await session.commit()
    settings = BaseAppSettings(**settings_env)  # type: ignore[arg-type]
    app = create_service_app(
        title="Lianxin mobility",
        description="t",
        settings=settings,
        routers=[],
        prefix="/api/v1/mobility",
        sessionmaker=db,
    )
    async with client(app) as cl:
        text_ = (await cl.get("/metrics")).text
    assert value(text_, "lianxin_consumer_lag_events", consumer="test.lag", source="registry") == 2
