"""Logging in, lockout, refresh-token rotation, logout, `/me` and the first admin."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.auth.setup import bootstrap
from gateway.models import RefreshToken, User, audit_log
from gateway.settings import GatewaySettings
from tests.gateway.conftest import ADMIN_PASSWORD, ADMIN_USER, PASSWORD, FakeClock
from tests.helpers import PUBLIC_PEM
from tests.registry.factories import Tree

TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"

Login = Callable[[str, str], Awaitable[dict[str, Any]]]
MakeUser = Callable[..., Awaitable[tuple[str, str]]]


async def _token(anon: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await anon.post(TOKEN, data={"username": username, "password": password})


async def _events(db: async_sessionmaker[AsyncSession], action: str) -> list[dict[str, Any]]:
    async with db() as s:
        rows = await s.execute(select(audit_log).where(audit_log.c.action == action))
        return [dict(r) for r in rows.mappings()]


class TestToken:
    async def test_bootstrap_admin_logs_in(self, anon: httpx.AsyncClient) -> None:
        r = await _token(anon, ADMIN_USER, ADMIN_PASSWORD)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 600
        assert body["refresh_token"].startswith("lxr_")
        claims = jwt.decode(
            body["access_token"],
            PUBLIC_PEM,
            algorithms=["EdDSA"],
            audience="lianxin",
            issuer="lianxin-gateway",
        )
        assert claims["role"] == "admin"
        assert claims["typ"] == "access"
        assert claims["username"] == ADMIN_USER
        assert claims["exp"] - claims["iat"] == 600

    async def test_username_is_case_insensitive(self, anon: httpx.AsyncClient) -> None:
        r = await _token(anon, ADMIN_USER.upper(), ADMIN_PASSWORD)
        assert r.status_code == 200

    async def test_wrong_password_is_401_problem(self, anon: httpx.AsyncClient) -> None:
        r = await _token(anon, ADMIN_USER, "wrong-password-1")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "The username or password is wrong."

    async def test_unknown_user_gets_the_same_answer(self, anon: httpx.AsyncClient) -> None:
        wrong = await _token(anon, ADMIN_USER, "wrong-password-1")
        unknown = await _token(anon, "nobody-here", "wrong-password-1")
        assert unknown.status_code == 401
        assert unknown.json()["detail"] == wrong.json()["detail"]
        assert unknown.json()["type"] == wrong.json()["type"]

    async def test_failed_login_is_audited_without_the_typed_name(
        self, anon: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
    ) -> None:
        await _token(anon, "maybe-a-password-9", "x")
        events = await _events(db, "auth.login")
        failures = [e for e in events if e["outcome"] == "failure"]
        assert failures and all("maybe-a-password" not in e["actor"] for e in failures)

    async def test_missing_password_is_422(self, anon: httpx.AsyncClient) -> None:
        r = await anon.post(TOKEN, data={"username": ADMIN_USER})
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert {e["field"] for e in r.json()["errors"]} == {"password"}

    async def test_json_body_is_422(self, anon: httpx.AsyncClient) -> None:
        r = await anon.post(TOKEN, json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
        assert r.status_code == 422


class TestLockout:
    async def test_five_failures_lock_even_the_right_password(
        self, anon: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
    ) -> None:
        for _ in range(5):
            assert (await _token(anon, ADMIN_USER, "wrong-password-1")).status_code == 401
        r = await _token(anon, ADMIN_USER, ADMIN_PASSWORD)
        assert r.status_code == 401
        assert r.json()["type"] == "urn:lianxin:problem:account-locked"
        assert 0 < int(r.headers["retry-after"]) <= 15 * 60
        assert len(await _events(db, "auth.lockout")) == 1

    async def test_unlocks_after_the_window(
        self, anon: httpx.AsyncClient, clock: FakeClock
    ) -> None:
        for _ in range(5):
            await _token(anon, ADMIN_USER, "wrong-password-1")
        clock.advance(minutes=14)
        assert (await _token(anon, ADMIN_USER, ADMIN_PASSWORD)).status_code == 401
        clock.advance(minutes=1, seconds=1)
        assert (await _token(anon, ADMIN_USER, ADMIN_PASSWORD)).status_code == 200

    async def test_a_success_resets_the_count(self, anon: httpx.AsyncClient) -> None:
        for _ in range(4):
            await _token(anon, ADMIN_USER, "wrong-password-1")
        assert (await _token(anon, ADMIN_USER, ADMIN_PASSWORD)).status_code == 200
        for _ in range(4):
            await _token(anon, ADMIN_USER, "wrong-password-1")
        assert (await _token(anon, ADMIN_USER, ADMIN_PASSWORD)).status_code == 200

    async def test_failures_persist_although_the_request_fails(
        self, anon: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
    ) -> None:
        for _ in range(3):
            await _token(anon, ADMIN_USER, "wrong-password-1")
        async with db() as s:
            attempts = await s.scalar(
                select(col(User.failed_attempts)).where(col(User.username) == ADMIN_USER)
            )
        assert attempts == 3


class TestTokenRateLimit:
    @pytest.fixture
    def gateway_settings(self, gateway_settings: GatewaySettings) -> GatewaySettings:
        return gateway_settings.model_copy(
            update={"rate_limit_enabled": True, "rate_limit_burst": 3, "rate_limit_per_s": 0.01}
        )

    async def test_guessing_across_accounts_meets_the_limiter(
        self, anon: httpx.AsyncClient
    ) -> None:
        for i in range(3):
            assert (await _token(anon, f"user-{i}", "wrong-password-1")).status_code == 401
        r = await _token(anon, "user-9", "wrong-password-1")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1


class TestRefresh:
    async def test_rotation_gives_a_working_pair(
        self, anon: httpx.AsyncClient, gw: Callable[..., httpx.AsyncClient], login: Login
    ) -> None:
        first = await login(ADMIN_USER, ADMIN_PASSWORD)
        r = await anon.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 200
        second = r.json()
        assert second["refresh_token"] != first["refresh_token"]
        me = await gw(second["access_token"]).get(ME)
        assert me.status_code == 200 and me.json()["username"] == ADMIN_USER

    async def test_reuse_revokes_the_whole_family(
        self, anon: httpx.AsyncClient, login: Login, db: async_sessionmaker[AsyncSession]
    ) -> None:
        first = await login(ADMIN_USER, ADMIN_PASSWORD)
        other_session = await login(ADMIN_USER, ADMIN_PASSWORD)
        rotated = (await anon.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
        # Someone replays the used token: the thief and the victim are both signed out.
        replay = await anon.post(REFRESH, json={"refresh_token": first["refresh_token"]})
        assert replay.status_code == 401
        assert replay.json()["type"] == "urn:lianxin:problem:refresh-token-reused"
        victim = await anon.post(REFRESH, json={"refresh_token": rotated["refresh_token"]})
        assert victim.status_code == 401
        # Another login's family is untouched.
        other = await anon.post(REFRESH, json={"refresh_token": other_session["refresh_token"]})
        assert other.status_code == 200
        assert len(await _events(db, "auth.refresh_reuse")) == 1

    async def test_unknown_token_is_401(self, anon: httpx.AsyncClient) -> None:
        r = await anon.post(REFRESH, json={"refresh_token": "lxr_not-a-real-one"})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"

    async def test_expired_token_is_401(
        self, anon: httpx.AsyncClient, login: Login, clock: FakeClock
    ) -> None:
        pair = await login(ADMIN_USER, ADMIN_PASSWORD)
        clock.advance(days=15)
        r = await anon.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
        assert r.status_code == 401
        assert "expired" in r.json()["detail"]

    async def test_unknown_field_is_422(self, anon: httpx.AsyncClient) -> None:
        r = await anon.post(REFRESH, json={"refresh_token": "x", "scope": "all"})
        assert r.status_code == 422

    async def test_tokens_are_stored_hashed(
        self, login: Login, db: async_sessionmaker[AsyncSession]
    ) -> None:
        pair = await login(ADMIN_USER, ADMIN_PASSWORD)
        async with db() as s:
            hashes = (await s.scalars(select(col(RefreshToken.token_hash)))).all()
        assert hashes
        assert all(pair["refresh_token"].encode() not in h for h in hashes)

    async def test_logout_revokes_the_family(self, anon: httpx.AsyncClient, login: Login) -> None:
        pair = await login(ADMIN_USER, ADMIN_PASSWORD)
        rotated = (await anon.post(REFRESH, json={"refresh_token": pair["refresh_token"]})).json()
        assert (
            await anon.post(LOGOUT, json={"refresh_token": rotated["refresh_token"]})
        ).status_code == 204
        r = await anon.post(REFRESH, json={"refresh_token": rotated["refresh_token"]})
        assert r.status_code == 401


class TestMe:
    async def test_shows_the_account(
        self, tree: Tree, make_user: MakeUser, login: Login, gw: Callable[..., httpx.AsyncClient]
    ) -> None:
        username, password = await make_user("org_viewer", org_id=tree.community_a["id"])
        pair = await login(username, password)
        r = await gw(pair["access_token"]).get(ME)
        assert r.status_code == 200
        assert r.json() == {
            "username": username,
            "role": "org_viewer",
            "org_id": tree.community_a["id"],
            "member_id": None,
            "scopes": [],
        }

    async def test_without_token_is_401(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get(ME)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"


class TestFirstAdmin:
    async def test_startup_is_idempotent(
        self, gateway_app: FastAPI, db: async_sessionmaker[AsyncSession]
    ) -> None:
        await bootstrap(gateway_app)
        await bootstrap(gateway_app)
        async with db() as s:
            admins = await s.scalar(select(func.count()).where(col(User.role) == "admin"))
        assert admins == 1

    async def test_password_is_stored_as_argon2id(
        self, gateway_app: FastAPI, db: async_sessionmaker[AsyncSession]
    ) -> None:
        async with db() as s:
            stored = await s.scalar(
                select(col(User.password_hash)).where(col(User.username) == ADMIN_USER)
            )
        assert stored is not None and stored.startswith("$argon2id$")
        assert ADMIN_PASSWORD not in stored

    async def test_created_user_can_log_in(self, make_user: MakeUser, login: Login) -> None:
        username, _ = await make_user("auditor")
        assert (await login(username, PASSWORD))["access_token"]
