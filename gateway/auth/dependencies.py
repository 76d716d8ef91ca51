"""What auth routes declare: the session, the caller, the roles that may manage accounts,
and the registry as the caller sees it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from common.auth import Principal, PrincipalDep, Role, require_roles
from common.db import SessionDep
from gateway.auth.registry import RegistryClient
from gateway.auth.state import AuthStateDep

# Admins always pass `require_roles`; what each may grant is decided in service/users.py.
AccountManagerDep = Annotated[
    Principal, Depends(require_roles(Role.org_admin, Role.security_admin))
]


def get_registry(request: Request) -> RegistryClient:
    return RegistryClient.for_request(request)


RegistryDep = Annotated[RegistryClient, Depends(get_registry)]

__all__ = ["AccountManagerDep", "AuthStateDep", "PrincipalDep", "RegistryDep", "SessionDep"]
