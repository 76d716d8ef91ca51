"""Every secret setting can come from a file (`<VARIABLE>_FILE`, as Docker and Kubernetes
secrets give them); a secret set both ways is refused by name, without the value in the
error; the database password from a file goes into the URL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from common.settings import BaseAppSettings, DatabaseSettings, secret_file_variables
from tools import config_doc, serve

APPS = list(serve.APPS)


def secret_variables() -> list[tuple[str, str, str]]:
    """(app, field, variable) for each `_FILE` variable the settings read themselves."""
    found = []
    for app in APPS:
        settings = serve.settings_class(app)
        for name in settings.SECRET_FIELDS:
            for var in secret_file_variables(settings, name):
                found.append((app, name, var))
    return found


def secret_file(folder: Path, value: str) -> Path:
    path = folder / f"secret-{uuid.uuid4().hex[:8]}"
    path.write_text(value + "\n", encoding="utf-8")  # as `echo` and most editors leave it
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for app in APPS:
        for var in config_doc.env_vars(serve.settings_class(app)):
            monkeypatch.delenv(var, raising=False)


def test_every_secret_has_a_file_form() -> None:
    for app in APPS:
        settings = serve.settings_class(app)
        for name in settings.SECRET_FIELDS:
            has_file_field = f"{name}_file" in settings.model_fields
            assert has_file_field or secret_file_variables(settings, name), (app, name)
    gateway = {name for app, name, _var in secret_variables() if app == "gateway"}
    assert {"admin_password", "database_url", "database_password", "redis_url"} <= gateway
    registry = serve.settings_class("registry")
    for name in ("jwt_public_key", "service_private_key", "data_keys", "lookup_key"):
        assert f"{name}_file" in registry.model_fields, name
    assert "jwt_private_key_file" in serve.settings_class("gateway").model_fields


@pytest.mark.parametrize(("app", "name", "var"), secret_variables())
def test_a_secret_from_its_file(
    app: str, name: str, var: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = f"postgresql://u@db.example:5432/{uuid.uuid4().hex}"
    if name == "redis_url":
        value = f"redis://:{uuid.uuid4().hex}@redis.example:6379/0"
    elif name == "nats_url":
        value = f"nats://{uuid.uuid4().hex}@nats.example:4222"
    elif name not in ("database_url",):
        value = f"s3cret-{uuid.uuid4().hex} with spaces"
    monkeypatch.setenv(var, str(secret_file(tmp_path, value)))
    settings = serve.settings_class(app)()
    if name == "database_password":
        assert make_url(settings.database_url).password == value
    else:
        assert getattr(settings, name) == value  # the final newline is not part of it


@pytest.mark.parametrize(("app", "name", "var"), secret_variables())
def test_a_secret_set_both_ways_is_refused_without_its_value(
    app: str, name: str, var: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaked = f"never-in-an-error-{uuid.uuid4().hex}"
    monkeypatch.setenv(var, str(secret_file(tmp_path, leaked)))
    monkeypatch.setenv(var.removesuffix("_FILE"), leaked)
    with pytest.raises(ValidationError) as info:
        serve.settings_class(app)()
    assert var in str(info.value)
    assert leaked not in str(info.value)  # what a traceback or a log line shows


@pytest.mark.parametrize("name", ["jwt_public_key", "service_public_key", "service_private_key"])
def test_a_key_and_its_key_file_both_set_is_refused(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = f"LIANXIN_{name.upper()}"
    monkeypatch.setenv(variable, "-----BEGIN PUBLIC KEY-----")
    monkeypatch.setenv(f"{variable}_FILE", str(secret_file(tmp_path, "x")))
    with pytest.raises(ValidationError, match=f"{name.upper()}_FILE are both set"):
        BaseAppSettings()


def test_an_unreadable_secret_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIANXIN_ADMIN_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="LIANXIN_ADMIN_PASSWORD_FILE: cannot read"):
        serve.settings_class("gateway")()


def test_the_database_password_file_completes_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://lianxin@postgres:5432/lianxin")
    monkeypatch.setenv("LIANXIN_DATABASE_PASSWORD_FILE", str(secret_file(tmp_path, "p@ss:w/rd")))
    url = make_url(BaseAppSettings().database_url)
    assert (url.username, url.password, url.host, url.database) == (
        "lianxin",
        "p@ss:w/rd",
        "postgres",
        "lianxin",
    )


def test_production_accepts_the_admin_password_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The production check sees the file's value: the development default is refused.
    monkeypatch.setenv("LIANXIN_ADMIN_PASSWORD_FILE", str(secret_file(tmp_path, "lianxin-admin")))
    gateway = serve.settings_class("gateway")()
    assert "the default admin password: set LIANXIN_ADMIN_PASSWORD" in (
        gateway.production_problems()
    )


def test_the_migration_job_reads_the_same_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `tools.serve migrate` runs without an app's settings (no keys in its container).
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret_file(tmp_path, "postgresql://m@db/x")))
    monkeypatch.setenv("LIANXIN_DATABASE_PASSWORD_FILE", str(secret_file(tmp_path, "pw")))
    url = make_url(str(DatabaseSettings().database_url))
    assert (url.username, url.password, url.host) == ("m", "pw", "db")
    monkeypatch.setenv("DATABASE_URL", "postgresql://m@db/x")
    with pytest.raises(ValidationError, match="DATABASE_URL_FILE"):
        DatabaseSettings()
