"""Sending deliveries. `Deliverer.run_once` claims the deliveries that are due (`FOR UPDATE
SKIP LOCKED`, then a lease: no transaction stays open while a receiver answers), sends
each event signed per Standard Webhooks, and records the attempt: a 2xx answer delivers,
anything else — an error status, a redirect (never followed), a timeout, a refused
address — schedules the next attempt after the configured delay, and after the last one
the delivery is dead (a replay tries again). Every attempt is kept with its outcome.

Tests drive `run_once` with their own clock, HTTP transport and resolver; the app runs
`run` in the background."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook as Signer

from common.crypto import KeyRing
from common.events.outbox import SENSITIVE_KEYS, source_outbox
from gateway.models import DeliveryStatus
from gateway.webhooks.ssrf import AddressRefused, Resolver, check_target

log = logging.getLogger("lianxin.gateway.webhooks")

SECRET_PURPOSE = "webhook_secret"  # noqa: S105 - an AEAD label, not a secret
USER_AGENT = "Lianxin-Webhooks/1.0"
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class DeliveryPolicy:
    retry_delays_s: Sequence[float]
    timeout_s: float = 5.0
    batch_size: int = 20
    allow_http: bool = False

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays_s) + 1

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery is left alone (a crashed sender's claim expires)."""
        return timedelta(seconds=2 * self.timeout_s + 30)


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    attempts: int
    url: str
    allow_private: bool
    secret: str
    body: str | None  # None: the event is no longer in its outbox
    msg_id: str


@dataclass(frozen=True)
class Outcome:
    status_code: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def scrub(value: Any) -> Any:
    """The value without any key no event may carry (a second line behind `emit`)."""
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items() if k not in SENSITIVE_KEYS}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def event_body(row: Mapping[Any, Any]) -> str:
    """What a receiver gets: the event, its aggregate and the outbox payload."""
    body = {
        "id": str(row["event_id"]),
        "type": row["type"],
        "occurred_at": row["occurred_at"].isoformat(),
        "aggregate": {
            "type": row["aggregate_type"],
            "id": str(row["aggregate_id"]),
            "version": row["aggregate_version"],
        },
        "data": scrub(row["payload"]),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


_CLAIM = text(
    """SELECT d.id, d.event_id, d.source, d.attempts, w.url, w.allow_private,
        w.secret_encrypted
    FROM gateway.webhook_deliveries AS d JOIN gateway.webhooks AS w ON w.id = d.webhook_id
    WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= :now AND w.active
    ORDER BY d.next_attempt_at, d.id
    LIMIT :n
    FOR UPDATE OF d SKIP LOCKED"""
)

_RECORD = text(
    """UPDATE gateway.webhook_deliveries
    SET attempts = attempts + 1, status = :status, next_attempt_at = :next,
        last_status_code = :code, last_error = :error,
        delivered_at = COALESCE(:delivered_at, delivered_at)
    WHERE id = :id AND attempts = :attempts AND status IN ('pending', 'failed')
    RETURNING shard_key"""
)

_ATTEMPT = text(
    """INSERT INTO gateway.webhook_attempts
        (id, shard_key, delivery_id, attempt, attempted_at, status_code, error, duration_ms)
    VALUES (gen_random_uuid(), :shard_key, :id, :attempt, :now, :code, :error, :ms)"""
)


class Deliverer:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        keyring: KeyRing,
        policy: DeliveryPolicy,
        client: httpx.AsyncClient,
        resolver: Resolver,
        clock: Clock,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.keyring = keyring
        self.policy = policy
        self.client = client
        self.resolver = resolver
        self.clock = clock

    async def run_once(self) -> int:
        """Attempts every due delivery (up to a batch); returns how many it attempted."""
        claimed = await self._claim()
        await asyncio.gather(*(self._attempt(c) for c in claimed))
        return len(claimed)

    async def run(self, *, poll_interval_s: float) -> None:
        """Until cancelled: deliver what is due, look again after `poll_interval_s`."""
        backoff = 0.5
        while True:
            try:
                done = await self.run_once()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook deliverer failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if done < self.policy.batch_size:
                await asyncio.sleep(poll_interval_s)

    async def _claim(self) -> list[Claimed]:
        now = self.clock()
        async with self.sessionmaker() as session, session.begin():
            rows = (
                (await session.execute(_CLAIM, {"now": now, "n": self.policy.batch_size}))
                .mappings()
                .all()
            )
            if not rows:
                return []
            await session.execute(
                text(
                    "UPDATE gateway.webhook_deliveries SET next_attempt_at = :until "
                    "WHERE id = ANY(:ids)"
                ),
                {"until": now + self.policy.lease, "ids": [r["id"] for r in rows]},
            )
            claimed = []
            for r in rows:
                outbox = source_outbox(r["source"])
                event = (
                    (
                        await session.execute(
                            select(outbox).where(outbox.c.event_id == r["event_id"])
                        )
                    )
                    .mappings()
                    .first()
                )
                claimed.append(
                    Claimed(
                        id=r["id"],
                        attempts=r["attempts"],
                        url=r["url"],
                        allow_private=r["allow_private"],
                        secret=self.keyring.decrypt(r["secret_encrypted"], purpose=SECRET_PURPOSE),
                        body=None if event is None else event_body(event),
                        msg_id=f"msg_{r['event_id'].hex}",
                    )
                )
            return claimed

    async def _attempt(self, claimed: Claimed) -> None:
        started = time.monotonic()
        now = self.clock()
        if claimed.body is None:
            outcome = Outcome(error="the event is no longer available")
        else:
            outcome = await self._send(claimed, claimed.body, now)
        ms = int((time.monotonic() - started) * 1000)
        await self._record(claimed, outcome, now=now, ms=ms, final=claimed.body is None)

    async def _send(self, claimed: Claimed, body: str, now: datetime) -> Outcome:
        try:
            target = await check_target(
                claimed.url,
                allow_http=self.policy.allow_http,
                allow_private=claimed.allow_private,
                resolver=self.resolver,
            )
        except AddressRefused as exc:
            return Outcome(error=f"refused: {exc}")
        signature = Signer(claimed.secret).sign(claimed.msg_id, now, body)
        headers = {
            "host": target.url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": claimed.msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        extensions: dict[str, Any] = {}
        if target.url.scheme == "https" and not _is_literal(target.url.host):
            extensions["sni_hostname"] = target.url.host
        request = self.client.build_request(
            "POST",
            target.url.copy_with(host=target.address),  # the address that was checked
            content=body.encode(),
            headers=headers,
            extensions=extensions,
        )
        try:
            response = await self.client.send(request, stream=True, follow_redirects=False)
            await response.aclose()  # the receiver's body is never read or kept
        except httpx.TimeoutException:
            return Outcome(error="timed out")
        except httpx.HTTPError as exc:
            return Outcome(error=f"connection failed ({type(exc).__name__})")
        code = response.status_code
        if 300 <= code < 400:
            return Outcome(status_code=code, error=f"redirect not followed (HTTP {code})")
        if not 200 <= code < 300:
            return Outcome(status_code=code, error=f"HTTP {code}")
        return Outcome(status_code=code)

    async def _record(
        self, claimed: Claimed, outcome: Outcome, *, now: datetime, ms: int, final: bool
    ) -> None:
        attempt = claimed.attempts + 1
        if outcome.ok:
            status, next_at = DeliveryStatus.delivered, now
        elif final or attempt >= self.policy.max_attempts:
            status, next_at = DeliveryStatus.dead, now
        else:
            delay = self.policy.retry_delays_s[attempt - 1]
            status, next_at = DeliveryStatus.failed, now + timedelta(seconds=delay)
        params = {"id": claimed.id, "code": outcome.status_code, "error": outcome.error}
        async with self.sessionmaker() as session, session.begin():
            # The delivery's key when this attempt was still its next one (None otherwise).
            shard_key = await session.scalar(
                _RECORD,
                {
                    **params,
                    "status": status.value,
                    "next": next_at,
                    "delivered_at": now if outcome.ok else None,
                    "attempts": claimed.attempts,
                },
            )
            if shard_key is not None:
                await session.execute(
                    _ATTEMPT,
                    {**params, "shard_key": shard_key, "attempt": attempt, "now": now, "ms": ms},
                )
        log.info(
            "webhook delivery %s attempt %d: %s", claimed.id, attempt, outcome.error or "delivered"
        )


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
