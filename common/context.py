"""Per-request context shared by logs, errors and the audit trail."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
client_addr_var: ContextVar[str | None] = ContextVar("client_addr", default=None)
