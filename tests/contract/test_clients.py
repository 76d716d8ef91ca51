"""The Python client generated from the snapshot (`make clients`) works against the API:
a short flow — log in, who am I, create an org (idempotently), page through orgs, a
problem — through the gateway with every service behind it."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.gateway.conftest import ADMIN_PASSWORD, ADMIN_USER
from tools import clients


@pytest.fixture(scope="module")
def client_pkg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out: Path = tmp_path_factory.mktemp("clients")
    clients.generate_python(out)
    sys.path.insert(0, str(out))
    try:
        yield clients.PACKAGE
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.split(".")[0] == clients.PACKAGE]:
            del sys.modules[name]


def mod(pkg: str, name: str) -> ModuleType:
    return importlib.import_module(f"{pkg}.{name}")


async def test_a_short_flow(client_pkg: str, gateway_app: FastAPI) -> None:
    root = mod(client_pkg, "client")
    models: Any = mod(client_pkg, "models")
    create_token: Any = mod(client_pkg, "api.auth.create_token")
    get_me: Any = mod(client_pkg, "api.auth.get_me")
    create_org: Any = mod(client_pkg, "api.orgs.create_org")
    list_orgs: Any = mod(client_pkg, "api.orgs.list_orgs")
    get_org: Any = mod(client_pkg, "api.orgs.get_org")
    transport = {"transport": httpx.ASGITransport(app=gateway_app)}

    anon = root.Client(base_url="http://gateway", httpx_args=transport)
    async with anon:
        pair = await create_token.asyncio(
            client=anon,
            body=models.BodyCreateToken(username=ADMIN_USER, password=ADMIN_PASSWORD),
        )
        assert isinstance(pair, models.TokenPair), pair
        wrong = await create_token.asyncio_detailed(
            client=anon, body=models.BodyCreateToken(username=ADMIN_USER, password="nope-42")
        )
        assert wrong.status_code == 401
        assert isinstance(wrong.parsed, models.Problem)

    api = root.AuthenticatedClient(
        base_url="http://gateway", token=pair.access_token, httpx_args=transport
    )
    async with api:
        me = await get_me.asyncio(client=api)
        assert me.username == ADMIN_USER
        assert me.role == "admin"

        body = models.OrgCreate(
            code="CLIENT-ROOT",
            name="客户端测试党委",
            kind=models.OrgKind.COMMITTEE,
            area_level=models.AreaLevel.CITY,
        )
        created = await create_org.asyncio(client=api, body=body, idempotency_key="client-1")
        assert isinstance(created, models.OrgPublic), created
        again = await create_org.asyncio(client=api, body=body, idempotency_key="client-1")
        assert again.id == created.id
        for n in range(3):
            child = models.OrgCreate(
                code=f"CLIENT-{n}",
                name=f"支部{n}",
                kind=models.OrgKind.BRANCH,
                area_level=models.AreaLevel.COMMUNITY,
                parent_id=created.id,
            )
            assert isinstance(await create_org.asyncio(client=api, body=child), models.OrgPublic)

        seen: list[str] = []
        cursor: Any = models_unset(client_pkg)
        while True:
            page = await list_orgs.asyncio(client=api, org_id=created.id, limit=2, cursor=cursor)
            assert isinstance(page, models.PageOrgPublic), page
            seen += [org.code for org in page.items]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        assert sorted(seen) == ["CLIENT-0", "CLIENT-1", "CLIENT-2", "CLIENT-ROOT"]

        missing = await get_org.asyncio_detailed(client=api, org_id=uuid.UUID(int=0))
        assert missing.status_code == 404
        assert missing.parsed.status == 404


def models_unset(pkg: str) -> Any:
    return mod(pkg, "types").UNSET
