"""Builders for registry tests, going through the public API."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx

_codes = itertools.count(1)


def code(prefix: str = "ORG") -> str:
    return f"{prefix}-{next(_codes)}-{uuid.uuid4().hex[:6]}"


async def make_org(
    c: httpx.AsyncClient,
    *,
    parent_id: str | None = None,
    kind: str = "branch",
    area_level: str = "community",
    name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "code": code(),
        "name": name or f"组织{next(_codes)}",
        "kind": kind,
        "area_level": area_level,
        "parent_id": parent_id,
        **extra,
    }
    r = await c.post("/api/v1/registry/orgs", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


@dataclass
class Tree:
    """city → street → two communities (A with a building group, B)."""

    city: dict[str, Any]
    street: dict[str, Any]
    community_a: dict[str, Any]
    community_b: dict[str, Any]
    building_a1: dict[str, Any]


async def build_tree(admin: httpx.AsyncClient) -> Tree:
    city = await make_org(admin, kind="committee", area_level="city", name="嘉兴市")
    street = await make_org(
        admin, parent_id=city["id"], kind="working_committee", area_level="street", name="当湖街道"
    )
    a = await make_org(admin, parent_id=street["id"], name="如意社区")
    b = await make_org(admin, parent_id=street["id"], name="凤凰社区")
    a1 = await make_org(
        admin, parent_id=a["id"], kind="group", area_level="building", name="1号楼党小组"
    )
    return Tree(city, street, a, b, a1)


# A valid GB 11643 number: region 330402, born 1970-01-01.
def id_number(birth: date = date(1970, 1, 1), serial: int = 123, region: str = "330402") -> str:
    body = f"{region}{birth:%Y%m%d}{serial:03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]
    return body + check


_serials = itertools.count(1)


def next_id_number(birth: date = date(1970, 1, 1), gender: str = "male") -> str:
    """A valid number, new for each of 500 calls (the serial's parity carries the gender)."""
    serial = (2 * next(_serials)) % 1000 + (1 if gender == "male" else 0)
    return id_number(birth, serial=serial)


async def make_member(
    c: httpx.AsyncClient,
    *,
    org_id: str | None = None,
    expect: int = 201,
    **overrides: Any,
) -> dict[str, Any]:
    """A member through `POST /members`: enrolled in `org_id` (category `retired`) unless
    the overrides say otherwise, e.g. `residence_org_id=…, category="in_service_resident"`."""
    body: dict[str, Any] = {
        "name": f"党员{next(_codes)}",
        "gender": "male",
        "birth_date": "1970-01-01",
        "category": "retired" if org_id is not None else "in_service_resident",
        "org_id": org_id,
        **overrides,
    }
    r = await c.post("/api/v1/registry/members", json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())
