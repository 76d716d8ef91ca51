"""Where a webhook may point. A URL's host is resolved and every address it resolves to
must be public: loopback, private, link-local, CGNAT, multicast, unspecified, reserved and
cloud-metadata addresses are refused unless an admin allowed private targets for that
webhook. Checked when a webhook is registered and again before every attempt (DNS may
have changed since), and the attempt connects to the address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port → the addresses it resolves to
Resolver = Callable[[str, int], Awaitable[list[str]]]

BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT (also Alibaba Cloud's metadata 100.100.100.200)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible ::a.b.c.d
        "2001::/32",  # Teredo: tunnels to an embedded IPv4 address
        "64:ff9b::/96",  # NAT64: embeds an IPv4 address
        "fc00::/7",  # unique local (AWS metadata fd00:ec2::254)
        "fe80::/10",
        "fec0::/10",  # deprecated site-local
        "ff00::/8",
    )
)


class AddressRefused(ValueError):
    """The URL may not be a webhook target; the message says why (no secrets in it)."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: httpx.URL
    address: str


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


def is_blocked(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_blocked(mapped)
    if not address.is_global:  # every special-purpose range (documentation, reserved, ...)
        return True
    return any(address in net for net in BLOCKED_NETWORKS if net.version == address.version)


def parse_url(url: str, *, allow_http: bool) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise AddressRefused("not a valid URL") from exc
    schemes = ("https", "http") if allow_http else ("https",)
    if parsed.scheme not in schemes:
        raise AddressRefused("must be " + " or ".join(schemes))
    if not parsed.host:
        raise AddressRefused("has no host")
    if parsed.userinfo:
        raise AddressRefused("may not carry credentials")
    return parsed


async def check_target(
    url: str, *, allow_http: bool, allow_private: bool, resolver: Resolver
) -> Target:
    """The URL and one address to connect to, or `AddressRefused`."""
    parsed = parse_url(url, allow_http=allow_http)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        name = host.rstrip(".").lower()
        local = name == "localhost" or name.endswith((".localhost", ".local", ".internal"))
        if local and not allow_private:
            raise AddressRefused("points at a local or internal host name")
        try:
            addresses = await resolver(host, port)
        except OSError as exc:
            raise AddressRefused("the host name does not resolve") from exc
        if not addresses:
            raise AddressRefused("the host name does not resolve")
    if not allow_private:
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError as exc:
                raise AddressRefused("the host resolves to an unusable address") from exc
            if is_blocked(ip):
                raise AddressRefused(
                    "points at a loopback, private, link-local or otherwise internal address"
                )
    return Target(url=parsed, address=addresses[0])
