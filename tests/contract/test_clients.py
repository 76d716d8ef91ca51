"""The clients generated from the snapshot (`make clients`) work against the running system
(conftest's `system`: the gateway and the three services as processes, over HTTP). Each runs
the integrator's flow: log in, create an org tree and members (valid GB 11643 ID numbers),
page through the members with the cursor, issue a work unit's API key with scope `sync` and
sync the unit's in-service members with it (a bad row answered by its index, a retry with the
same `Idempotency-Key` answered the same), read the city's report.

Python: `openapi-python-client`'s package, imported from a temporary folder. TypeScript:
`openapi-typescript` + `openapi-fetch` (`tests/contract/client_flow.ts` beside the generated
`lianxin.ts`), type-checked by `tsc --noEmit` — so a drift of the document that breaks a call
fails here — then run by node, which prints what it saw as JSON."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.contract.system import ADMIN_PASSWORD, ADMIN_USER, System
from tests.registry.factories import id_number
from tools import clients, node

FLOW_TS = Path(__file__).with_name("client_flow.ts")
NODE_LIMIT_S = 120
MEMBERS = 5
SYNC_ROWS = 3  # good rows; one bad row follows them
YEAR = date.today().year


@pytest.fixture(scope="module")
def client_pkg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out: Path = tmp_path_factory.mktemp("clients")
    clients.generate_python(out)
    sys.path.insert(0, str(out))
    try:
        yield clients.PACKAGE
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.split(".")[0] == clients.PACKAGE]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def ts_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated TypeScript client with the flow beside it, all type-checked."""
    out = clients.generate_typescript(tmp_path_factory.mktemp("ts") / "client", check=False)
    shutil.copyfile(FLOW_TS, out / FLOW_TS.name)
    clients.typecheck_typescript(out)
    return out


def mod(pkg: str, name: str) -> ModuleType:
    return importlib.import_module(f"{pkg}.{name}")


def check_flow(seen: dict[str, Any]) -> None:
    """What both clients must have seen (each on its own org tree)."""
    assert seen["me"] == {"username": ADMIN_USER, "role": "admin"}
    assert len(seen["created"]) == MEMBERS
    # Every member once, over pages of two (an odd count: the last page is not full).
    assert sorted(seen["paged"]) == sorted(seen["created"])
    assert seen["pages"] == math.ceil(MEMBERS / 2)
    sync = seen["sync"]
    assert (sync["created"], sync["updated"], sync["unchanged"], sync["ended"]) == (
        SYNC_ROWS,
        0,
        0,
        0,
    ), sync
    assert [e["index"] for e in sync["errors"]] == [SYNC_ROWS], sync
    assert "id_number" in sync["errors"][0]["message"], sync
    assert seen["replay_identical"] is True
    report = seen["report"]
    assert report["org_id"] == seen["orgs"]["city"]
    assert report["year"] == YEAR
    assert report["incomplete"] == []
    assert report["orgs_total"] == 3  # city, community, work unit
    # The registered members, and the synced ones who reside in the city's community.
    assert report["members_total"] == MEMBERS + SYNC_ROWS, report
    assert report["links"] == SYNC_ROWS, report


def test_the_python_client_runs_the_flow(client_pkg: str, system: System) -> None:
    root: Any = mod(client_pkg, "client")
    models: Any = mod(client_pkg, "models")
    unset = mod(client_pkg, "types").UNSET
    create_token: Any = mod(client_pkg, "api.auth.create_token")
    get_me: Any = mod(client_pkg, "api.auth.get_me")
    create_api_key: Any = mod(client_pkg, "api.auth.create_api_key")
    create_org: Any = mod(client_pkg, "api.orgs.create_org")
    get_org: Any = mod(client_pkg, "api.orgs.get_org")
    create_member: Any = mod(client_pkg, "api.members.create_member")
    list_members: Any = mod(client_pkg, "api.members.list_members")
    sync_members: Any = mod(client_pkg, "api.work_unit_sync.sync_work_unit_members")
    get_report: Any = mod(client_pkg, "api.reports.get_org_report")
    base = system.gateway_url
    prefix = "PYC"

    with root.Client(base_url=base, timeout=30.0) as anon:
        pair = create_token.sync(
            client=anon,
            body=models.BodyCreateToken(username=ADMIN_USER, password=ADMIN_PASSWORD),
        )
        assert isinstance(pair, models.TokenPair), pair
        wrong = create_token.sync_detailed(
            client=anon, body=models.BodyCreateToken(username=ADMIN_USER, password="nope-42")
        )
        assert wrong.status_code == 401
        assert isinstance(wrong.parsed, models.Problem)

    seen: dict[str, Any] = {}
    with root.AuthenticatedClient(base_url=base, token=pair.access_token, timeout=30.0) as api:
        me = get_me.sync(client=api)
        seen["me"] = {"username": me.username, "role": me.role}

        def org(code: str, kind: str, level: str, parent: Any = unset) -> Any:
            body = models.OrgCreate(
                code=f"{prefix}-{code}",
                name=f"客户端{code}",
                kind=models.OrgKind(kind),
                area_level=models.AreaLevel(level),
                parent_id=parent,
            )
            created = create_org.sync(client=api, body=body, idempotency_key=f"{prefix}-{code}")
            assert isinstance(created, models.OrgPublic), created
            return created

        city = org("CITY", "committee", "city")
        community = org("COMM", "branch", "community", city.id)
        unit = org("UNIT", "committee", "work_unit", city.id)
        seen["orgs"] = {"city": str(city.id)}

        seen["created"] = []
        for n in range(MEMBERS):
            birth = date(1982, 1 + n, 10 + n)
            body = models.MemberCreate(
                name=f"客户端党员{n}",
                gender=models.Gender.MALE,
                birth_date=birth,
                id_number=id_number(birth, serial=2 * n + 1),
                phone="13812345678",
                education=models.Education.SENIOR_HIGH,
                membership=models.Membership.FULL,
                category=models.Category.RETIRED,
                org_id=community.id,
            )
            member = create_member.sync(client=api, body=body, idempotency_key=f"{prefix}-m{n}")
            assert isinstance(member, models.MemberPublic), member
            assert member.id_number_masked != body.id_number
            seen["created"].append(str(member.id))

        seen["paged"], seen["pages"], cursor = [], 0, unset
        while True:
            page = list_members.sync(client=api, org_id=city.id, limit=2, cursor=cursor)
            assert isinstance(page, models.PageMemberPublic), page
            seen["pages"] += 1
            seen["paged"] += [str(m.id) for m in page.items]
            if not page.next_cursor:
                break
            cursor = page.next_cursor

        issued = create_api_key.sync(
            client=api,
            body=models.ApiKeyCreate(
                name="客户端人事系统", org_id=unit.id, scopes=[models.ApiKeyScope.SYNC]
            ),
        )
        assert isinstance(issued, models.ApiKeyCreated), issued
        assert issued.key

        missing = get_org.sync_detailed(client=api, org_id=uuid.UUID(int=0))
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Problem)

    rows = [
        models.SyncMember(
            external_id=f"{prefix}-E-{n}",
            name=f"在职党员{n}",
            id_number=id_number(date(1992, 1 + n, 20 + n), serial=2 * n + 1),
            residence_community_code=community.code,
        )
        for n in range(SYNC_ROWS)
    ]
    good = rows[0].id_number
    rows.append(
        models.SyncMember(
            external_id=f"{prefix}-E-bad",
            name="坏行",
            id_number=good[:17] + ("1" if good[17] == "0" else "0"),
            residence_community_code=community.code,
        )
    )
    body = models.SyncRequest(mode=models.SyncRequestMode.FULL, members=rows)
    with root.AuthenticatedClient(
        base_url=base, token=issued.key, prefix="", auth_header_name="X-API-Key", timeout=30.0
    ) as unit_api:
        night = f"{prefix}-night-1"  # one key for the run and its retries
        first = sync_until_the_unit_is_known(sync_members, unit_api, unit.id, body, night)
        assert isinstance(first, models.SyncResult), first
        again = sync_members.sync(client=unit_api, org_id=unit.id, body=body, idempotency_key=night)
        seen["sync"] = first.to_dict()
        seen["replay_identical"] = again.to_dict() == first.to_dict()
        # The key is for its unit's sync only.
        assert list_members.sync_detailed(client=unit_api).status_code == 403

    with root.AuthenticatedClient(base_url=base, token=pair.access_token, timeout=30.0) as api:
        report = get_report.sync(client=api, org_id=city.id, year=YEAR)
        assert isinstance(report, models.Report), report
        seen["report"] = {
            "org_id": str(report.org_id),
            "year": report.year,
            "orgs_total": report.orgs.total,
            "members_total": report.members.total,
            "links": report.dual_management.links,
            "incomplete": list(report.incomplete),
        }
    check_flow(seen)


def sync_until_the_unit_is_known(
    sync_members: Any, client: Any, org_id: uuid.UUID, body: Any, key: str, within_s: float = 30
) -> Any:
    """Mobility learns of the unit's org from the registry's events: until then the sync
    answers 404, which a client retries for a while (as the TypeScript flow does)."""
    deadline = time.monotonic() + within_s
    while True:
        answer = sync_members.sync_detailed(
            client=client, org_id=org_id, body=body, idempotency_key=key
        )
        if answer.status_code != 404 or time.monotonic() > deadline:
            assert answer.status_code == 200, (answer.status_code, answer.content[:500])
            return answer.parsed
        time.sleep(0.25)


def test_the_typescript_client_runs_the_flow(ts_client: Path, system: System) -> None:
    env = {
        **node.node_env(),
        "LIANXIN_URL": system.gateway_url,
        "LIANXIN_USER": ADMIN_USER,
        "LIANXIN_PASSWORD": ADMIN_PASSWORD,
        "FLOW_PREFIX": "TSC",
        "FLOW_MEMBERS": str(MEMBERS),
        "FLOW_YEAR": str(YEAR),
        "FLOW_BIRTH_YEAR": "1981",
        "NODE_NO_WARNINGS": "1",
    }
    node_exe = shutil.which("node", path=str(node.BIN))
    assert node_exe, f"no node in {node.BIN}"
    proc = subprocess.Popen(  # noqa: S603  (node running our own flow)
        [node_exe, FLOW_TS.name],
        cwd=ts_client,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=NODE_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        tail = err.decode(errors="replace")[-3000:]
        pytest.fail(f"the TypeScript flow still ran after {NODE_LIMIT_S} s:\n{tail}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    assert proc.returncode == 0, (
        f"node exited {proc.returncode}\n--- stdout:\n{stdout[-3000:]}\n--- stderr:\n"
        f"{stderr[-3000:]}\n{system.logs()}"
    )
    seen = json.loads(stdout.strip().splitlines()[-1])
    check_flow(seen)
