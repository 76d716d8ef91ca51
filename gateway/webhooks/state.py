"""What webhooks need from the app, built in its lifespan: the key ring sealing secrets,
the resolver the address guard asks, the clock, the HTTP client deliveries go out on, the
deliverer, and — unless `LIANXIN_CONSUMERS_ENABLED=false` — the fan-out consumer and the
deliverer running as background tasks. Lives on `app.state.webhooks`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.crypto import KeyRing
from common.db import plain_url
from common.events.consumer import run_outbox_consumer
from common.settings import Environment
from gateway.settings import GatewaySettings
from gateway.webhooks.deliverer import Deliverer, DeliveryPolicy
from gateway.webhooks.fanout import existing_sources, webhook_consumer
from gateway.webhooks.ssrf import Resolver, system_resolver

log = logging.getLogger("lianxin.gateway.webhooks")
Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class WebhookState:
    settings: GatewaySettings
    keyring: KeyRing
    resolver: Resolver
    clock: Clock
    deliverer: Deliverer
    client: httpx.AsyncClient
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def allow_http(self) -> bool:
        return self.settings.environment is not Environment.production

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
        clock: Clock | None = None,
    ) -> WebhookState:
        policy = DeliveryPolicy(
            retry_delays_s=tuple(settings.webhook_retry_delays_s),
            timeout_s=settings.webhook_timeout_s,
            batch_size=settings.webhook_batch_size,
            allow_http=settings.environment is not Environment.production,
        )
        # Never proxies from the environment, never redirects.
        client = httpx.AsyncClient(
            transport=transport,
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
            trust_env=False,
        )
        keyring = KeyRing(settings.data_keys)
        resolver = resolver or system_resolver
        clock = clock or _now
        deliverer = Deliverer(
            sessionmaker,
            keyring=keyring,
            policy=policy,
            client=client,
            resolver=resolver,
            clock=clock,
        )
        return cls(settings, keyring, resolver, clock, deliverer, client)

    async def start(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """The fan-out consumer and the deliverer, as background tasks."""
        async with sessionmaker() as session:
            sources = await existing_sources(session)
        consumer = webhook_consumer(sources)
        runner = run_outbox_consumer(
            sessionmaker,
            consumer,
            dsn=plain_url(self.settings.database_url),
            poll_interval_s=self.settings.events_poll_interval_s,
        )
        self.tasks.append(asyncio.create_task(runner, name="consumer:gateway.webhooks"))
        deliver = self.deliverer.run(poll_interval_s=self.settings.webhook_poll_interval_s)
        self.tasks.append(asyncio.create_task(deliver, name="webhooks:deliverer"))
        log.info("webhooks: fan-out from %s and the deliverer started", sources)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        await self.client.aclose()


async def setup(
    app: FastAPI,
    settings: GatewaySettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
    clock: Clock | None = None,
) -> WebhookState:
    """Builds `app.state.webhooks` (in the lifespan, once the sessionmaker is there) and
    starts the background work unless consumers are off."""
    sessionmaker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    state = WebhookState.build(
        settings, sessionmaker, transport=transport, resolver=resolver, clock=clock
    )
    app.state.webhooks = state
    if settings.consumers_enabled:
        await state.start(sessionmaker)
    return state


def get_webhook_state(request: Request) -> WebhookState:
    state: WebhookState = request.app.state.webhooks
    return state


WebhookStateDep = Annotated[WebhookState, Depends(get_webhook_state)]
