"""The baselines the registry's reads are measured against in the same run: the least an
endpoint can do on this stack — FastAPI, one asyncpg pool, the same SQL a hand-written
service would send, no auth, no encryption, no scope checks.

- `GET /members/{id}`: one primary-key SELECT of `registry.members`, the row as JSON.
- `GET /orgs/{id}/members?limit=50&after=<uuid>`: a page of a subtree's live members in
  id order (the org's ltree path, `<@`, keyset on id).

    DATABASE_URL=... uvicorn bench._baseline_app:app
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from common.db import plain_url
from common.scheduling import apply_cpu_policy

MEMBER = (
    "SELECT id, name, gender, birth_date, id_number_masked, phone_masked, ethnicity, "
    "education, joined_on, membership, category, relation, status, org_id, "
    "residence_org_id, group_id, address, employer, version, created_at, updated_at "
    "FROM registry.members WHERE id = $1"
)
PAGE = (
    "SELECT m.id, m.name, m.gender, m.birth_date, m.category, m.relation, m.status, m.org_id "
    "FROM registry.members m JOIN registry.orgs o ON o.id = m.org_id "
    "WHERE o.path <@ (SELECT path FROM registry.orgs WHERE id = $1) "
    "AND m.merged_into IS NULL AND m.id > $2 ORDER BY m.id LIMIT $3"
)
ZERO = uuid.UUID(int=0)


def _json(row: Any) -> dict[str, Any]:
    return {
        k: (str(v) if v is not None and not isinstance(v, int | str) else v) for k, v in row.items()
    }


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(plain_url(os.environ["DATABASE_URL"]), min_size=4, max_size=10)
    app.state.pool = pool
    apply_cpu_policy()  # as every server of the system (common/scheduling.py): same conditions
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/members/{member_id}")
async def member(member_id: uuid.UUID, request: Request) -> JSONResponse:
    row = await request.app.state.pool.fetchrow(MEMBER, member_id)
    if row is None:
        raise HTTPException(404)
    return JSONResponse(_json(row))


@app.get("/orgs/{org_id}/members")
async def page(
    org_id: uuid.UUID, request: Request, limit: int = 50, after: uuid.UUID | None = None
) -> JSONResponse:
    rows = await request.app.state.pool.fetch(PAGE, org_id, after or ZERO, limit + 1)
    items = [_json(r) for r in rows[:limit]]
    cursor = items[-1]["id"] if len(rows) > limit else None
    return JSONResponse({"items": items, "next_cursor": cursor})
