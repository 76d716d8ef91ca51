"""A members list filtered by a subtree and more (the ORM path): the same items and the
same cursors whether the subtree is read through the org index (`= ANY(ids)`, a small
subtree) or in id order with the subtree as a per-row filter (a large one). The choice is
`scope.subtree_is_small`'s; each test forces it both ways through its thresholds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.registry.service import members as member_service
from services.registry.service import scope
from tests.registry.factories import Tree, make_member

MEMBERS = "/api/v1/registry/members"
AsRole = Callable[..., httpx.AsyncClient]
Pages = list[tuple[list[dict[str, Any]], str | None]]


def force(monkeypatch: pytest.MonkeyPatch, plan: str) -> list[bool]:
    """Every subtree read as `plan` says ("small" or "large"); returns the forms given."""
    if plan == "small":
        monkeypatch.setattr(scope, "SMALL_SUBTREE_ORGS", 10**9)
    else:
        monkeypatch.setattr(scope, "SMALL_SUBTREE_ORGS", 0)
        monkeypatch.setattr(scope, "SMALL_SUBTREE_SHARE", 0.0)
    forms: list[bool] = []
    real = scope.org_column_under

    def spy(column: Any, org_id: Any, *, small: bool) -> Any:
        forms.append(small)
        return real(column, org_id, small=small)

    monkeypatch.setattr(member_service, "org_column_under", spy)
    return forms


async def walk(c: httpx.AsyncClient, **params: Any) -> Pages:
    pages: Pages = []
    cursor = None
    while True:
        query = {"limit": 2, **params, **({"cursor": cursor} if cursor else {})}
        r = await c.get(MEMBERS, params=query)
        assert r.status_code == 200, r.text
        cursor = r.json()["next_cursor"]
        pages.append((r.json()["items"], cursor))
        if cursor is None:
            return pages


async def both_plans(
    monkeypatch: pytest.MonkeyPatch, c: httpx.AsyncClient, **params: Any
) -> list[str]:
    """The pages under each plan (asserted equal, items and cursors); the ids listed."""
    seen: dict[str, Pages] = {}
    for plan in ("small", "large"):
        with monkeypatch.context() as m:
            forms = force(m, plan)
            seen[plan] = await walk(c, **params)
            assert forms and set(forms) == {plan == "small"}
    assert seen["small"] == seen["large"]
    ids = [item["id"] for items, _ in seen["small"] for item in items]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    return ids


@pytest.fixture
async def people(admin: httpx.AsyncClient, tree: Tree) -> dict[str, set[str]]:
    """Members enrolled and living across the tree, named by what they are."""
    made: dict[str, set[str]] = {}

    async def add(name: str, **card: Any) -> None:
        made.setdefault(name, set()).add((await make_member(admin, **card))["id"])

    for org, name in (
        (tree.community_a, "retired_a"),
        (tree.building_a1, "retired_a1"),
        (tree.community_b, "retired_b"),
    ):
        for _ in range(3):
            await add(name, org_id=org["id"])
    await add("staff_a", org_id=tree.community_a["id"], category="community_staff")
    await add("retired_city", org_id=tree.city["id"])
    # Enrolled in b, living in a: in a's scope as a resident of its subtree.
    await add(
        "retired_b_lives_a", org_id=tree.community_b["id"], residence_org_id=tree.building_a1["id"]
    )
    for org, name in ((tree.community_a, "lives_a"), (tree.community_b, "lives_b")):
        for _ in range(2):
            await add(name, residence_org_id=org["id"])
    return made


def union(people: dict[str, set[str]], *names: str) -> list[str]:
    return sorted(set().union(*(people[n] for n in names)))


async def test_an_admins_filtered_subtree(
    admin: httpx.AsyncClient,
    tree: Tree,
    people: dict[str, set[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    street = tree.street["id"]
    ids = await both_plans(monkeypatch, admin, org_id=street, category="retired")
    assert ids == union(people, "retired_a", "retired_a1", "retired_b", "retired_b_lives_a")
    ids = await both_plans(monkeypatch, admin, org_id=tree.community_a["id"], category="retired")
    assert ids == union(people, "retired_a", "retired_a1")
    ids = await both_plans(
        monkeypatch, admin, residence_org_id=street, category="in_service_resident"
    )
    assert ids == union(people, "lives_a", "lives_b")
    ids = await both_plans(monkeypatch, admin, residence_org_id=tree.community_a["id"])
    assert ids == union(people, "lives_a", "retired_b_lives_a")
    # Both subtree filters at once, each in the forced form.
    ids = await both_plans(
        monkeypatch, admin, org_id=street, residence_org_id=tree.community_a["id"]
    )
    assert ids == union(people, "retired_b_lives_a")


async def test_an_org_roles_filtered_subtree(
    tree: Tree,
    people: dict[str, set[str]],
    as_role: AsRole,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The scope still bounds the list: community a's admin sees, under the street, those
    # enrolled in a's subtree and those living in it (each once), not b's own.
    async with as_role("org_admin", org_id=tree.community_a["id"]) as c:
        ids = await both_plans(monkeypatch, c, org_id=tree.street["id"], category="retired")
        assert ids == union(people, "retired_a", "retired_a1", "retired_b_lives_a")
        ids = await both_plans(monkeypatch, c, residence_org_id=tree.street["id"])
        assert ids == union(people, "lives_a", "retired_b_lives_a")
    async with as_role("org_viewer", org_id=tree.street["id"]) as c:
        ids = await both_plans(monkeypatch, c, org_id=tree.city["id"], category="retired")
        assert ids == union(people, "retired_a", "retired_a1", "retired_b", "retired_b_lives_a")
