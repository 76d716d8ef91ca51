"""Questions the gateway asks the registry on the caller's behalf, with the caller's own
token, so the registry's scope rules decide: "is this org in my subtree?", "is this member
in my scope?". A 404 (or 403) there means "not yours" here; the registry being down is a
503, never a silent yes."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
from fastapi import Request

from common.context import request_id_var
from common.errors import FieldError, ServiceUnavailable, Unprocessable
from gateway.auth.errors import MemberNotFound, OrgNotFound

log = logging.getLogger("lianxin.gateway.auth")

# Enough for a city's org tree; a larger subtree is refused rather than cut silently.
MAX_SUBTREE_PAGES = 40


class RegistryUnavailable(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__("The registry service is unavailable; try again shortly.")


class RegistryClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, *, authorization: str) -> None:
        self._http = http
        self._base = httpx.URL(base_url)
        self._authorization = authorization

    @classmethod
    def for_request(cls, request: Request) -> RegistryClient:
        """The registry as the caller of `request` sees it (their `Authorization` header)."""
        return cls(
            request.app.state.proxy.client,
            request.app.state.auth.settings.registry_url,
            authorization=request.headers.get("authorization", ""),
        )

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"authorization": self._authorization, "accept": "application/json"}
        rid = request_id_var.get()
        if rid:
            headers["x-request-id"] = rid
        try:
            response = await self._http.get(
                self._base.join(f"/api/v1/registry{path}"), params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("registry call failed: %s", type(exc).__name__)
            raise RegistryUnavailable from exc
        if response.status_code >= 500:
            raise RegistryUnavailable
        return response

    async def require_org(self, org_id: uuid.UUID) -> None:
        """Passes when the caller may read the org; `OrgNotFound` otherwise."""
        response = await self._get(f"/orgs/{org_id}")
        if response.status_code != 200:
            raise OrgNotFound

    async def require_member(self, member_id: uuid.UUID) -> None:
        response = await self._get(f"/members/{member_id}")
        if response.status_code != 200:
            raise MemberNotFound

    async def subtree_org_ids(self, org_id: uuid.UUID) -> list[uuid.UUID]:
        """`org_id` and every org under it, as far as the caller may see."""
        ids: list[uuid.UUID] = []
        cursor: str | None = None
        for _ in range(MAX_SUBTREE_PAGES):
            params: dict[str, Any] = {"org_id": str(org_id), "limit": 500}
            if cursor:
                params["cursor"] = cursor
            response = await self._get("/orgs", params)
            if response.status_code != 200:
                raise OrgNotFound
            page = response.json()
            ids.extend(uuid.UUID(item["id"]) for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return ids
        raise Unprocessable(
            "This subtree is too large to list at once: pass a smaller org_id.",
            errors=[FieldError(field="org_id", message="subtree too large")],
        )
