"""No plaintext ID number, phone or talk note in a dump of the database, and none of these
nor an address in anything any process logged during the full scenario
(tests/security/conftest.py)."""

from __future__ import annotations

from tests.security.conftest import Scenario
from tools.backup import dump_sql


def leaks(text: str, values: dict[str, str]) -> list[str]:
    """Which values occur in `text`, each with (the start of) a line showing it, masked."""
    found = []
    for what, value in values.items():
        needle = value.casefold()
        for line in text.splitlines():
            if needle in line.casefold():
                at = line.casefold().index(needle)
                found.append(f"{what}: {line[max(0, at - 200) : at]}***")
                break
    return found


def test_a_database_dump_holds_no_sensitive_plaintext(scenario: Scenario) -> None:
    dump = dump_sql(scenario.database_url)
    # The dump does hold the scenario's data: names, org codes, the talk's topic.
    assert "保密0" in dump and "导入1" in dump and "同步1" in dump and "思想状况" in dump
    assert scenario.ids["talk"] in dump
    assert len(scenario.secrets) >= 14
    assert leaks(dump, scenario.secrets) == []


def test_no_log_line_of_any_process_holds_sensitive_plaintext(scenario: Scenario) -> None:
    logs = scenario.logs()
    # Every logger at DEBUG was captured: the SQL engine's and the HTTP client's lines are
    # here, and every request of the scenario has its access line.
    assert "sqlalchemy.engine" in logs and "httpx" in logs
    for path in (
        "/api/v1/registry/members/import",
        f"/api/v1/registry/members/{scenario.member_ids[0]}/id-number",
        "/api/v1/activities/talks",
        f"/api/v1/mobility/sync/{scenario.ids['unit']}/members",
    ):
        assert path in logs, path
    assert leaks(logs, {**scenario.secrets, **scenario.personal}) == []
