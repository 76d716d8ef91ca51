from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import AliasChoices, Field

from common.settings import BaseAppSettings, is_ed25519_private, read_pem

DEV_ADMIN_PASSWORD = "lianxin-admin"  # noqa: S105 - the documented local-run default
DEV_SECURITY_ADMIN_PASSWORD = "lianxin-security"  # noqa: S105 - likewise
MIN_ADMIN_PASSWORD_LENGTH = 12


class GatewaySettings(BaseAppSettings):
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = (
        *BaseAppSettings.SECRET_FIELDS,
        "jwt_private_key",
        "admin_password",
        "security_admin_password",
        "redis_url",
    )
    port: int = 8000
    registry_url: str = "http://127.0.0.1:8001"
    mobility_url: str = "http://127.0.0.1:8002"
    activities_url: str = "http://127.0.0.1:8003"
    # Routing (gateway/proxy.py): connect fast, read as long as the slowest endpoint needs.
    upstream_connect_timeout_s: float = 1.0
    upstream_timeout_s: float = 10.0  # read timeout, unless `upstream_read_timeouts` says
    upstream_read_timeouts: dict[str, float] = Field(default_factory=dict)  # per service
    upstream_retries: int = 2  # on connect errors, idempotent methods only
    upstream_max_connections: int = 200
    # "lean" (gateway/upstream_http.py for reads without a body, aiohttp for the rest),
    # "aiohttp" or "httpx" (httpx's own); see bench/gateway_overhead.py
    upstream_transport: Literal["lean", "aiohttp", "httpx"] = "lean"
    breaker_threshold: int = 5  # consecutive connection failures that open a circuit
    breaker_reset_s: float = 5.0  # cool-down before a half-open probe
    openapi_cache_ttl_s: float = 30.0
    public_url: str | None = None  # `servers` of the merged OpenAPI document
    # Browser access: allowed CORS origins (none by default) and HSTS (off unless set).
    cors_origins: list[str] = Field(default_factory=list)
    hsts_max_age_s: int = 0
    # Rate limits per caller (token bucket); shared through Redis when REDIS_URL is set.
    rate_limit_enabled: bool = True
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 60
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "LIANXIN_REDIS_URL")
    )

    # --- auth (gateway/auth) ---
    # PEM text of the token-signing private key (Ed25519), or a file holding it.
    jwt_private_key: str | None = None
    jwt_private_key_file: Path | None = Path(".data/keys/jwt_private.pem")
    access_token_ttl_s: int = 600
    refresh_token_ttl_s: int = 14 * 24 * 3600
    # Lifetime of the access token an API key is exchanged for, per request.
    api_key_token_ttl_s: int = 120
    login_max_failures: int = 5
    lockout_s: int = 15 * 60
    # argon2id cost (RFC 9106 "second recommended" defaults); tests lower them.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65_536
    argon2_parallelism: int = 4
    # The first admin, created at startup when no admin exists.
    admin_user: str | None = None
    admin_password: str | None = None
    # The first security admin (accounts, roles, API keys), likewise, when none exists.
    security_admin_user: str | None = None
    security_admin_password: str | None = None
    # --- audit (gateway/audit) ---
    # How long the merged audit log waits for each service's trail.
    audit_source_timeout_s: float = 5.0
    # --- webhooks (gateway/webhooks) ---
    # Waits before each retry of a failed delivery; dead after the last one fails too.
    webhook_retry_delays_s: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0, 6 * 3600.0]
    )
    webhook_timeout_s: float = 5.0  # per attempt (connect, send, answer)
    webhook_batch_size: int = 20  # deliveries attempted at once
    webhook_poll_interval_s: float = 1.0  # how often the deliverer looks for due work
    # Events a replay may re-send at once (a wider window is refused).
    webhook_replay_max_events: int = 10_000

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        for who, variable, password, default in (
            ("admin", "LIANXIN_ADMIN_PASSWORD", self.admin_password, DEV_ADMIN_PASSWORD),
            (
                "security admin",
                "LIANXIN_SECURITY_ADMIN_PASSWORD",
                self.security_admin_password,
                DEV_SECURITY_ADMIN_PASSWORD,
            ),
        ):
            if password is None:
                continue
            if password == default:
                problems.append(f"the default {who} password: set {variable}")
            elif len(password) < MIN_ADMIN_PASSWORD_LENGTH:
                problems.append(f"{variable}: at least {MIN_ADMIN_PASSWORD_LENGTH} characters")
        private = read_pem(self.jwt_private_key, self.jwt_private_key_file)
        if private is None:
            problems.append("a missing token signing key: set LIANXIN_JWT_PRIVATE_KEY(_FILE)")
        elif not is_ed25519_private(private):
            problems.append("LIANXIN_JWT_PRIVATE_KEY: must be an Ed25519 private key (PEM)")
        return problems

    def private_key(self) -> Ed25519PrivateKey:
        if self.jwt_private_key:
            pem = self.jwt_private_key.encode()
        elif self.jwt_private_key_file and self.jwt_private_key_file.exists():
            pem = self.jwt_private_key_file.read_bytes()
        else:
            raise RuntimeError(
                "no token signing key: set LIANXIN_JWT_PRIVATE_KEY or LIANXIN_JWT_PRIVATE_KEY_FILE"
            )
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise RuntimeError("the token signing key must be an Ed25519 private key")
        return key

    def upstreams(self) -> dict[str, str]:
        return {
            "registry": self.registry_url,
            "mobility": self.mobility_url,
            "activities": self.activities_url,
        }
