"""Where an ``http`` test case may go: only to hosts its environment declares, not the worker's neighbours.

An HTTP check runs on the Airflow worker, inside the operator's network, with a URL a customer
wrote. Without a policy it could read cloud metadata (``169.254.169.254``), the worker's own
services on loopback, or anything on the internal network. So:

- the URL's host must be one the environment declares in ``http_hosts`` (host names, IP addresses
  or networks such as ``10.20.0.0/16``); this is checked when the config is loaded and again before
  every request, and for every redirect hop (redirects are never followed blindly);
- at request time the host name is resolved and **every** address it resolves to is checked: a
  public (globally routable) address is fine; loopback, link-local, private (RFC 1918, ``fc00::/7``),
  shared (``100.64/10``), reserved and documentation addresses only if an ``http_hosts`` entry
  covers that address explicitly; unspecified, multicast/broadcast and the cloud metadata
  addresses never. IPv4 addresses embedded in IPv6 ones (``::ffff:a.b.c.d``, 6to4, NAT64, Teredo)
  are judged as the IPv4 address they reach;
- the connection then goes to the address that was checked (not to a second lookup of the name, so
  DNS rebinding cannot swap it), with the name still used for ``Host`` and TLS verification; no
  proxy from the environment is used.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from managed_upgrade.vocabulary import is_safe

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: frozenset[IpAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)
"""Cloud instance metadata endpoints: refused even when declared."""

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")

MIN_PREFIX = {4: 8, 6: 32}
"""Narrowest prefix length a declared network may have (``0.0.0.0/0`` would declare everything)."""

Resolver = Callable[[str, int], Sequence[IpAddress]]


class HttpPolicyError(ValueError):
    """A URL or an address an http test case may not reach; the message says why."""


# --- declared hosts -------------------------------------------------------------------------------


def parse_http_host(entry: str) -> str | IpAddress | IpNetwork:
    """One ``http_hosts`` entry as a lower-case host name, an address or a network; raises ValueError."""
    if not isinstance(entry, str) or not entry:
        raise ValueError("must be a host name, an IP address or a network (CIDR)")
    if "/" in entry:
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError as error:
            raise ValueError(f"{entry!r} is not a network such as 10.20.0.0/16: {error}") from None
        if network.prefixlen < MIN_PREFIX[network.version]:
            raise ValueError(
                f"network {entry} is too wide; declare at most a /{MIN_PREFIX[network.version]} "
                f"(IPv{network.version})"
            )
        _refuse_never_allowed_network(network)
        return network
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        name = entry.lower().rstrip(".")
        if not is_safe("host", name):
            raise ValueError(
                f"{entry!r} is not a host name (letters, digits, '.', '-'), an IP address or a network"
            ) from None
        return name
    problem = never_allowed(address)
    if problem:
        raise ValueError(f"{entry} is {problem}; it cannot be declared")
    return address


def _refuse_never_allowed_network(network: IpNetwork) -> None:
    if network.is_multicast or network.is_unspecified or network.network_address.is_unspecified:
        raise ValueError(f"network {network} is multicast or unspecified; it cannot be declared")
    for address in sorted(METADATA_ADDRESSES, key=lambda each: (each.version, int(each))):
        if address.version == network.version and address in network:
            raise ValueError(f"network {network} holds the cloud metadata address {address}")


@dataclass(frozen=True)
class HttpPolicy:
    """The hosts one environment declares (``Environment.http_hosts``) and the checks derived from them."""

    names: frozenset[str] = frozenset()
    addresses: frozenset[IpAddress] = frozenset()
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[str]) -> HttpPolicy:
        names, addresses, networks = set(), set(), []
        for entry in entries:
            parsed = parse_http_host(entry)
            if isinstance(parsed, str):
                names.add(parsed)
            elif isinstance(parsed, ipaddress.IPv4Network | ipaddress.IPv6Network):
                networks.append(parsed)
            else:
                addresses.add(parsed)
        return cls(frozenset(names), frozenset(addresses), tuple(networks))

    def declares_address(self, address: IpAddress) -> bool:
        return address in self.addresses or any(
            address.version == network.version and address in network for network in self.networks
        )

    def check_url(self, url: str) -> tuple[str, str, int]:
        """``(scheme, host, port)`` of ``url`` if its host is declared; else :class:`HttpPolicyError`.

        Needs no network: this is the check made when the config is loaded.
        """
        scheme, host, port = split_url(url)
        literal = _literal_address(host)
        if literal is not None:
            problem = never_allowed(literal)
            if problem:
                raise HttpPolicyError(f"{host} is {problem}; http test cases never go there")
            if self.declares_address(literal):
                return scheme, host, port
            raise HttpPolicyError(f"address {host} is not declared in the environment's http_hosts")
        if host not in self.names:
            raise HttpPolicyError(f"host {host} is not declared in the environment's http_hosts")
        return scheme, host, port

    def address_problem(self, address: IpAddress) -> str | None:
        """Why a resolved ``address`` may not be contacted, or ``None``."""
        problem = never_allowed(address)
        if problem:
            return problem
        if self.declares_address(address):
            return None
        kind = internal_kind(address)
        if kind:
            return f"{kind}, not declared in http_hosts"
        return None

    def resolve(self, url: str, resolver: Resolver | None = None) -> tuple[str, str, int, IpAddress]:
        """Check ``url`` and every address its host resolves to; ``(scheme, host, port, address)`` to
        connect to (the first address; all of them were checked)."""
        scheme, host, port = self.check_url(url)
        literal = _literal_address(host)
        addresses = [literal] if literal is not None else list((resolver or system_resolver)(host, port))
        if not addresses:
            raise HttpPolicyError(f"{host} does not resolve to any address")
        for address in addresses:
            problem = self.address_problem(address)
            if problem:
                raise HttpPolicyError(f"{host} resolves to {address}, which is {problem}")
        return scheme, host, port, addresses[0]


def split_url(url: str) -> tuple[str, str, int]:
    """``(scheme, lower-case host, port)`` of an http(s) URL; :class:`HttpPolicyError` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise HttpPolicyError(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise HttpPolicyError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise HttpPolicyError("must not carry credentials; use an Airflow connection")
    host = parts.hostname.lower().rstrip(".")
    return scheme, host, port or (443 if scheme == "https" else 80)


# --- addresses ------------------------------------------------------------------------------------


def embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches (mapped, 6to4, NAT64, Teredo server/client), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    for network in _NAT64:
        if address in network:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def never_allowed(address: IpAddress) -> str | None:
    """Why ``address`` is never an http test case's target (even declared), or ``None``."""
    inner = embedded_ipv4(address)
    if inner is not None:
        problem = never_allowed(inner)
        return f"{problem} (as {address})" if problem else None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    return None


def internal_kind(address: IpAddress) -> str | None:
    """What kind of non-public address ``address`` is (loopback, link-local, private ...), or ``None``."""
    inner = embedded_ipv4(address)
    if inner is not None:
        kind = internal_kind(inner)
        return f"{kind} (as {address})" if kind else None
    kinds = (
        (address.is_loopback, "a loopback address (the worker itself)"),
        (address.is_link_local, "a link-local address"),
        (address.version == 6 and address in _SITE_LOCAL, "a site-local address"),
        (address.is_private, "a private-network address"),
        (address.is_reserved or not address.is_global, "a reserved or non-public address"),
    )
    return next((kind for matches, kind in kinds if matches), None)


def system_resolver(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to (TCP), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise HttpPolicyError(f"cannot resolve {host}: {error.strerror or error}") from None
    addresses: list[IpAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def literal_never_allowed(host: str) -> str | None:
    """Why ``host``, if it is an IP address, is never a target (see :func:`never_allowed`), else ``None``."""
    literal = _literal_address(host)
    return never_allowed(literal) if literal is not None else None


def _literal_address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
