"""Errors as RFC 9457 problem+json. Services raise `AppError` subclasses; one set of
handlers renders those, request validation, HTTP errors and anything unexpected."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.context import request_id_var

log = logging.getLogger("lianxin.errors")

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=["urn:lianxin:problem:not-found"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request id, as a URN.")
    errors: list[FieldError] | None = None


def problem_type(slug: str) -> str:
    return f"urn:lianxin:problem:{slug}"


class AppError(Exception):
    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers or {}
        self.extra = extra or {}


class BadRequest(AppError):
    status, title, slug = 400, "Bad request", "bad-request"


class Unauthorized(AppError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="lianxin"'})
        super().__init__(detail, **kw)


class Forbidden(AppError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(AppError):
    status, title, slug = 409, "Conflict", "conflict"


class PreconditionFailed(AppError):
    status, title, slug = 412, "Precondition failed", "precondition-failed"


class PayloadTooLarge(AppError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnsupportedMediaType(AppError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class Unprocessable(AppError):
    status, title, slug = 422, "Validation failed", "validation"


class PreconditionRequired(AppError):
    status, title, slug = 428, "Precondition required", "precondition-required"


class TooManyRequests(AppError):
    status, title, slug = 429, "Too many requests", "rate-limited"


class ServiceUnavailable(AppError):
    status, title, slug = 503, "Service unavailable", "unavailable"


class GatewayTimeout(AppError):
    status, title, slug = 504, "Gateway timeout", "upstream-timeout"


_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation", "Validation failed"),
    429: ("rate-limited", "Too many requests"),
}


def problem_response(
    status: int,
    title: str,
    *,
    slug: str,
    detail: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    rid = request_id_var.get()
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": f"urn:lianxin:request:{rid}" if rid else None,
    }
    if errors is not None:
        body["errors"] = [e.model_dump() for e in errors]
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _loc_to_field(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_errors(raw: Sequence[Any]) -> list[FieldError]:
    out = []
    for err in raw:
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        out.append(FieldError(field=_loc_to_field(err.get("loc", ())), message=msg))
    return out


def app_error_response(exc: AppError) -> JSONResponse:
    """The problem an `AppError` is answered with."""
    return problem_response(
        exc.status,
        exc.title,
        slug=exc.slug,
        detail=exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return app_error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(
        422,
        "Validation failed",
        slug="validation",
        detail="The request does not match the schema.",
        errors=validation_errors(exc.errors()),
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # FastAPI could not read the body (bytes that are not UTF-8): the same payload
        # error as malformed JSON, which FastAPI already reports as a validation error.
        return problem_response(
            422,
            "Validation failed",
            slug="validation",
            detail="The request body is not valid JSON in UTF-8.",
            errors=[FieldError(field="body", message="not valid JSON in UTF-8")],
        )
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("error", "Error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    return problem_response(
        exc.status_code,
        title,
        slug=slug,
        detail=detail,
        headers=dict(exc.headers or {}),
    )


UNEXPECTED_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Runs outside the request-context middleware: restore the request id from the scope.
    token = request_id_var.set(request.scope.get("state", {}).get("request_id"))
    try:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500,
            "Internal error",
            slug="internal",
            detail="An unexpected error occurred; it has been logged.",
            # Sent by the outermost middleware, past every other: the hardening headers
            # the gateway's edge adds to everything else are set here.
            headers=dict(UNEXPECTED_HEADERS),
        )
    finally:
        request_id_var.reset(token)


# SQLSTATEs that are the client's input or a passing condition, not a bug: (status, title,
# slug, detail). The transaction is rolled back, so nothing was written.
_SQLSTATE_PROBLEMS: dict[str, tuple[int, str, str, str]] = {
    "22021": (
        422,
        "Validation failed",
        "validation",
        "Text may not contain NUL characters or invalid UTF-8.",
    ),
    "22P05": (422, "Validation failed", "validation", "Text holds an unstorable character."),
    "22001": (422, "Validation failed", "validation", "A value is longer than allowed."),
    "22003": (422, "Validation failed", "validation", "A number is out of range."),
    "22007": (422, "Validation failed", "validation", "A date or time is not valid."),
    "22008": (422, "Validation failed", "validation", "A date or time is out of range."),
    "40001": (
        409,
        "Conflict",
        "concurrent-update",
        "A concurrent change interfered; retry the request.",
    ),
    "40P01": (
        409,
        "Conflict",
        "concurrent-update",
        "A concurrent change interfered; retry the request.",
    ),
    "55P03": (409, "Conflict", "concurrent-update", "The record is locked; retry the request."),
    "57014": (
        503,
        "Service unavailable",
        "timeout",
        "The database took too long to answer; retry later.",
    ),
    "53300": (503, "Service unavailable", "unavailable", "The database is busy; retry later."),
    "57P01": (503, "Service unavailable", "unavailable", "The database is restarting."),
    "57P02": (503, "Service unavailable", "unavailable", "The database is restarting."),
    "57P03": (503, "Service unavailable", "unavailable", "The database is starting up."),
}


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    code = _sqlstate(exc)
    known = _SQLSTATE_PROBLEMS.get(code or "")
    if known is None and code is not None and code.startswith("08"):
        known = (503, "Service unavailable", "unavailable", "The database is unreachable.")
    if known is None and isinstance(getattr(exc, "orig", None), OSError | ConnectionError):
        known = _UNREACHABLE
    if known is None and getattr(exc, "connection_invalidated", False):
        known = _UNREACHABLE  # the connection died under the statement
    if known is None:
        return await _unexpected(request, exc)
    status, title, slug, detail = known
    if status >= 500:
        log.warning("database unavailable (sqlstate %s) on %s", code, request.url.path)
    headers = {"Retry-After": "1"} if status in (409, 503) else None
    return problem_response(status, title, slug=slug, detail=detail, headers=headers)


_UNREACHABLE = (503, "Service unavailable", "unavailable", "The database is unreachable.")


def _unreachable(exc: BaseException) -> bool:
    """A failure to reach (or stay connected to) a server: refused, reset, timed out, a
    name that does not resolve; asyncpg's "Multiple exceptions: ... Connect call failed"
    when every address of a host refused."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    return isinstance(exc, OSError) and "Connect call failed" in str(exc)


async def _connection_error(request: Request, exc: Exception) -> JSONResponse:
    """Opening a database connection fails with the socket's own error (SQLAlchemy wraps
    only the driver's errors): while the server is down or restarting that is a 503 the
    client may retry, not a 500."""
    if not _unreachable(exc):
        return await _unexpected(request, exc)
    log.warning("unreachable (%s) on %s", type(exc).__name__, request.url.path)
    return problem_response(
        503,
        "Service unavailable",
        slug="unavailable",
        detail="A server this service depends on is unreachable; retry later.",
        headers={"Retry-After": "1"},
    )


def install_error_handlers(app: FastAPI) -> None:
    from asyncpg import PostgresError
    from sqlalchemy.exc import DBAPIError

    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PostgresError, _database_error)
    app.add_exception_handler(OSError, _connection_error)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem+json errors."""
    return {
        s: {
            "model": Problem,
            "content": {PROBLEM_JSON: {}},
            "description": _STATUS_SLUGS.get(s, ("", "Error"))[1] or "Error",
        }
        for s in statuses
    }


_PROBLEM_REF = "#/components/schemas/Problem"
_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        out = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            out |= _refs(value)
        return out
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def problem_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """Documents every error response as what it is on the wire: `application/problem+json`
    with the `Problem` schema. FastAPI files a `responses=` model under the route's own
    media type (`application/json`) and adds its own 422 (`HTTPValidationError`) that the
    handlers above never send; both are corrected here, in place."""
    for item in (doc.get("paths") or {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in (operation.get("responses") or {}).items():
                if str(status).startswith(("1", "2", "3")) or not isinstance(response, dict):
                    continue
                content = response.get("content") or {}
                schema = (content.get(PROBLEM_JSON) or {}).get("schema") or (
                    content.get("application/json") or {}
                ).get("schema")
                if not schema or schema.get("$ref") == _FASTAPI_VALIDATION:
                    schema = {"$ref": _PROBLEM_REF}
                response["content"] = {PROBLEM_JSON: {"schema": schema}}
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    if _PROBLEM_REF in _refs(doc.get("paths")) and "Problem" not in schemas:
        _, defs = models_json_schema(
            [(Problem, "serialization")], ref_template="#/components/schemas/{model}"
        )
        for name, schema in defs.get("$defs", {}).items():
            schemas.setdefault(name, schema)
    # FastAPI's validation-error schemas, now referenced by nothing.
    for unused in ("HTTPValidationError", "ValidationError"):
        others = {k: v for k, v in doc.items() if k != "components"}
        others["schemas"] = {k: v for k, v in schemas.items() if k != unused}
        if unused in schemas and f"#/components/schemas/{unused}" not in _refs(others):
            del schemas[unused]
    return doc
