"""OWASP API7:2023 Server Side Request Forgery: where a webhook may point.

`tests/webhooks/test_webhooks_api.py::TestUrlGuard` refuses the plain cases (loopback,
private, link-local, metadata, CGNAT, multicast, names resolving to them, mixed answers)
and `tests/webhooks/test_deliveries.py` the DNS rebinding between registration and
delivery. Here: the other ways to write an internal address (integer, hex, short and
IPv6-embedded forms, deprecated and special-purpose ranges), resolved by the real system
resolver as the gateway does; and that only an explicit `allow_private` by an admin lets a
private target through."""

from __future__ import annotations

import httpx
import pytest

from gateway.webhooks.ssrf import AddressRefused, check_target, system_resolver
from tests.registry.factories import Tree
from tests.security.owasp_world import AsUser

HOOKS = "/api/v1/webhooks"
INTERNAL = [
    "http://2130706433/hook",  # 127.0.0.1 as one integer
    "http://0x7f000001/hook",  # … in hex
    "http://0177.0.0.1/hook",  # … in octal
    "http://127.1/hook",  # … shortened
    "http://0/hook",  # 0.0.0.0
    "http://[::ffff:7f00:1]/hook",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/latest/meta-data/",  # mapped 169.254.169.254
    "http://[::7f00:1]/hook",  # IPv4-compatible (deprecated)
    "http://[::127.0.0.1]/hook",
    "http://[2002:7f00:1::1]/hook",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of the metadata address
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",  # Teredo
    "http://[fec0::1]/hook",  # site-local (deprecated)
    "http://[::]/hook",
    "http://100.64.0.1/hook",  # CGNAT
    "http://198.18.0.1/hook",  # benchmarking
    "http://192.0.2.1/hook",  # documentation
    "http://255.255.255.255/hook",  # broadcast
    "http://LOCALHOST./hook",  # case and a trailing dot
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://printer.local/hook",
]


@pytest.mark.parametrize("url", INTERNAL)
async def test_every_spelling_of_an_internal_address_is_refused(url: str) -> None:
    with pytest.raises(AddressRefused):
        await check_target(url, allow_http=True, allow_private=False, resolver=system_resolver)


@pytest.mark.parametrize("url", ["http://2130706433/hook", "http://[::ffff:7f00:1]/hook"])
async def test_an_explicit_allow_private_lets_it_through(url: str) -> None:
    target = await check_target(url, allow_http=True, allow_private=True, resolver=system_resolver)
    assert target.url.host


async def test_a_public_address_is_fine() -> None:
    target = await check_target(
        "https://93.184.215.14/hook",
        allow_http=False,
        allow_private=False,
        resolver=system_resolver,
    )
    assert target.address == "93.184.215.14"


class TestThroughTheApi:
    @pytest.mark.parametrize("url", ["http://2130706433/hook", "http://[::7f00:1]/hook"])
    async def test_registration_refuses_it(self, admin_client: httpx.AsyncClient, url: str) -> None:
        r = await admin_client.post(HOOKS, json={"url": url, "events": ["*"]})
        assert r.status_code == 422, r.text
        assert r.json()["type"].endswith("webhook-url-refused")
        assert r.json()["errors"][0]["field"] == "url"

    async def test_only_an_admin_may_allow_private_targets(
        self, as_user: AsUser, tree: Tree
    ) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        r = await org_admin.post(
            HOOKS,
            json={
                "url": "http://127.0.0.1:9/hook",
                "events": ["*"],
                "org_id": tree.community_a["id"],
                "allow_private": True,
            },
        )
        assert r.status_code == 403, r.text
        listed = await org_admin.get(HOOKS)
        assert listed.json()["items"] == []
