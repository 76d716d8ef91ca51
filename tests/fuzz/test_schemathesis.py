"""schemathesis against the real running system, through the gateway, as the admin.

The whole merged OpenAPI document (`GET /api/v1/openapi.json`) is fuzzed: every operation
with schema-valid and schema-invalid input (one test per operation of the committed
contract, so a new operation is fuzzed the day it appears), then chains of calls that feed
one response's ids into the next request (the stateful phase, from the document's OpenAPI
links and schemathesis's own inference). Each response must

- not be a 5xx (`not_a_server_error`),
- have a documented status code, content type and body shape,
- if it is an error, be `application/problem+json` with `type`, `title` and `status`,
- carry the security headers and no `server` header (OWASP API8).

The bounded run is part of the normal suite: few examples per operation, derandomized, so
CI is repeatable. `make fuzz` runs the same tests long (`FUZZ_LONG=1`, random inputs):
`FUZZ_EXAMPLES` per operation — the per-operation phase stops starting new examples after
`FUZZ_SECONDS` — then `FUZZ_STATEFUL_EXAMPLES` chains of up to `FUZZ_STATEFUL_STEPS` calls.

(`schemathesis.pytest.from_fixture` cannot be used: schemathesis 4.32 reads pytest's
private `node._nodeid`, which pytest 9 no longer has; the operations' Hypothesis
strategies are driven here instead.)"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import APIOperation, CheckContext, GenerationMode, Response
from schemathesis import Case as AnyCase
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.contract.system import ADMIN_PASSWORD, ADMIN_USER, System, running_system

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "60"))
STATEFUL_STEPS = int(os.environ.get("FUZZ_STATEFUL_STEPS", "10"))
LONG = os.environ.get("FUZZ_LONG", "") == "1"
BUDGET_S = float(os.environ.get("FUZZ_SECONDS", "0"))
STARTED = time.monotonic()
PROBLEM_JSON = "application/problem+json"
Case = AnyCase[APIOperation[Any, Any, Any, Any]]
SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi" / "lianxin.json"


def problem_json(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx and 5xx is an RFC 9457 problem with at least `type`, `title`, `status`."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    if content_type != PROBLEM_JSON:
        raise AssertionError(
            f"{response.status_code} answered as {content_type!r}, not {PROBLEM_JSON}"
        )
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{response.status_code}: the problem is not JSON") from exc
    if not isinstance(body, dict):
        raise AssertionError(f"{response.status_code}: the problem is not a JSON object")
    missing = [k for k in ("type", "title", "status") if k not in body]
    if missing:
        raise AssertionError(f"{response.status_code}: the problem lacks {missing}")
    if body["status"] != response.status_code:
        raise AssertionError(f"problem status {body['status']} != {response.status_code}")
    return True


def edge_headers(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """OWASP API8 on every answer, errors included: the gateway's security headers, and no
    `server` header naming the stack."""
    if "server" in response.headers:
        raise AssertionError(f"`server: {response.headers['server'][0]}` names the stack")
    for name, value in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY")):
        if (response.headers.get(name) or [""])[0] != value:
            raise AssertionError(f"{response.status_code} without `{name}: {value}`")
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    problem_json,
    edge_headers,
]


class AdminToken:
    """The admin's access token, fetched again before it runs out (long runs)."""

    def __init__(self, gateway_url: str) -> None:
        self.gateway_url = gateway_url
        self._token: str | None = None
        self._expires = 0.0

    def get(self, case: Case, ctx: Any) -> str:
        if self._token is None or time.monotonic() > self._expires:
            r = httpx.post(
                f"{self.gateway_url}/api/v1/auth/token",
                data={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                timeout=30,
            )
            r.raise_for_status()
            body = r.json()
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + int(body["expires_in"]) / 2
        return self._token

    def set(self, case: Case, data: str, ctx: Any) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.fixture(scope="module")
def system(server_url: str) -> Iterator[System]:
    with running_system(server_url) as running:
        yield running


def load_schema(system: System) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "base-url": system.gateway_url,
            "request-timeout": 30,
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES,
                "deterministic": not LONG,
                "database": "none",
            },
        }
    )
    schema = schemathesis.openapi.from_url(
        f"{system.gateway_url}/api/v1/openapi.json", config=config
    )
    return schema


@pytest.fixture(scope="module")
def fuzz_schema(system: System) -> schemathesis.BaseSchema:
    schema = load_schema(system)
    token = AdminToken(system.gateway_url)

    @schema.auth()
    class _Auth:
        def get(self, case: Case, ctx: Any) -> str:
            return token.get(case, ctx)

        def set(self, case: Case, data: str, ctx: Any) -> None:
            token.set(case, data, ctx)

    return schema


def _settings(max_examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=max_examples,
        derandomize=not LONG,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def _snapshot_operations() -> list[str]:
    """Every operation of the committed contract, as `METHOD /path` (the test ids)."""
    doc = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    return sorted(
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete"}
    )


OPERATIONS = _snapshot_operations()


def test_the_live_document_has_every_operation(fuzz_schema: schemathesis.BaseSchema) -> None:
    """The running gateway serves the committed contract: the parametrized list below is it."""
    results = list(fuzz_schema.get_all_operations())
    errors = [r.err() for r in results if isinstance(r, Err)]
    assert not errors, errors
    assert sorted(r.ok().label for r in results if isinstance(r, Ok)) == OPERATIONS


@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation(fuzz_schema: schemathesis.BaseSchema, label: str) -> None:
    operation = fuzz_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the live document"
    strategy = operation.as_strategy(
        GenerationMode.POSITIVE, auth_storage=fuzz_schema.auth
    ) | operation.as_strategy(GenerationMode.NEGATIVE, auth_storage=fuzz_schema.auth)

    statuses: list[int] = []

    @_settings(EXAMPLES)
    @hypothesis.given(case=strategy)
    def fuzz(case: Case) -> None:
        if BUDGET_S and statuses and time.monotonic() - STARTED > BUDGET_S:
            return  # `make fuzz`: out of time; later operations still get their first example
        statuses.append(case.call_and_validate(checks=CHECKS).status_code)

    fuzz()
    # Not everything bounced off the door: the admin's token was sent and accepted.
    assert statuses and set(statuses) != {401}, statuses


def test_stateful(fuzz_schema: schemathesis.BaseSchema) -> None:
    machine = fuzz_schema.as_state_machine()
    reached: set[str] = set()  # operations with a path parameter that answered 2xx

    class Machine(machine):  # type: ignore[misc,valid-type]
        def after_call(self, response: Response, case: Case) -> None:
            super().after_call(response, case)
            if 200 <= response.status_code < 300 and "{" in case.operation.path:
                reached.add(case.operation.label)

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    Machine.run(
        settings=hypothesis.settings(
            _settings(STATEFUL_EXAMPLES), stateful_step_count=STATEFUL_STEPS
        )
    )
    # The chains work: a random id would be a 404, only a linked one reaches a record.
    assert reached, "no call with an id from an earlier response succeeded"
