"""A real running system for the guides: registry, mobility, activities and the gateway
as uvicorn child processes (`tools.servers.UvicornProcess`) on free loopback ports, on a
fresh database of the test server (created, migrated and dropped here: the guides commit
data, which the rolled-back tests must never see). Every process is ended by its pid."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.pgutil import drop_database, fresh_database
from tools import migrate
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

    def logs(self) -> str:
        return "\n".join(f"--- {n}:\n{p.log_tail(2000)}" for n, p in self.processes.items())


@contextlib.contextmanager
def running_system(server_url: str) -> Iterator[System]:
    url, name = fresh_database(server_url)
    processes: dict[str, UvicornProcess] = {}
    try:
        migrate.upgrade_all(url)
        jwt_private, jwt_public = _pair()
        service_private, service_public = _pair()
        env = {
            "DATABASE_URL": url,
            "LIANXIN_ENVIRONMENT": "test",
            "LIANXIN_LOG_LEVEL": "WARNING",
            "LIANXIN_JWT_PUBLIC_KEY": jwt_public,
            "LIANXIN_SERVICE_PUBLIC_KEY": service_public,
            "LIANXIN_SERVICE_PRIVATE_KEY": service_private,
            "LIANXIN_DB_POOL_SIZE": "3",
        }
        for service in SERVICES:
            processes[service] = UvicornProcess(
                f"services.{service}.app:app", env=env, ready_path="/readyz"
            )
        env["LIANXIN_REGISTRY_URL"] = f"http://127.0.0.1:{processes['registry'].port}"
        for service, process in processes.items():
            process.env[f"LIANXIN_{service.upper()}_URL"] = f"http://127.0.0.1:{process.port}"
            process.env["LIANXIN_REGISTRY_URL"] = env["LIANXIN_REGISTRY_URL"]
        gateway = UvicornProcess(
            "gateway.app:app",
            env={
                **env,
                "LIANXIN_JWT_PRIVATE_KEY": jwt_private,
                "LIANXIN_ADMIN_USER": ADMIN_USER,
                "LIANXIN_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "LIANXIN_RATE_LIMIT_ENABLED": "false",
                "LIANXIN_ARGON2_TIME_COST": "1",
                "LIANXIN_ARGON2_MEMORY_KIB": "1024",
                "LIANXIN_ARGON2_PARALLELISM": "1",
                **{
                    f"LIANXIN_{s.upper()}_URL": f"http://127.0.0.1:{processes[s].port}"
                    for s in SERVICES
                },
            },
            ready_path="/readyz",
        )
        processes["gateway"] = gateway
        for process in processes.values():
            process.start(timeout_s=60)
        yield System(gateway_url=gateway.url, database_url=url, processes=processes)
    finally:
        for process in reversed(list(processes.values())):
            process.close()
        drop_database(server_url, name)
