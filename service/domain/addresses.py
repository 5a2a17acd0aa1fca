"""Which addresses wanhook must never send requests to: a pure policy on IP addresses, with no I/O, shared by
the create's checks (a URL naming an address literally) and the outbound clients (every address a host
resolves to)."""

from __future__ import annotations

import ipaddress

__all__ = ["embedded_ipv4", "not_public"]

# IPv6 addresses whose last 32 bits are an IPv4 address that a translator or the host itself reaches:
# NAT64's well-known prefix (RFC 6052, section 2.1; its /96 layout puts the IPv4 address last),
# IPv4-compatible addresses (RFC 4291, section 2.5.5.1, deprecated but still routed by some stacks) and
# IPv4-translated ones (SIIT, RFC 2765, section 2.1).
_LAST_32_BITS = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)
# NAT64's local-use prefix (RFC 8215): an operator takes a prefix of any RFC 6052 length, /48 to /96,
# inside it, and the IPv4 address sits at a different place for each length (RFC 6052, section 2.2),
# so nothing in the address tells where it is. The prefix is for use inside one network and is not
# globally reachable (RFC 8215, section 5, and IANA's special-purpose registry): refused whole.
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
# Ranges that no video host or callback receiver lives in, which Python's ``is_global`` (its copy of IANA's
# special-purpose registries) still calls global: site-local addresses (fec0::/10, RFC 3879, deprecated
# but routed inside some networks as private ones), the documentation prefix added in 2024 (3fff::/20,
# RFC 9637), SRv6 SIDs (5f00::/16, RFC 9602: "not globally reachable" in IANA's IPv6 registry) and the
# deprecated 6to4 relay anycast (192.88.99.0/24, RFC 7526).
_ALSO_REFUSED = (
    ipaddress.IPv6Network("fec0::/10"),
    ipaddress.IPv6Network("3fff::/20"),
    ipaddress.IPv6Network("5f00::/16"),
    ipaddress.IPv4Network("192.88.99.0/24"),
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet to ``ip`` may end up at: mapped (``::ffff:a.b.c.d``), NAT64, IPv4-compatible
    or -translated, 6to4 (``2002:AABB:CCDD::/48``, RFC 3056) and Teredo (RFC 4380: its server, and its
    client, whose address ``ipaddress`` un-obfuscates)."""
    found = [ip.ipv4_mapped] if ip.ipv4_mapped is not None else []
    if any(ip in network for network in _LAST_32_BITS):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def not_public(address: str) -> bool:
    """Whether wanhook must not connect to ``address``: not global (or multicast), itself or through the
    IPv4 address it carries. A v6 form of an inward IPv4 address (NAT64 ``64:ff9b::7f00:1``, 6to4
    ``2002:a9fe:a9fe::``) reaches that address as surely as the address itself."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL_USE:
            return True
        # A mapped address is the IPv4 address, as a dual-stack socket writes it: that one alone decides.
        candidates = [*embedded_ipv4(ip)] if ip.ipv4_mapped is not None else [ip, *embedded_ipv4(ip)]
    return any(
        not candidate.is_global
        or candidate.is_multicast
        or any(candidate in network for network in _ALSO_REFUSED if network.version == candidate.version)
        for candidate in candidates
    )
