"""`/api/v1/auth`: served by the gateway itself."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm

from common.errors import AppError, problem_response, problem_responses
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from gateway.auth.dependencies import (
    AccountManagerDep,
    AuthStateDep,
    PrincipalDep,
    RegistryDep,
    SessionDep,
)
from gateway.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    Me,
    RefreshRequest,
    TokenPair,
    UserCreate,
    UserPublic,
)
from gateway.auth.service import api_keys, sessions, users
from gateway.models import idempotency_keys
from gateway.ratelimit import enforce as enforce_rate_limit

# Rate limited like proxied requests (by client address here): guessing passwords across
# many accounts meets the limiter, one account's guesses also meet the lockout.
router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[Depends(enforce_rate_limit)])


def _committed(exc: AppError) -> JSONResponse:
    """The error as a response, returned rather than raised so the request's session still
    commits what the failure recorded (a failed-login count, a revoked family, the audit)."""
    return problem_response(
        exc.status,
        exc.title,
        slug=exc.slug,
        detail=exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        extra=exc.extra,
    )


def _pair(pair: sessions.IssuedPair) -> TokenPair:
    return TokenPair(
        access_token=pair.access_token,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
    )


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post(
    "/token",
    operation_id="createToken",
    summary="Log in: username and password for an access and a refresh token",
    description="OAuth2 password form. A wrong username or password is a 401 problem (the "
    "same for both). After 5 wrong passwords in a row the account is locked for 15 minutes: "
    "a 401 problem of type `urn:lianxin:problem:account-locked` with `Retry-After`, even "
    "with the right password.",
    response_model=TokenPair,
    responses=problem_responses(401, 422, 429),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "example": {"username": "admin", "password": "lianxin-admin"}
                }
            }
        }
    },
)
async def create_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    auth: AuthStateDep,
) -> JSONResponse:
    try:
        user = await sessions.authenticate(
            session, username=form.username, password=form.password, auth=auth
        )
    except AppError as exc:
        return _committed(exc)
    pair = await sessions.issue_pair(session, user=user, auth=auth)
    return JSONResponse(_pair(pair).model_dump(), headers=_NO_STORE)


@router.post(
    "/refresh",
    operation_id="refreshToken",
    summary="Trade a refresh token (once) for a new pair",
    description="Each refresh token works once. Presenting a used one again is taken as "
    "theft: every token of that login is revoked (a 401 problem of type "
    "`urn:lianxin:problem:refresh-token-reused`) and the user logs in again.",
    response_model=TokenPair,
    responses=problem_responses(401, 422),
)
async def refresh_token(
    data: RefreshRequest, session: SessionDep, auth: AuthStateDep
) -> JSONResponse:
    try:
        pair = await sessions.rotate(session, token=data.refresh_token, auth=auth)
    except AppError as exc:
        return _committed(exc)
    return JSONResponse(_pair(pair).model_dump(), headers=_NO_STORE)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="logout",
    summary="Sign out: the refresh token and every token rotated from it stop working",
    responses=problem_responses(422),
)
async def logout(data: RefreshRequest, session: SessionDep, auth: AuthStateDep) -> Response:
    await sessions.logout(session, token=data.refresh_token, auth=auth)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/me",
    operation_id="getMe",
    summary="Who the access token speaks for",
    response_model=Me,
    responses=problem_responses(401),
)
async def get_me(principal: PrincipalDep) -> Me:
    return Me(
        username=principal.username or principal.subject,
        role=principal.role.value,
        org_id=principal.org_id,
        member_id=principal.member_id,
        scopes=sorted(principal.scopes),
    )


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    operation_id="createUser",
    summary="Create an account (security admins; admins and org admins: org roles only)",
    description="A security admin creates accounts of every role but `member`; an admin "
    "creates org admins, viewers and members anywhere, an org admin the same within their "
    "scope. Only a security admin grants `admin`, `security_admin` or `auditor`.",
    response_model=UserPublic,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def create_user(
    data: UserCreate,
    session: SessionDep,
    principal: AccountManagerDep,
    auth: AuthStateDep,
    registry: RegistryDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, object]:
        user = await users.create_user(
            session, data=data, principal=principal, hasher=auth.hasher, registry=registry
        )
        return 201, UserPublic.model_validate(user).model_dump(mode="json")

    # The fingerprint covers the password without keeping it (a keyed digest stands in).
    body_for_fingerprint = data.model_dump(mode="json")
    body_for_fingerprint["password"] = auth.issuer.secret_fingerprint(data.password)
    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=fingerprint(body_for_fingerprint),
        produce=produce,
    )
    return JSONResponse(body, status_code=code)


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    operation_id="createApiKey",
    summary="Issue an API key for an org (shown once)",
    response_model=ApiKeyCreated,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def create_api_key(
    data: ApiKeyCreate,
    session: SessionDep,
    principal: AccountManagerDep,
    auth: AuthStateDep,
    registry: RegistryDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    shown: dict[str, str] = {}

    async def produce() -> tuple[int, object]:
        row, key = await api_keys.create_api_key(
            session, data=data, principal=principal, issuer=auth.issuer, registry=registry
        )
        shown["key"] = key
        # What an Idempotency-Key replays: everything but the secret, which is never stored.
        stored = ApiKeyCreated(**ApiKeyPublic.model_validate(row).model_dump(), key=None)
        return 201, stored.model_dump(mode="json")

    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=fingerprint(data.model_dump(mode="json")),
        produce=produce,
    )
    if "key" in shown and isinstance(body, dict):
        body = {**body, "key": shown["key"]}
    return JSONResponse(body, status_code=code, headers=_NO_STORE)


@router.get(
    "/api-keys",
    operation_id="listApiKeys",
    summary="List API keys (never their secrets)",
    response_model=Page[ApiKeyPublic],
    responses=problem_responses(401, 403, 404, 503),
)
async def list_api_keys(
    session: SessionDep,
    principal: AccountManagerDep,
    registry: RegistryDep,
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    include_revoked: bool = False,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ApiKeyPublic]:
    rows, next_cursor = await api_keys.list_api_keys(
        session,
        principal=principal,
        registry=registry,
        org_id=org_id,
        include_revoked=include_revoked,
        limit=limit,
        cursor=cursor,
    )
    return Page[ApiKeyPublic](
        items=[ApiKeyPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="revokeApiKey",
    summary="Revoke an API key (it stops working at once)",
    responses=problem_responses(401, 403, 404, 503),
)
async def revoke_api_key(
    key_id: uuid.UUID,
    session: SessionDep,
    principal: AccountManagerDep,
    auth: AuthStateDep,
    registry: RegistryDep,
) -> Response:
    await api_keys.revoke_api_key(
        session, key_id=key_id, principal=principal, registry=registry, now=auth.now()
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
