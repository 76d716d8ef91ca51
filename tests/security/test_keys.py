"""Data keys from the environment or a key file, and their rotation (docs/keys.md): a new
primary key encrypts what is written from then on, records written under the old key stay
readable as long as the old key stays in the ring."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.crypto import KeyRing
from common.settings import DEV_DATA_KEY, BaseAppSettings, Environment
from services.registry.app import create_app
from services.registry.service.member_card import ID_NUMBER, PHONE
from services.registry.settings import RegistrySettings
from tests.helpers import client, mint
from tests.registry.factories import make_org, next_id_number


def new_key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def key_file(folder: Path, *entries: str) -> Path:
    path = folder / f"keys-{uuid.uuid4().hex[:6]}"
    lines = ["# Lianxin data keys: the first encrypts, every one decrypts", *entries, ""]
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


def test_the_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = f"{new_key('env2')},{new_key('env1')}"
    monkeypatch.setenv("LIANXIN_DATA_KEYS", keys)
    monkeypatch.delenv("LIANXIN_DATA_KEYS_FILE", raising=False)
    assert BaseAppSettings().data_keys == keys
    assert KeyRing(BaseAppSettings().data_keys).current == "env2"


def test_a_key_file_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    newest, older = new_key("file2"), new_key("file1")
    lookup = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "lookup").write_text(lookup + "\n")
    monkeypatch.setenv("LIANXIN_DATA_KEYS", new_key("env1"))
    monkeypatch.setenv("LIANXIN_DATA_KEYS_FILE", str(key_file(tmp_path, newest, older)))
    monkeypatch.setenv("LIANXIN_LOOKUP_KEY_FILE", str(tmp_path / "lookup"))
    settings = BaseAppSettings()
    assert settings.data_keys == f"{newest},{older}"
    assert settings.lookup_key == lookup
    ring = KeyRing(settings.data_keys)
    assert ring.current == "file2"
    # Production accepts keys from files (no development key among them).
    assert not any("data key" in p or "LIANXIN_DATA_KEYS" in p for p in _problems(settings))
    # Comments and blank lines are not keys; a file of nothing but those is no key ring.
    with pytest.raises(ValueError, match="at least one data key"):
        KeyRing(BaseAppSettings(data_keys_file=key_file(tmp_path)).data_keys)


def test_production_refuses_a_key_file_holding_the_development_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="development data keys"):
        BaseAppSettings(
            environment=Environment.production,
            data_keys_file=key_file(tmp_path, new_key("k2"), f"dev1:{DEV_DATA_KEY}"),
            lookup_key=base64.b64encode(os.urandom(32)).decode(),
        )


def _problems(settings: BaseAppSettings) -> list[str]:
    return settings.production_problems()


async def test_rotation_keeps_old_records_readable_and_writes_with_the_new_key(
    db: async_sessionmaker[AsyncSession], settings_env: dict[str, object], tmp_path: Path
) -> None:
    old, new = new_key("old"), new_key("new")

    def registry(*entries: str) -> httpx.AsyncClient:
        settings = RegistrySettings.model_validate(
            {**settings_env, "data_keys_file": key_file(tmp_path, *entries)}
        )
        return client(create_app(settings, sessionmaker=db), mint("admin", username="keys"))

    async def create(c: httpx.AsyncClient, org_id: str, phone: str) -> tuple[str, str]:
        number = next_id_number()
        r = await c.post(
            "/api/v1/registry/members",
            json={
                "name": "轮换",
                "gender": "male",
                "birth_date": "1970-01-01",
                "id_number": number,
                "phone": phone,
                "category": "retired",
                "org_id": org_id,
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"]), number

    async def key_ids(member_id: str) -> tuple[str, str]:
        async with db() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT id_number_cipher, phone_cipher FROM registry.members WHERE id = :i"
                    ),
                    {"i": uuid.UUID(member_id)},
                )
            ).one()
        ring = KeyRing(f"{new},{old}")
        return ring.key_id_of(row.id_number_cipher), ring.key_id_of(row.phone_cipher)

    # Before: only the old key.
    async with registry(old) as before:
        org = await make_org(before)
        first, first_number = await create(before, org["id"], "13811112222")
    assert await key_ids(first) == ("old", "old")

    # Rotation: the new key first, the old one kept.
    async with registry(new, old) as after:
        r = await after.get(f"/api/v1/registry/members/{first}/id-number")
        assert r.status_code == 200, r.text
        assert r.json()["id_number"] == first_number
        r = await after.get(f"/api/v1/registry/members/{first}")
        assert r.json()["phone"] == "13811112222"
        second, second_number = await create(after, org["id"], "13933334444")
        r = await after.get(f"/api/v1/registry/members/{second}/id-number")
        assert r.json()["id_number"] == second_number
    assert await key_ids(second) == ("new", "new")
    assert await key_ids(first) == ("old", "old")  # untouched until re-encrypted

    # Why the old key stays until nothing uses it: without it the old record is unreadable.
    async with db() as session:
        blob = await session.scalar(
            text("SELECT id_number_cipher FROM registry.members WHERE id = :i"),
            {"i": uuid.UUID(first)},
        )
    assert KeyRing(f"{new},{old}").decrypt(blob, purpose=ID_NUMBER) == first_number
    with pytest.raises(ValueError, match="not configured"):
        KeyRing(new).decrypt(blob, purpose=ID_NUMBER)
    with pytest.raises(ValueError, match="does not verify"):  # a field's key is its own
        KeyRing(f"{new},{old}").decrypt(blob, purpose=PHONE)
