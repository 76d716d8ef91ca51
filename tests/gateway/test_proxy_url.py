"""The service's URL of a proxied request is the one httpx's `copy_with(raw_path=...)`
gives: path and query exactly as the client sent them, escaped the same way when they need
it, refused the same way when they are not a URL."""

from __future__ import annotations

import httpx
import pytest

from gateway.proxy import upstream_url

BASE = httpx.URL("http://127.0.0.1:8001")
TARGETS = [
    b"/api/v1/registry/members/0bd7a7c1-8a8f-4ef5-9d3b-2d0c8a2a3f11",
    b"/api/v1/registry/members?org_id=abc&limit=50&cursor=eyJrIjpbIjAwMDAwIl0sImYiOiJ9",
    b"/api/v1/registry/members?q=%E7%8E%8B&status=active",
    b"/a/%2f/b",
    b"/a/%7e?x=%7E",
    b"/a/%zz",
    b"/a b",
    b'/a"b',
    b"/a|b^c\\d",
    b"/a?",
    b"/a?b?c",
    b"/a?x=1&y=[2]",
    b"/a/(x)*!$';=:@,+~",
]


@pytest.mark.parametrize("target", TARGETS)
def test_the_upstream_url_is_what_httpx_makes_of_it(target: bytes) -> None:
    url = upstream_url(BASE, target)
    expected = BASE.copy_with(raw_path=target)
    assert str(url) == str(expected)
    assert url == expected
    assert (url.raw_path, url.host, url.port, url.scheme) == (
        expected.raw_path,
        expected.host,
        expected.port,
        expected.scheme,
    )


@pytest.mark.parametrize("target", [b"/a#frag", b"/a/\xe4\xb8\xad"])
def test_a_target_httpx_refuses_is_refused_alike(target: bytes) -> None:
    with pytest.raises(Exception) as expected:
        BASE.copy_with(raw_path=target)
    with pytest.raises(type(expected.value)):
        upstream_url(BASE, target)


def test_the_base_keeps_its_own_path_and_query() -> None:
    base = httpx.URL("http://registry:8001")
    upstream_url(base, b"/api/v1/registry/orgs?limit=5")
    assert str(base) == "http://registry:8001"
