"""A real running system for the guides (and, with `replicas`, for the replicas test):
registry, mobility, activities and the gateway as uvicorn child processes
(`tools.servers.UvicornProcess`) on free loopback ports, on a fresh database of the test
server (created, migrated and dropped here: the guides commit data, which the rolled-back
tests must never see). Each app connects as its own database role (tools/db_roles.py), as
in production; `database_url` is the owner's. Every process is ended by its pid."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.pgutil import drop_database, fresh_database
from tools import migrate
from tools.db_roles import role_url
from tools.servers import UvicornProcess

ADMIN_USER = "admin"
ADMIN_PASSWORD = "Guide-admin-2026"
SERVICES = ("registry", "mobility", "activities")


def _pair() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@dataclass
class System:
    gateway_url: str
    database_url: str
    processes: dict[str, UvicornProcess]
    # Every gateway replica (`gateway_url` is the first); replica i of each service answers
    # gateway i.
    gateway_urls: list[str] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"--- {n}:\n{p.log_tail(2000)}" for n, p in self.processes.items())


def _name(app: str, replica: int) -> str:
    return app if replica == 0 else f"{app}-{replica + 1}"


@contextlib.contextmanager
def running_system(
    server_url: str,
    *,
    replicas: int = 1,
    service_env: Mapping[str, str] | None = None,
    gateway_env: Mapping[str, str] | None = None,
    prepare: Callable[[str], None] | None = None,
) -> Iterator[System]:
    """`replicas` processes of each service and of the gateway on one database; gateway
    replica i routes to replica i of each service (and mobility i calls registry i), so
    driving every gateway exercises every process. `service_env` and `gateway_env` add to
    (or override) the environment of the services and of the gateways. `prepare(database_url)`
    runs on the migrated database before any app starts (the dashboard's test loads the demo
    city there)."""
    url, name = fresh_database(server_url)
    processes: dict[str, UvicornProcess] = {}
    try:
        migrate.upgrade_all(url)
        if prepare is not None:
            prepare(url)
        jwt_private, jwt_public = _pair()
        service_private, service_public = _pair()
        env = {
            "DATABASE_URL": url,
            "LIANXIN_ENVIRONMENT": "test",
            "LIANXIN_LOG_LEVEL": "WARNING",
            "LIANXIN_JWT_PUBLIC_KEY": jwt_public,
            "LIANXIN_SERVICE_PUBLIC_KEY": service_public,
            "LIANXIN_SERVICE_PRIVATE_KEY": service_private,
            # Six at most per process, as many as the fault tests hold at once.
            "LIANXIN_DB_POOL_SIZE": "6",
        }
        gateways: list[UvicornProcess] = []
        for replica in range(replicas):
            mine = {
                service: UvicornProcess(
                    f"services.{service}.app:app",
                    env={**env, "DATABASE_URL": role_url(url, service), **(service_env or {})},
                    ready_path="/readyz",
                )
                for service in SERVICES
            }
            urls = {
                f"LIANXIN_{service.upper()}_URL": f"http://127.0.0.1:{process.port}"
                for service, process in mine.items()
            }
            for service, process in mine.items():
                process.env.update(urls)
                processes[_name(service, replica)] = process
            gateway = UvicornProcess(
                "gateway.app:app",
                env={
                    **env,
                    "DATABASE_URL": role_url(url, "gateway"),
                    "LIANXIN_JWT_PRIVATE_KEY": jwt_private,
                    "LIANXIN_ADMIN_USER": ADMIN_USER,
                    "LIANXIN_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    "LIANXIN_RATE_LIMIT_ENABLED": "false",
                    "LIANXIN_ARGON2_TIME_COST": "1",
                    "LIANXIN_ARGON2_MEMORY_KIB": "1024",
                    "LIANXIN_ARGON2_PARALLELISM": "1",
                    **urls,
                    **(gateway_env or {}),
                },
                ready_path="/readyz",
            )
            gateways.append(gateway)
        for replica, gateway in enumerate(gateways):
            processes[_name("gateway", replica)] = gateway
        for process in processes.values():
            process.start(timeout_s=60)
        yield System(
            gateway_url=gateways[0].url,
            database_url=url,
            processes=processes,
            gateway_urls=[g.url for g in gateways],
        )
    finally:
        for process in reversed(list(processes.values())):
            process.close()
        drop_database(server_url, name)
