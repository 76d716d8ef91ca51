"""`ETag` on single resources and the `If-Match` precondition that `PATCH` requires."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from common.errors import PreconditionFailed, PreconditionRequired

IfMatchHeader = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=200,
        description="The `ETag` of the version being changed (required).",
    ),
]


def etag_of(version: int) -> str:
    return f'"{version}"'


def check_if_match(if_match: str | None, current_version: int) -> int:
    """The version the client means to change; 428 without `If-Match`, 412 if stale."""
    if if_match is None:
        raise PreconditionRequired("PATCH requires an If-Match header with the resource's ETag.")
    candidates = {c.strip().removeprefix("W/") for c in if_match.split(",")}
    if "*" in candidates or etag_of(current_version) in candidates:
        return current_version
    raise PreconditionFailed("The resource has changed since you read it; read it again and retry.")
