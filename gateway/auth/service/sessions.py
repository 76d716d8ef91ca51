"""Logging in, rotating refresh tokens, logging out.

Failures are facts to keep: a wrong password counts towards the lockout and a reused
refresh token revokes its family even though the request fails. So these functions write
first and raise after, and the routes turn the error into the response themselves (the
request's session still commits)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.auth import Role
from gateway.audit.events import Action, record_event
from gateway.auth.errors import (
    AccountDisabled,
    AccountLocked,
    InvalidCredentials,
    InvalidRefreshToken,
    RefreshTokenReused,
)
from gateway.auth.state import AuthState
from gateway.auth.tokens import TokenClaims
from gateway.models import RefreshToken, User


@dataclass(frozen=True)
class IssuedPair:
    access_token: str
    expires_in: int
    refresh_token: str


def claims_of(user: User) -> TokenClaims:
    return TokenClaims(
        subject=str(user.id),
        role=Role(user.role),
        username=user.username,
        org_id=user.org_id,
        member_id=user.member_id,
    )


async def _login_event(session: AsyncSession, user: User | None, outcome: str) -> None:
    await record_event(
        session,
        actor=user.username if user else "(unknown user)",
        role=user.role if user else "anonymous",
        action=Action.login,
        resource="user",
        record_id=user.id if user else None,
        subject_member_id=user.member_id if user else None,
        outcome=outcome,
    )


async def authenticate(
    session: AsyncSession, *, username: str, password: str, auth: AuthState
) -> User:
    """The user these credentials belong to. Unknown users cost the same hash check as
    known ones; `login_max_failures` wrong passwords in a row lock the account for
    `lockout_s` (a locked account is refused even with the right password)."""
    settings = auth.settings
    now = auth.now()
    user = await session.scalar(
        select(User).where(func.lower(col(User.username)) == username.strip().lower())
    )
    ok = await auth.hasher.verify(user.password_hash if user else None, password)
    if user is None:
        await _login_event(session, None, "failure")
        raise InvalidCredentials
    if user.locked_until is not None and user.locked_until > now:
        await _login_event(session, user, "locked")
        raise AccountLocked(int((user.locked_until - now).total_seconds()))
    if not ok:
        reached = col(User.failed_attempts) + 1 >= settings.login_max_failures
        locked_until = await session.scalar(
            update(User)
            .where(col(User.id) == user.id)
            .values(
                failed_attempts=case((reached, 0), else_=col(User.failed_attempts) + 1),
                locked_until=case(
                    (reached, now + timedelta(seconds=settings.lockout_s)),
                    else_=col(User.locked_until),
                ),
            )
            .returning(col(User.locked_until))
            .execution_options(synchronize_session=False)
        )
        await _login_event(session, user, "failure")
        if locked_until is not None and locked_until > now:
            await _login_event_lockout(session, user)
        raise InvalidCredentials
    if user.disabled:
        await _login_event(session, user, "disabled")
        raise AccountDisabled
    user.failed_attempts = 0
    user.locked_until = None
    user.last_login_at = now
    if auth.hasher.needs_rehash(user.password_hash):
        user.password_hash = await auth.hasher.hash(password)
    await session.flush()
    await _login_event(session, user, "success")
    return user


async def _login_event_lockout(session: AsyncSession, user: User) -> None:
    await record_event(
        session,
        actor=user.username,
        role=user.role,
        action=Action.lockout,
        resource="user",
        record_id=user.id,
        subject_member_id=user.member_id,
        outcome="locked",
    )


async def issue_pair(
    session: AsyncSession, *, user: User, auth: AuthState, family_id: uuid.UUID | None = None
) -> IssuedPair:
    """A fresh access token and a refresh token (a new family unless one is given)."""
    now = auth.now()
    settings = auth.settings
    refresh, refresh_hash = auth.issuer.new_refresh_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id or uuid.uuid4(),
            token_hash=refresh_hash,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl_s),
        )
    )
    await session.flush()
    access = auth.issuer.access_token(claims_of(user), now=now, ttl_s=settings.access_token_ttl_s)
    return IssuedPair(access, settings.access_token_ttl_s, refresh)


async def _revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == family_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


async def rotate(session: AsyncSession, *, token: str, auth: AuthState) -> IssuedPair:
    """Trade a refresh token for a new pair. Each token works once (a conditional update
    settles races); presenting a used one again revokes its whole family, so whoever holds
    a copy — the thief and the victim alike — has to log in again."""
    now = auth.now()
    token_hash = auth.issuer.refresh_hash(token)
    claimed = (
        await session.execute(
            update(RefreshToken)
            .where(
                col(RefreshToken.token_hash) == token_hash,
                col(RefreshToken.used_at).is_(None),
                col(RefreshToken.revoked_at).is_(None),
                col(RefreshToken.expires_at) > now,
            )
            .values(used_at=now)
            .returning(col(RefreshToken.user_id), col(RefreshToken.family_id))
            .execution_options(synchronize_session=False)
        )
    ).first()
    if claimed is None:
        known = (
            await session.execute(
                select(
                    col(RefreshToken.user_id),
                    col(RefreshToken.family_id),
                    col(RefreshToken.used_at),
                    col(RefreshToken.revoked_at),
                ).where(col(RefreshToken.token_hash) == token_hash)
            )
        ).first()
        if known is None:
            raise InvalidRefreshToken
        if known.used_at is not None:
            await _revoke_family(session, known.family_id, now)
            user = await session.get(User, known.user_id)
            await record_event(
                session,
                actor=user.username if user else str(known.user_id),
                role=user.role if user else "anonymous",
                action=Action.refresh_reuse,
                resource="refresh_token",
                record_id=known.family_id,
                subject_member_id=user.member_id if user else None,
                outcome="denied",
            )
            raise RefreshTokenReused
        if known.revoked_at is not None:
            raise InvalidRefreshToken("The refresh token was revoked; log in again.")
        raise InvalidRefreshToken("The refresh token has expired; log in again.")
    user = await session.get(User, claimed.user_id)
    if user is None or user.disabled:
        await _revoke_family(session, claimed.family_id, now)
        raise AccountDisabled
    return await issue_pair(session, user=user, auth=auth, family_id=claimed.family_id)


async def logout(session: AsyncSession, *, token: str, auth: AuthState) -> None:
    """Revokes the family of a refresh token; an unknown token is quietly fine."""
    now = auth.now()
    known = (
        await session.execute(
            select(col(RefreshToken.user_id), col(RefreshToken.family_id)).where(
                col(RefreshToken.token_hash) == auth.issuer.refresh_hash(token)
            )
        )
    ).first()
    if known is None:
        return
    await _revoke_family(session, known.family_id, now)
    user = await session.get(User, known.user_id)
    if user is not None:
        await record_event(
            session,
            actor=user.username,
            role=user.role,
            action=Action.logout,
            resource="refresh_token",
            record_id=known.family_id,
            subject_member_id=user.member_id,
        )
