"""The committed OpenAPI snapshot is the public contract: it must match what the code
serves, and a change that breaks clients must be announced in `CHANGELOG.md`."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import pytest

from gateway.settings import GatewaySettings
from tools import openapi_snapshot as snap

REGENERATE = "run `make openapi` and commit openapi/lianxin.json"


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    return snap.build()


@pytest.fixture
def gateway_settings(gateway_settings: GatewaySettings) -> GatewaySettings:
    return gateway_settings.model_copy(update={"public_url": "https://lianxin.example.org"})


def committed() -> dict[str, Any]:
    assert snap.SNAPSHOT.exists(), f"no {snap.SNAPSHOT}: {REGENERATE}"
    return dict(json.loads(snap.SNAPSHOT.read_text(encoding="utf-8")))


def base_snapshot() -> dict[str, Any] | None:
    """The snapshot as last committed (`git show HEAD:openapi/lianxin.json`); None before
    the first commit of it or outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "show", "HEAD:openapi/lianxin.json"],  # noqa: S607
            cwd=snap.ROOT,
            capture_output=True,
            check=False,
            timeout=30,
        )
    except FileNotFoundError:
        return None
    if out.returncode != 0:
        return None
    return dict(json.loads(out.stdout))


class TestSnapshot:
    def test_the_build_is_stable(self, built: dict[str, Any]) -> None:
        assert snap.render(snap.build()) == snap.render(built)

    async def test_the_in_process_build_is_what_the_gateway_serves(
        self, built: dict[str, Any], anon: httpx.AsyncClient
    ) -> None:
        r = await anon.get("/api/v1/openapi.json")
        assert r.status_code == 200
        assert snap.render(r.json()) == snap.render(built)

    def test_no_breaking_change_against_the_snapshot(self, built: dict[str, Any]) -> None:
        breaks = snap.breaking_changes(committed(), built)
        assert not breaks, (
            "breaking API changes against openapi/lianxin.json:\n  "
            + "\n  ".join(what for _, what in breaks)
            + f"\nIf they are intended: deprecate first, {REGENERATE}, and name each path "
            "in the newest section of CHANGELOG.md."
        )

    def test_the_snapshot_is_up_to_date(self, built: dict[str, Any]) -> None:
        text = snap.SNAPSHOT.read_text(encoding="utf-8") if snap.SNAPSHOT.exists() else ""
        assert text == snap.render(built), f"the API changed: {REGENERATE}"

    def test_breaking_changes_since_the_last_commit_are_in_the_changelog(self) -> None:
        base = base_snapshot()
        if base is None:  # the snapshot's first commit: nothing to compare with yet
            return
        missing = snap.unannounced(
            snap.breaking_changes(base, committed()),
            snap.CHANGELOG.read_text(encoding="utf-8"),
        )
        assert not missing, (
            "breaking changes in openapi/lianxin.json not named in the newest section of "
            "CHANGELOG.md:\n  " + "\n  ".join(missing)
        )
