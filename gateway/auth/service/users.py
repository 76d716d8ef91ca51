"""People who log in: creation within the creator's scope, and the first admin."""

from __future__ import annotations

import logging

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.auth import Principal, Role
from common.errors import FieldError, Forbidden, Unprocessable
from gateway.audit.events import Action, actor_of, record_event
from gateway.auth.errors import MemberHasLogin, RoleNotGrantable, UsernameTaken
from gateway.auth.passwords import Hasher, policy_errors
from gateway.auth.registry import RegistryClient
from gateway.auth.schemas import UserCreate
from gateway.models import User, UserRole

log = logging.getLogger("lianxin.gateway.auth")

ORG_ROLES = frozenset({UserRole.org_admin, UserRole.org_viewer})
# What an org admin may hand out, always inside their own subtree; an admin, the same
# anywhere. The roles above them (admin, security_admin, auditor) only a security admin
# grants: whoever does the party work never hands out the keys to it or to its audit.
ORG_ADMIN_GRANTS = frozenset({UserRole.org_admin, UserRole.org_viewer, UserRole.member})
# A security admin grants every role but `member`: naming a member's record means reading
# member data, which is the org admins' (and admins') business.
SECURITY_ADMIN_GRANTS = frozenset(UserRole) - {UserRole.member}
UNSCOPED_ROLES = frozenset({UserRole.admin, UserRole.auditor, UserRole.security_admin})


def _shape_errors(data: UserCreate) -> list[FieldError]:
    errors = policy_errors(data.password, username=data.username)
    if data.role in ORG_ROLES and data.org_id is None:
        errors.append(FieldError(field="org_id", message=f"required for the {data.role} role"))
    if data.role in UNSCOPED_ROLES and data.org_id is not None:
        errors.append(FieldError(field="org_id", message=f"a {data.role} has no org scope"))
    if data.role is UserRole.member and data.member_id is None:
        errors.append(FieldError(field="member_id", message="required for the member role"))
    return errors


async def create_user(
    session: AsyncSession,
    *,
    data: UserCreate,
    principal: Principal,
    hasher: Hasher,
    registry: RegistryClient,
) -> User:
    """A security admin creates every role but members; an admin creates org admins, viewers
    and members anywhere, an org admin the same inside their scope (their org and member
    record as the registry shows them to the creator)."""
    if principal.role is Role.security_admin:
        if data.role not in SECURITY_ADMIN_GRANTS:
            raise RoleNotGrantable(data.role.value)
    elif principal.role in (Role.org_admin, Role.admin):
        if data.role not in ORG_ADMIN_GRANTS:
            raise RoleNotGrantable(data.role.value)
    else:
        raise Forbidden("Your role may not create accounts.")
    errors = _shape_errors(data)
    if principal.role is Role.org_admin and data.org_id is None:
        errors.append(FieldError(field="org_id", message="required: the org inside your scope"))
    if errors:
        raise Unprocessable("The account cannot be created as given.", errors=errors)
    if data.org_id is not None:
        await registry.require_org(data.org_id)
    if data.member_id is not None:
        await registry.require_member(data.member_id)
    taken = await session.scalar(
        select(col(User.id)).where(func.lower(col(User.username)) == data.username.lower())
    )
    if taken is not None:
        raise UsernameTaken
    if data.member_id is not None:
        has_login = await session.scalar(
            select(col(User.id)).where(col(User.member_id) == data.member_id)
        )
        if has_login is not None:
            raise MemberHasLogin
    user = User(
        username=data.username,
        password_hash=await hasher.hash(data.password),
        role=data.role.value,
        org_id=data.org_id,
        member_id=data.member_id,
        created_by=actor_of(principal),
    )
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError as exc:  # a concurrent creation of the same name or member
        raise UsernameTaken from exc
    await session.refresh(user)
    await record_event(
        session,
        actor=actor_of(principal),
        role=principal.role.value,
        action=Action.user_create,
        resource="user",
        record_id=user.id,
        subject_member_id=user.member_id,
    )
    return user


async def ensure_first_admin(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    hasher: Hasher,
    role: UserRole = UserRole.admin,
) -> bool:
    """Creates the first admin (or security admin, with `role`) unless one exists (safe to
    run at every start, by several gateway processes at once). True when it created one."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('gateway.first_admin'))"))
    if await session.scalar(select(col(User.id)).where(col(User.role) == role.value).limit(1)):
        return False
    if await session.scalar(
        select(col(User.id)).where(func.lower(col(User.username)) == username.lower())
    ):
        log.warning("first %s: the username %r is taken by another account", role, username)
        return False
    admin = User(
        username=username,
        password_hash=await hasher.hash(password),
        role=role.value,
        created_by="bootstrap",
    )
    session.add(admin)
    await session.flush()
    await record_event(
        session,
        actor="bootstrap",
        role="system",
        action=Action.user_create,
        resource="user",
        record_id=admin.id,
    )
    return True
