"""Every setting is documented, and production mode refuses development defaults and
missing or weak keys."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.settings import BaseAppSettings, Environment
from gateway.settings import GatewaySettings
from services.activities.settings import ActivitiesSettings
from services.mobility.settings import MobilitySettings
from services.registry.settings import RegistrySettings
from tests.helpers import PRIVATE_PEM, PUBLIC_PEM, SERVICE_PUBLIC_PEM
from tools import config_doc

ROOT = Path(__file__).resolve().parents[2]

# A valid production configuration (each test breaks one part of it).
PRODUCTION: dict[str, object] = {
    "environment": "production",
    "data_keys": "k1:" + base64.b64encode(os.urandom(32)).decode(),
    "lookup_key": base64.b64encode(os.urandom(32)).decode(),
    "jwt_public_key": PUBLIC_PEM,
    "service_public_key": SERVICE_PUBLIC_PEM,
    "service_private_key_file": None,
}
GATEWAY_PRODUCTION: dict[str, object] = {
    **PRODUCTION,
    "jwt_private_key": PRIVATE_PEM,
    "admin_user": "admin",
    "admin_password": "a long and unguessable one",
}

_EC = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC_PEM = (
    _EC.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
EC_PRIVATE_PEM = _EC.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


class TestDocumentedSettings:
    def test_the_table_is_fresh(self) -> None:
        doc = config_doc.DOC.read_text(encoding="utf-8")
        assert config_doc.render(doc) == doc, "run: python -m tools.config_doc"

    def test_every_field_of_every_app_is_listed(self) -> None:
        doc = config_doc.DOC.read_text(encoding="utf-8")
        rows = [line for line in doc.splitlines() if line.startswith("| `")]
        for app, settings in config_doc.APPS.items():
            for name in settings.model_fields:
                variable = (
                    f"`{config_doc.env_names(settings, name, settings.model_fields[name])[0]}`"
                )
                listed = [r for r in rows if r.startswith(f"| {variable}")]
                assert listed, f"{app}: {name} is not in docs/configuration.md"
                assert any(app in r.split("|")[2] or "all" in r.split("|")[2] for r in listed)

    def test_every_setting_has_a_meaning(self) -> None:
        for settings in config_doc.APPS.values():
            for name, field in settings.model_fields.items():
                assert field.description or config_doc.MEANINGS.get(name), name

    def test_the_readme_points_at_the_table(self) -> None:
        assert "docs/configuration.md" in (ROOT / "README.md").read_text(encoding="utf-8")


class TestProductionRefusals:
    @pytest.mark.parametrize(
        "cls", [BaseAppSettings, RegistrySettings, MobilitySettings, ActivitiesSettings]
    )
    def test_a_proper_configuration_starts(self, cls: type[BaseAppSettings]) -> None:
        assert cls(**PRODUCTION).environment is Environment.production  # type: ignore[arg-type]

    def test_a_proper_gateway_configuration_starts(self) -> None:
        settings = GatewaySettings(**GATEWAY_PRODUCTION)  # type: ignore[arg-type]
        assert settings.environment is Environment.production

    def test_development_is_lenient(self) -> None:
        GatewaySettings(
            environment="development",
            admin_password="lianxin-admin",
            jwt_public_key_file=None,
            jwt_private_key_file=None,
        )

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"data_keys": None}, "development data keys"),
            ({"lookup_key": None}, "development data keys"),
            ({"data_keys": "k1:c2hvcnQ="}, "LIANXIN_DATA_KEYS"),
            ({"lookup_key": base64.b64encode(b"sixteen bytes!!!").decode()}, "LOOKUP_KEY"),
            ({"lookup_key": "not base64 at all"}, "LOOKUP_KEY"),
            ({"jwt_public_key": None, "jwt_public_key_file": None}, "missing token verif"),
            ({"jwt_public_key": "-----BEGIN PUBLIC KEY-----\nnope\n"}, "JWT_PUBLIC_KEY"),
            ({"jwt_public_key": EC_PUBLIC_PEM}, "Ed25519 public"),
            ({"service_public_key": EC_PUBLIC_PEM}, "SERVICE_PUBLIC_KEY"),
            ({"service_private_key": EC_PRIVATE_PEM}, "SERVICE_PRIVATE_KEY"),
        ],
    )
    def test_every_service_refuses(self, change: dict[str, object], message: str) -> None:
        values = {k: v for k, v in {**PRODUCTION, **change}.items() if v is not None}
        if "jwt_public_key_file" in change:  # unset the default file path too
            values["jwt_public_key_file"] = None
        for cls in (RegistrySettings, MobilitySettings, ActivitiesSettings, GatewaySettings):
            extra = {k: v for k, v in GATEWAY_PRODUCTION.items() if k not in PRODUCTION}
            args = {**values, **extra} if cls is GatewaySettings else values
            with pytest.raises(ValueError, match=message):
                cls(**args)  # type: ignore[arg-type]

    def test_a_key_file_counts(self, tmp_path: Path) -> None:
        key = tmp_path / "jwt_public.pem"
        key.write_text(PUBLIC_PEM)
        values = {**PRODUCTION, "jwt_public_key_file": key}
        del values["jwt_public_key"]
        RegistrySettings(**values)  # type: ignore[arg-type]
        key.write_text(EC_PUBLIC_PEM)
        with pytest.raises(ValueError, match="Ed25519"):
            RegistrySettings(**values)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"admin_password": "lianxin-admin"}, "default admin password"),
            ({"admin_password": "short"}, "at least 12"),
            ({"jwt_private_key": None, "jwt_private_key_file": None}, "missing token signing"),
            ({"jwt_private_key": EC_PRIVATE_PEM}, "JWT_PRIVATE_KEY"),
            ({"jwt_private_key": SERVICE_PUBLIC_PEM}, "JWT_PRIVATE_KEY"),
        ],
    )
    def test_the_gateway_refuses(self, change: dict[str, object], message: str) -> None:
        values = {**GATEWAY_PRODUCTION, **change}
        with pytest.raises(ValueError, match=message):
            GatewaySettings(**values)  # type: ignore[arg-type]

    def test_no_admin_password_is_fine_once_the_admin_exists(self) -> None:
        values = {**GATEWAY_PRODUCTION, "admin_user": None, "admin_password": None}
        GatewaySettings(**values)  # type: ignore[arg-type]

    def test_every_problem_is_named_at_once(self) -> None:
        with pytest.raises(ValueError) as info:
            GatewaySettings(
                environment="production",
                admin_password="lianxin-admin",
                jwt_public_key_file=None,
                jwt_private_key_file=None,
            )
        text = str(info.value)
        for part in ("development data keys", "verification key", "signing key", "admin"):
            assert part in text


class TestOutboxRetention:
    def test_retention_needs_nats(self) -> None:
        """Dropping relayed days is safe only when NATS holds the events (read models are
        rebuilt from the outbox otherwise): refused in any environment."""
        with pytest.raises(ValueError, match="NATS_URL"):
            RegistrySettings(outbox_retention_days=7)
        settings = RegistrySettings(outbox_retention_days=7, nats_url="nats://127.0.0.1:4222")
        assert settings.outbox_retention_days == 7

    def test_retention_is_whole_days(self) -> None:
        with pytest.raises(ValueError, match="greater than or equal to 1"):
            RegistrySettings(outbox_retention_days=0, nats_url="nats://127.0.0.1:4222")
