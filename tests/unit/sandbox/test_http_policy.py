"""http test cases reach only the hosts their environment declares, and never the worker's neighbours."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from managed_upgrade.config import CustomerConfigError, parse_customer_config
from managed_upgrade.input_files import read_yaml_mapping
from managed_upgrade.sandbox.http_policy import (
    HttpPolicy,
    HttpPolicyError,
    embedded_ipv4,
    internal_kind,
    never_allowed,
    parse_http_host,
)

ACME = Path(__file__).resolve().parents[3] / "include" / "customers" / "acme.yaml"


def ip(text: str) -> Any:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address (the worker itself)"),
        ("127.8.9.10", "a loopback address (the worker itself)"),
        ("::1", "a loopback address (the worker itself)"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("10.1.2.3", "a private-network address"),
        ("172.16.0.1", "a private-network address"),
        ("192.168.1.1", "a private-network address"),
        ("fd12:3456::1", "a private-network address"),
        ("fec0::1", "a site-local address"),
        ("100.64.0.1", "a reserved or non-public address"),
        ("192.0.2.10", "a private-network address"),
        ("240.0.0.1", "a private-network address"),
        ("::ffff:10.0.0.1", "a private-network address (as ::ffff:a00:1)"),
        ("64:ff9b::7f00:1", "a loopback address (the worker itself) (as 64:ff9b::7f00:1)"),
        ("2002:c0a8:0101::1", "a private-network address (as 2002:c0a8:101::1)"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("93.184.216.34", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert internal_kind(ip(address)) == kind


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("::ffff:169.254.169.254", "a cloud metadata address (as ::ffff:a9fe:a9fe)"),
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("255.255.255.255", "the broadcast address"),
        ("10.0.0.1", None),
        ("8.8.8.8", None),
    ],
)
def test_never_allowed_addresses(address: str, problem: str | None) -> None:
    assert never_allowed(ip(address)) == problem


def test_embedded_ipv4_addresses_are_unwrapped() -> None:
    assert embedded_ipv4(ip("::ffff:127.0.0.1")) == ip("127.0.0.1")
    assert embedded_ipv4(ip("2002:7f00:1::")) == ip("127.0.0.1")
    assert embedded_ipv4(ip("64:ff9b::a9fe:a9fe")) == ip("169.254.169.254")
    assert embedded_ipv4(ip("2001:db8::1")) is None
    assert embedded_ipv4(ip("10.0.0.1")) is None


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("crm.acme.example", None),
        ("CRM.Acme.Example.", None),
        ("10.20.0.0/16", None),
        ("127.0.0.1", None),
        ("fd00::/48", None),
        ("0.0.0.0/0", "too wide"),
        ("10.0.0.0/7", "too wide"),
        ("::/0", "too wide"),
        ("169.254.0.0/16", "holds the cloud metadata address 169.254.169.253"),
        ("169.254.169.254", "is a cloud metadata address; it cannot be declared"),
        ("0.0.0.0", "is the unspecified address"),
        ("224.0.0.0/8", "multicast or unspecified"),
        ("10.0.0.1/8", "is not a network"),
        ("crm acme", "is not a host name"),
        ("crm;id", "is not a host name"),
        ("", "must be a host name"),
    ],
)
def test_declared_hosts(entry: str, problem: str | None) -> None:
    if problem is None:
        parse_http_host(entry)
    else:
        with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            parse_http_host(entry)


POLICY = HttpPolicy.of(["crm.acme.example", "127.0.0.1", "10.20.0.0/16", "shop.acme.example"])


def resolver(table: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[Any]:
        return [ip(address) for address in table[host]]

    return resolve


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://crm.acme.example/status", None),
        ("http://CRM.ACME.EXAMPLE:8080/x?y=1", None),
        ("http://127.0.0.1:9000/health", None),
        ("http://10.20.3.4/", None),
        ("http://other.example/", "host other.example is not declared"),
        ("http://127.0.0.2/", "address 127.0.0.2 is not declared"),
        ("http://10.21.0.1/", "address 10.21.0.1 is not declared"),
        ("http://169.254.169.254/latest/meta-data/", "is a cloud metadata address"),
        ("http://0.0.0.0:8080/", "is the unspecified address"),
        ("ftp://crm.acme.example/", "must be an http:// or https:// URL"),
        ("http://user:pw@crm.acme.example/", "must not carry credentials"),  # pragma: allowlist secret
        ("http://crm.acme.example:99999/", "not a valid URL"),
    ],
)
def test_urls_are_checked_without_the_network(url: str, problem: str | None) -> None:
    if problem is None:
        POLICY.check_url(url)
    else:
        with pytest.raises(HttpPolicyError, match=problem):
            POLICY.check_url(url)


def test_every_resolved_address_is_checked_and_the_first_is_the_one_to_connect_to() -> None:
    table = {
        "crm.acme.example": ["93.184.216.34", "2606:2800:220:1::1"],
        "shop.acme.example": ["10.20.1.1"],
    }
    assert POLICY.resolve("https://crm.acme.example/", resolver(table)) == (
        "https",
        "crm.acme.example",
        443,
        ip("93.184.216.34"),
    )
    assert POLICY.resolve("http://shop.acme.example/", resolver(table))[3] == ip("10.20.1.1")


@pytest.mark.parametrize(
    ("addresses", "problem"),
    [
        (["93.184.216.34", "127.0.0.1"], None),  # 127.0.0.1 is declared as an address
        (["93.184.216.34", "169.254.169.254"], "which is a cloud metadata address"),
        (["10.99.0.1"], "which is a private-network address, not declared in http_hosts"),
        (["192.168.0.1", "8.8.8.8"], "which is a private-network address"),
        (["::1"], "which is a loopback address (the worker itself), not declared"),
        (["::ffff:169.254.169.254"], "cloud metadata address"),
        (["fe80::1"], "link-local address"),
        ([], "does not resolve to any address"),
    ],
)
def test_a_declared_name_resolving_to_a_forbidden_address_is_refused(
    addresses: list[str], problem: str | None
) -> None:
    """DNS rebinding: a declared name is only as good as every address it resolves to right now."""
    resolve = resolver({"crm.acme.example": addresses})
    if problem is None:
        POLICY.resolve("http://crm.acme.example/", resolve)
    else:
        with pytest.raises(HttpPolicyError) as caught:
            POLICY.resolve("http://crm.acme.example/", resolve)
        assert problem in str(caught.value)


# --- at config load ------------------------------------------------------------------------------


def acme_with(url: str, **environment: Any) -> dict[str, Any]:
    data = read_yaml_mapping(ACME, CustomerConfigError)
    data["test_cases"] = [*data["test_cases"], {"id": "web", "title": "Web", "kind": "http", "url": url}]
    for env in ("dev", "uat", "prod"):
        data["environments"][env].update(environment)
    return data


def problems(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(CustomerConfigError) as caught:
        parse_customer_config(data, "acme.yaml", file_stem="acme")
    return tuple(caught.value.problems)


def test_an_undeclared_host_is_refused_when_the_config_is_loaded() -> None:
    assert problems(acme_with("http://intranet.acme.example/")) == (
        "acme.yaml: test_cases[3].url: host intranet.acme.example is not declared in the environment's "
        "http_hosts (on dev, uat, prod)",
    )
    config = parse_customer_config(
        acme_with("http://intranet.acme.example/", http_hosts=["intranet.acme.example"]),
        "acme.yaml",
        file_stem="acme",
    )
    assert config.environment("prod").http_hosts == ("intranet.acme.example",)


def test_a_metadata_address_is_refused_whatever_is_declared() -> None:
    (problem,) = problems(acme_with("http://169.254.169.254/latest/meta-data/"))
    assert problem.startswith(
        "acme.yaml: test_cases[3].url: 169.254.169.254 is a cloud metadata address; http test cases never"
    )
    assert problems(acme_with("http://crm.acme.example/", http_hosts=["169.254.169.254"]))[0] == (
        "acme.yaml: environments.dev.http_hosts[0]: 169.254.169.254 is a cloud metadata address; it "
        "cannot be declared"
    )


def test_a_private_literal_address_must_be_declared_as_an_address() -> None:
    (problem,) = problems(acme_with("http://10.1.2.3/health"))
    assert "address 10.1.2.3 is not declared" in problem
    parse_customer_config(
        acme_with("http://10.1.2.3/health", http_hosts=["10.1.0.0/16"]), "acme.yaml", file_stem="acme"
    )
