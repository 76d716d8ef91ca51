"""Settings every app shares, read from the environment (prefix `LIANXIN_`, plus the
conventional `DATABASE_URL`). Each app subclasses `BaseAppSettings` with its own fields.

Secrets (`SECRET_FIELDS`) may instead be given as a file, for Docker and Kubernetes
secrets: `<VARIABLE>_FILE` names it (e.g. `LIANXIN_ADMIN_PASSWORD_FILE`,
`DATABASE_URL_FILE`), and the file's text without its final newline is the value. Setting
both a secret and its file is an error, never a silent choice."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from common.crypto import KeyRing
from common.scheduling import ProcessSettings

# Development-only secrets: fine on a laptop, refused in production mode.
DEV_DATA_KEY = "ZGV2LW9ubHktZGF0YS1rZXktMzItYnl0ZXMtbG9uZyE="  # 32 bytes, base64
DEV_LOOKUP_KEY = "ZGV2LW9ubHktbG9va3VwLWtleS1mb3ItaG1hYy1pZHM="
MIN_LOOKUP_KEY_BYTES = 32


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class BaseAppSettings(ProcessSettings):
    # Never echo the input in a validation error: it holds the secrets.
    model_config = SettingsConfigDict(
        env_prefix="LIANXIN_", extra="ignore", hide_input_in_errors=True
    )
    # Secrets that may come from a file: `<VARIABLE>_FILE`, or where the class has a
    # `<field>_file` field of its own, that field (`LIANXIN_JWT_PUBLIC_KEY_FILE`, ...).
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = (
        "database_url",
        "database_password",
        "jwt_public_key",
        "service_public_key",
        "service_private_key",
        "data_keys",
        "lookup_key",
        "nats_url",
    )
    # Exceptions to "both ways is an error": a data/lookup key file wins over the variable
    # (key rotation, docs/keys.md).
    SECRET_FILE_WINS: ClassVar[frozenset[str]] = frozenset({"data_keys", "lookup_key"})

    environment: Environment = Environment.development
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5544/postgres",
        validation_alias=AliasChoices("DATABASE_URL", "LIANXIN_DATABASE_URL"),
    )
    # The database password, when it is not in the URL (e.g. `LIANXIN_DATABASE_PASSWORD_FILE`
    # = the PostgreSQL container's password secret); it replaces the URL's.
    database_password: str | None = None
    db_pool_size: int = Field(default=20, ge=1)
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
    # Or a file of them (one entry a line or comma separated, `#` comments), read at start;
    # it wins over `data_keys` (docs/keys.md).
    data_keys_file: Path | None = None
    # Keyed hash for unique lookups of encrypted values (not rotated: it indexes data).
    lookup_key: str = DEV_LOOKUP_KEY
    lookup_key_file: Path | None = None
    # Events: consumers run inside each app unless turned off; with a NATS URL the outbox is
    # relayed to JetStream and consumers read from there, without one straight from the
    # outbox tables.
    consumers_enabled: bool = True
    nats_url: str | None = Field(
        default=None, validation_alias=AliasChoices("NATS_URL", "LIANXIN_NATS_URL")
    )
    events_poll_interval_s: float = 1.0
    # Days a relayed day of the outbox is kept (common/events/outbox_partitions.py); unset:
    # kept for ever. Only with NATS: without it read models rebuild from the outbox itself.
    outbox_retention_days: int | None = Field(default=None, ge=1)
    # Tracing (common/tracing.py): off unless an OTLP/HTTP endpoint is set.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "LIANXIN_OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 50 * 1_048_576
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """Reads `<VARIABLE>_FILE` secrets; refuses a secret given both ways."""
        if not isinstance(data, dict):
            return data
        return read_secret_files(cls, data, os.environ)

    @model_validator(mode="after")
    def _retention_needs_nats(self) -> Self:
        if self.outbox_retention_days is not None and not self.nats_url:
            raise ValueError(
                "LIANXIN_OUTBOX_RETENTION_DAYS needs NATS_URL: without NATS the outbox is the "
                "only copy of the events read models are rebuilt from"
            )
        return self

    @model_validator(mode="after")
    def _database_password(self) -> Self:
        if self.database_password:
            url = make_url(self.database_url).set(password=self.database_password)
            self.database_url = url.render_as_string(hide_password=False)
        return self

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Self:
        if self.data_keys_file is not None:
            self.data_keys = read_key_file(self.data_keys_file)
        if self.lookup_key_file is not None:
            self.lookup_key = read_key_file(self.lookup_key_file)
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


class DatabaseSettings(BaseSettings):
    """Only the database URL (with `_FILE` and the password secret applied), for what runs
    without an app's settings: the migration job."""

    model_config = SettingsConfigDict(
        env_prefix="LIANXIN_", extra="ignore", hide_input_in_errors=True
    )
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("database_url", "database_password")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "LIANXIN_DATABASE_URL")
    )
    database_password: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        return read_secret_files(cls, data, os.environ) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _database_password(self) -> Self:
        if self.database_url and self.database_password:
            url = make_url(self.database_url).set(password=self.database_password)
            self.database_url = url.render_as_string(hide_password=False)
        return self


def secret_file_variables(settings: type[BaseSettings], name: str) -> list[str]:
    """The `_FILE` variables of secret `name` that the settings read themselves (none when
    the class has a `<name>_file` field: that field is the file)."""
    fields = settings.model_fields
    if name not in fields or f"{name}_file" in fields:
        return []
    alias = fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        names = [str(c) for c in alias.choices]
    else:
        prefix = settings.model_config.get("env_prefix") or ""
        names = [f"{prefix}{name}".upper()]
    return [f"{n}_FILE" for n in names]


def read_secret_files(
    settings: type[BaseSettings], data: dict[str, Any], env: Mapping[str, str]
) -> dict[str, Any]:
    """`data` (the values the sources found) with each secret's `_FILE` read in; a secret
    given both as a value and as a file is an error (the message names no value)."""
    data = dict(data)
    lowered = {k.lower() for k, v in data.items() if v not in (None, "")}
    problems: list[str] = []
    wins: frozenset[str] = getattr(settings, "SECRET_FILE_WINS", frozenset())
    for name in getattr(settings, "SECRET_FIELDS", ()):
        field = settings.model_fields.get(name)
        if field is None:
            continue
        alias = field.validation_alias
        keys = {name, *(str(c).lower() for c in getattr(alias, "choices", ()))}
        given = bool(keys & lowered)
        if f"{name}_file" in settings.model_fields:
            if given and f"{name}_file" in lowered and name not in wins:
                problems.append(f"{name.upper()} and {name.upper()}_FILE are both set")
            continue
        files = [v for v in secret_file_variables(settings, name) if env.get(v)]
        if not files:
            continue
        if given or len(files) > 1:
            problems.append(f"{files[0]} and the value it stands for are both set")
            continue
        try:
            value = Path(env[files[0]]).read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{files[0]}: cannot read the file ({exc.strerror})")
            continue
        choices = getattr(alias, "choices", None)
        key = str(choices[0]) if choices else name  # where the env source would put it
        data[key] = value.removesuffix("\n").removesuffix("\r")
    if problems:
        raise ValueError("secrets: " + "; ".join(problems))
    return data


def read_key_file(path: Path) -> str:
    """A key file's entries, comma separated: one or more a line, `#` starts a comment."""
    entries: list[str] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0]
        entries.extend(e.strip() for e in line.split(",") if e.strip())
    return ",".join(entries)


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
