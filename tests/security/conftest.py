"""One populated, running system for the security tests: every app as its own database
role, every logger of every process at DEBUG (a `sitecustomize` on the children's path),
the data keys in a key file, and a full scenario through the gateway — members with ID
numbers and phones (by hand, by import and by a work unit's sync), the audited read of a
full ID number, a talk with notes written and read, an activity. The values are made up
fresh for the run, so finding one anywhere means it leaked from this run."""

from __future__ import annotations

import base64
import csv
import io
import os
import random
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.registry.idnumber import check_character
from tests.contract.system import ADMIN_PASSWORD, ADMIN_USER, System, running_system

# The gateway's in-process harness (tests/gateway/conftest.py), for the OWASP and duties tests.
from tests.gateway.conftest import (  # noqa: F401
    admin_client,
    admin_token,
    anon,
    as_user,
    clock,
    gateway_app,
    gateway_settings,
    gw,
    login,
    make_user,
    registry_app,
    security_client,
    service_apps,
    tree,
    upstream,
)

DEBUG_EVERYWHERE = """\
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                    format="%(name)s %(levelname)s %(message)s")
# SQLAlchemy sets its own root logger to WARNING unless a level is set: the SQL, its
# parameters and the rows read.
logging.getLogger("sqlalchemy").setLevel(logging.DEBUG)
"""
EVENTUAL_S = 30.0
SECURITY_ADMIN_USER = "security"
SECURITY_ADMIN_PASSWORD = "Security-admin-2026"


def _id_number(rng: random.Random) -> tuple[str, date]:
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 50))
    body = f"330402{born:%Y%m%d}{rng.randrange(100, 999)}"
    return body + check_character(body), born


def _phone(rng: random.Random) -> str:
    return f"13{rng.randrange(5, 10)}{rng.randrange(10**7, 10**8)}"


@dataclass
class Scenario:
    system: System
    data_keys: str
    log_dir: Path
    # What -> its plaintext: encrypted at rest, never logged (ID numbers, phones, notes).
    secrets: dict[str, str] = field(default_factory=dict)
    # Stored as they are (addresses) but never logged either.
    personal: dict[str, str] = field(default_factory=dict)
    member_ids: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.system.database_url

    def logs(self) -> str:
        """Everything every process wrote to stdout and stderr."""
        return "\n".join(p.log_tail(10**9) for p in self.system.processes.values())


class Api:
    def __init__(self, client: httpx.Client, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        r = self.client.request(method, "/api/v1" + path, headers=headers, **kwargs)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content and "json" in r.headers.get("content-type", "") else r

    def until(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        """Retry while another service has not yet seen the registry's events."""
        deadline = time.monotonic() + EVENTUAL_S
        while True:
            r = self.client.request(method, "/api/v1" + path, headers=self.headers, **kwargs)
            if r.status_code == expect or time.monotonic() > deadline:
                assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
                return r.json()
            time.sleep(0.2)  # bounded by the deadline: waiting for event delivery


def password_login(client: httpx.Client, username: str, password: str) -> str:
    r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _member(org_id: str, rng: random.Random, name: str) -> tuple[dict[str, Any], str, str]:
    number, born = _id_number(rng)
    phone = _phone(rng)
    body = {
        "name": name,
        "gender": "male" if int(number[16]) % 2 else "female",
        "birth_date": born.isoformat(),
        "id_number": number,
        "phone": phone,
        "education": "senior_high",
        "membership": "full",
        "category": "retired",
        "org_id": org_id,
        "address": f"南湖区保密小区{rng.randrange(100, 999)}幢",
    }
    return body, number, phone


def run_scenario(scenario: Scenario) -> None:
    rng = random.Random(secrets.randbits(64))
    tag = uuid.uuid4().hex[:8].upper()
    with httpx.Client(base_url=scenario.system.gateway_url, timeout=60, trust_env=False) as c:
        api = Api(c, password_login(c, ADMIN_USER, ADMIN_PASSWORD))
        city = api.call(
            "POST",
            "/registry/orgs",
            201,
            json={"code": f"S-{tag}", "name": "保密市", "kind": "committee", "area_level": "city"},
        )["id"]
        community_code = f"S-{tag}-C"
        community = api.call(
            "POST",
            "/registry/orgs",
            201,
            json={
                "code": community_code,
                "name": "保密社区党支部",
                "kind": "branch",
                "area_level": "community",
                "parent_id": city,
            },
        )["id"]
        unit = api.call(
            "POST",
            "/registry/orgs",
            201,
            json={
                "code": f"S-{tag}-U",
                "name": "保密单位党委",
                "kind": "committee",
                "area_level": "work_unit",
                "parent_id": city,
            },
        )["id"]
        scenario.ids.update(city=city, community=community, unit=unit)

        # By hand, with an Idempotency-Key (its stored answer is sealed).
        for i in range(2):
            body, number, phone = _member(community, rng, f"保密{i}")
            scenario.secrets[f"id_number {i}"] = number
            scenario.secrets[f"phone {i}"] = phone
            scenario.personal[f"address {i}"] = body["address"]
            created = api.call(
                "POST",
                "/registry/members",
                201,
                json=body,
                headers={"Idempotency-Key": f"sec-{tag}-{i}"},
            )
            scenario.member_ids.append(created["id"])
        first = scenario.member_ids[0]
        full = api.call("GET", f"/registry/members/{first}/id-number", 200)
        assert full["id_number"] == scenario.secrets["id_number 0"]
        api.call("GET", f"/registry/members/{first}", 200)

        # By import (a CSV with Chinese headers).
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["姓名", "性别", "出生日期", "身份证号", "电话", "类别", "所在组织代码"])
        for i in range(2):
            number, born = _id_number(rng)
            phone = _phone(rng)
            scenario.secrets[f"imported id_number {i}"] = number
            scenario.secrets[f"imported phone {i}"] = phone
            gender = "男" if int(number[16]) % 2 else "女"
            writer.writerow(
                [f"导入{i}", gender, born.isoformat(), number, phone, "离退休", community_code]
            )
        imported = api.call(
            "POST",
            "/registry/members/import",
            200,
            files={"file": ("roster.csv", out.getvalue().encode(), "text/csv")},
        )
        assert imported["created"] == 2, imported["rows"]

        # A work unit's sync with its API key (one row with a wrong check digit).
        key = api.call(
            "POST",
            "/auth/api-keys",
            201,
            json={"name": "保密单位 人事系统", "org_id": unit, "scopes": ["sync"]},
        )["key"]
        rows = []
        for i in range(2):
            number, _ = _id_number(rng)
            phone = _phone(rng)
            scenario.secrets[f"synced id_number {i}"] = number
            scenario.secrets[f"synced phone {i}"] = phone
            rows.append(
                {
                    "external_id": f"E-{tag}-{i}",
                    "name": f"同步{i}",
                    "id_number": number,
                    "phone": phone,
                    "residence_community_code": community_code,
                    "address": f"同步保密路{rng.randrange(100, 999)}号",
                }
            )
            scenario.personal[f"synced address {i}"] = rows[-1]["address"]
        bad, _ = _id_number(rng)
        bad = bad[:17] + ("0" if bad[17] != "0" else "1")
        scenario.secrets["synced bad id_number"] = bad
        rows.append(
            {
                "external_id": f"E-{tag}-bad",
                "name": "同步错",
                "id_number": bad,
                "residence_community_code": community_code,
            }
        )
        r = c.put(
            f"/api/v1/mobility/sync/{unit}/members",
            json={"mode": "full", "members": rows},
            headers={"X-API-Key": key, "Idempotency-Key": f"sync-{tag}"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 2, r.text

        # An activity and a talk with notes (activities learns the member from events).
        api.call(
            "POST",
            "/activities/activities",
            201,
            json={
                "org_id": community,
                "type": "party_lecture",
                "title": "保密党课",
                "starts_at": "2026-07-01T19:00:00+08:00",
                "ends_at": "2026-07-01T21:00:00+08:00",
            },
        )
        notes = f"谈心记录{uuid.uuid4().hex}：家中困难，需要帮扶。"
        scenario.secrets["talk notes"] = notes
        talk = api.until(
            "POST",
            "/activities/talks",
            201,
            json={
                "member_id": first,
                "held_on": "2026-03-12",
                "talker": "李书记",
                "topic": "思想状况",
                "notes": notes,
            },
        )
        assert api.call("GET", f"/activities/talks/{talk['id']}", 200)["notes"] == notes
        scenario.ids["talk"] = talk["id"]
        # The audit trail holds the reads: an auditor (made by the security admin) reads it.
        security = Api(c, password_login(c, SECURITY_ADMIN_USER, SECURITY_ADMIN_PASSWORD))
        auditor = {"username": f"auditor-{tag}", "password": "Audit-trail-2026", "role": "auditor"}
        security.call("POST", "/auth/users", 201, json=auditor)
        trail = Api(c, password_login(c, auditor["username"], auditor["password"])).call(
            "GET", "/audit", 200, params={"limit": 200, "subject_member_id": first}
        )
        assert "member.read_id_number" in {e["action"] for e in trail["items"]}, trail


@pytest.fixture(scope="package")
def scenario(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    folder = tmp_path_factory.mktemp("security")
    (folder / "sitecustomize.py").write_text(DEBUG_EVERYWHERE)
    data_keys = f"sec{secrets.token_hex(2)}:{base64.b64encode(os.urandom(32)).decode()}"
    key_file = folder / "data_keys"
    key_file.write_text(f"# the scenario's data keys\n{data_keys}\n")
    key_file.chmod(0o600)
    env = {
        "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
        "LIANXIN_LOG_LEVEL": "DEBUG",
        "LIANXIN_DATA_KEYS_FILE": str(key_file),
    }
    gateway_env = {
        **env,
        "LIANXIN_SECURITY_ADMIN_USER": SECURITY_ADMIN_USER,
        "LIANXIN_SECURITY_ADMIN_PASSWORD": SECURITY_ADMIN_PASSWORD,
    }
    with running_system(server_url, service_env=env, gateway_env=gateway_env) as system:
        scenario = Scenario(system=system, data_keys=data_keys, log_dir=folder)
        try:
            run_scenario(scenario)
        except BaseException:
            print(system.logs()[-20000:])
            raise
        yield scenario
