"""Settings every app shares, read from the environment (prefix `LIANXIN_`, plus the
conventional `DATABASE_URL`). Each app subclasses `BaseAppSettings` with its own fields."""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.crypto import KeyRing

# Development-only secrets: fine on a laptop, refused in production mode.
DEV_DATA_KEY = "ZGV2LW9ubHktZGF0YS1rZXktMzItYnl0ZXMtbG9uZyE="  # 32 bytes, base64
DEV_LOOKUP_KEY = "ZGV2LW9ubHktbG9va3VwLWtleS1mb3ItaG1hYy1pZHM="
MIN_LOOKUP_KEY_BYTES = 32


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class BaseAppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIANXIN_", extra="ignore")

    environment: Environment = Environment.development
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5544/postgres",
        validation_alias=AliasChoices("DATABASE_URL", "LIANXIN_DATABASE_URL"),
    )
    db_pool_size: int = 10
    db_statement_timeout_ms: int = 15_000
    # PEM text of the gateway's token-signing public key, or a file holding it.
    jwt_public_key: str | None = None
    jwt_public_key_file: Path | None = Path(".data/keys/jwt_public.pem")
    jwt_issuer: str = "lianxin-gateway"
    jwt_audience: str = "lianxin"
    # Service credentials: services call each other with tokens they sign themselves
    # (issuer `lianxin-services`, role `service`); the public key verifies them, the private
    # key (only in services that call others) signs them.
    service_public_key: str | None = None
    service_public_key_file: Path | None = Path(".data/keys/service_public.pem")
    service_private_key: str | None = None
    service_private_key_file: Path | None = Path(".data/keys/service_private.pem")
    # Field encryption: "<key id>:<base64 32-byte key>" entries, comma separated; the first
    # encrypts, all decrypt (rotation: put the new key first, keep the old ones).
    data_keys: str = f"dev1:{DEV_DATA_KEY}"
    # Keyed hash for unique lookups of encrypted values (not rotated: it indexes data).
    lookup_key: str = DEV_LOOKUP_KEY
    # Events: consumers run inside each app unless turned off; with a NATS URL the outbox is
    # relayed to JetStream and consumers read from there, without one straight from the
    # outbox tables.
    consumers_enabled: bool = True
    nats_url: str | None = Field(
        default=None, validation_alias=AliasChoices("NATS_URL", "LIANXIN_NATS_URL")
    )
    events_poll_interval_s: float = 1.0
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 50 * 1_048_576
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Self:
        if self.environment is Environment.production:
            problems = self.production_problems()
            if problems:
                raise ValueError("production mode refuses " + "; ".join(problems))
        return self

    def production_problems(self) -> list[str]:
        """What makes these settings unfit for production: development defaults, missing or
        weak keys. Subclasses add their own."""
        problems: list[str] = []
        if DEV_DATA_KEY in self.data_keys or self.lookup_key == DEV_LOOKUP_KEY:
            problems.append(
                "the development data keys: set LIANXIN_DATA_KEYS and LIANXIN_LOOKUP_KEY"
            )
        else:
            try:
                KeyRing(self.data_keys)
            except (ValueError, binascii.Error):
                problems.append("LIANXIN_DATA_KEYS: each key must be '<id>:<base64 of 32 bytes>'")
            try:
                lookup = base64.b64decode(self.lookup_key, validate=True)
            except (ValueError, binascii.Error):
                lookup = b""
            if len(lookup) < MIN_LOOKUP_KEY_BYTES:
                problems.append(
                    f"LIANXIN_LOOKUP_KEY: must be base64 of at least {MIN_LOOKUP_KEY_BYTES} bytes"
                )
        jwt_public = read_pem(self.jwt_public_key, self.jwt_public_key_file)
        if jwt_public is None:
            problems.append("a missing token verification key: set LIANXIN_JWT_PUBLIC_KEY(_FILE)")
        elif not _is_ed25519_public(jwt_public):
            problems.append("LIANXIN_JWT_PUBLIC_KEY: must be an Ed25519 public key (PEM)")
        service_public = read_pem(self.service_public_key, self.service_public_key_file)
        if service_public is not None and not _is_ed25519_public(service_public):
            problems.append("LIANXIN_SERVICE_PUBLIC_KEY: must be an Ed25519 public key (PEM)")
        service_private = read_pem(self.service_private_key, self.service_private_key_file)
        if service_private is not None and not is_ed25519_private(service_private):
            problems.append("LIANXIN_SERVICE_PRIVATE_KEY: must be an Ed25519 private key (PEM)")
        return problems

    def public_key_pem(self) -> str:
        if self.jwt_public_key:
            return self.jwt_public_key
        if self.jwt_public_key_file and self.jwt_public_key_file.exists():
            return self.jwt_public_key_file.read_text()
        raise RuntimeError(
            "no token verification key: set LIANXIN_JWT_PUBLIC_KEY or LIANXIN_JWT_PUBLIC_KEY_FILE"
        )

    def service_public_key_pem(self) -> str | None:
        """The key verifying service tokens, or None: then no service token is accepted."""
        return read_pem(self.service_public_key, self.service_public_key_file)

    def service_private_key_pem(self) -> str | None:
        return read_pem(self.service_private_key, self.service_private_key_file)


def read_pem(value: str | None, file: Path | None) -> str | None:
    if value:
        return value
    if file and file.exists():
        return file.read_text()
    return None


def _is_ed25519_public(pem: str) -> bool:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        return False
    return isinstance(key, Ed25519PublicKey)


def is_ed25519_private(pem: str) -> bool:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    return isinstance(key, Ed25519PrivateKey)
