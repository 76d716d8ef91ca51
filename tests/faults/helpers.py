"""What the fault tests share: a dedicated PostgreSQL server they may restart, logging in
to a running system, writers that keep creating records with `Idempotency-Key`s and
remember every answer, and bounded waits."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from common.db import plain_url
from common.errors import PROBLEM_JSON
from tests.contract.system import ADMIN_PASSWORD, ADMIN_USER
from tools import pg

T = TypeVar("T")
B = "/api/v1"


@dataclass
class Server:
    """An embedded PostgreSQL of the test's own, on a fixed port so it can come back."""

    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return pg.Cluster(self.data_dir, self.port).url

    def stop(self) -> None:
        pg.stop(self.data_dir)  # `pg_ctl stop -m fast`: every session is terminated

    def start(self) -> None:
        pg.start(self.data_dir, self.port)


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout_s: float, what: str, every_s: float = 0.05
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every_s)


async def login(gateway_url: str) -> httpx.AsyncClient:
    """A client of the gateway with the admin's bearer token (the caller closes it)."""
    c = httpx.AsyncClient(base_url=gateway_url, timeout=15, trust_env=False)
    r = await c.post(f"{B}/auth/token", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return c


async def create_org(c: httpx.AsyncClient, parent_id: str | None = None) -> str:
    body = {
        "code": f"FLT-{uuid.uuid4().hex[:8]}",
        "name": "故障测试社区党支部",
        "kind": "committee" if parent_id is None else "branch",
        "area_level": "city" if parent_id is None else "community",
        "parent_id": parent_id,
    }
    r = await c.post(f"{B}/registry/orgs", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def is_problem(r: httpx.Response) -> bool:
    if not r.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return False
    return bool(r.json().get("status") == r.status_code)


_numbers = itertools.count(1)


@dataclass
class Attempt:
    status: int | None  # None: no answer at all (the connection failed)
    record_id: str | None
    problem: bool
    seconds: float


@dataclass
class Write:
    """One create: its key and body, and every attempt made with them."""

    kind: str
    path: str
    key: str
    body: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status is not None and a.status < 300), None)


def member_write(org_id: str) -> Write:
    n = next(_numbers)
    body = {
        "name": f"故障{n}号",
        "gender": "male",
        "birth_date": "1970-01-01",
        "category": "retired",
        "org_id": org_id,
    }
    return Write("member", f"{B}/registry/members", uuid.uuid4().hex, body)


def org_write(parent_id: str) -> Write:
    body = {
        "code": f"FLT-{uuid.uuid4().hex[:10]}",
        "name": f"故障{next(_numbers)}号社区",
        "kind": "branch",
        "area_level": "community",
        "parent_id": parent_id,
    }
    return Write("org", f"{B}/registry/orgs", uuid.uuid4().hex, body)


def activity_write(org_id: str) -> Write:
    body = {
        "org_id": org_id,
        "type": "theme_day",
        "title": f"故障{next(_numbers)}号主题党日",
        "starts_at": "2026-05-01T09:00:00+08:00",
        "ends_at": "2026-05-01T11:00:00+08:00",
    }
    return Write("activity", f"{B}/activities/activities", uuid.uuid4().hex, body)


async def attempt(c: httpx.AsyncClient, write: Write) -> Attempt:
    t0 = time.monotonic()
    try:
        r = await c.post(write.path, json=write.body, headers={"Idempotency-Key": write.key})
    except httpx.TransportError:
        result = Attempt(None, None, False, time.monotonic() - t0)
    else:
        record = r.json().get("id") if r.status_code < 300 else None
        result = Attempt(
            r.status_code, record, r.status_code >= 400 and is_problem(r), time.monotonic() - t0
        )
    write.attempts.append(result)
    return result


def unhandled_errors(processes: dict[str, Any]) -> str:
    """The last line of each unhandled error the apps logged (for failure messages)."""
    found: Counter[str] = Counter()
    for name, process in processes.items():
        for line in process.log_tail(10**8).splitlines():
            if '"unhandled error' in line or '"level": "error"' in line:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                last = str(record.get("exc") or record.get("msg")).strip().splitlines()[-1]
                found[f"{name}: {record.get('msg')} -> {last}"] += 1
    return "\n".join(f"{n} x {line}" for line, n in found.most_common())


async def count(database_url: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def fetch_ids(database_url: str, sql: str) -> list[str]:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return [str(r[0]) for r in await conn.fetch(sql)]
    finally:
        await conn.close()
