"""The mobility service's read model of the registry (tables `mobility.orgs` and
`mobility.members`), kept by the consumer `mobility.registry` from the registry's events.

    python -m services.mobility.projections rebuild

empties the read model and replays the registry's stream from its start: here and now when
no running mobility service holds the consumer, otherwise by that service's own consumer."""

from __future__ import annotations

import argparse
import asyncio
import sys

from common.db import create_engine, make_sessionmaker, plain_url
from common.events.consumer import Consumer
from common.events.projection import RegistryProjection
from common.events.runtime import rebuild
from services.mobility.models import consumer_cursors, members, orgs
from services.mobility.settings import MobilitySettings

registry_model = RegistryProjection(orgs=orgs, members=members)


def registry_consumer() -> Consumer:
    return Consumer(
        name="mobility.registry",
        sources=("registry",),
        cursors=consumer_cursors,
        apply=registry_model.apply,
    )


async def _rebuild(settings: MobilitySettings) -> int | None:
    engine = create_engine(settings.database_url, pool_size=2, application_name="mobility-rebuild")
    try:
        return await rebuild(
            make_sessionmaker(engine),
            registry_consumer(),
            reset=registry_model.reset,
            dsn=plain_url(settings.database_url),
            nats_url=settings.nats_url,
        )
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.mobility.projections")
    parser.add_argument("action", choices=["rebuild"])
    parser.parse_args(argv)
    applied = asyncio.run(_rebuild(MobilitySettings()))
    if applied is None:
        print("read model emptied; the running mobility service is replaying the stream")
    else:
        print(f"read model rebuilt from the start of the stream: {applied} events applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
