"""Who is asking: the client address behind SUPERVISOR_TRUSTED_PROXIES."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.access import client_address
from app.config import Settings

TRUSTED = Settings(_env_file=None, TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.7").trusted_proxies


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # Not from a trusted proxy: whatever it claims, the peer is the client.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        # From the proxy: the address it appended, not what the client wrote before it.
        ("10.1.1.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        # Two trusted hops: the right-most address that is not one of them.
        ("10.1.1.1", ["6.6.6.6", "198.51.100.1, 192.168.1.7"], "198.51.100.1"),
        # Ports some proxies add, IPv6 in brackets.
        ("10.1.1.1", ["198.51.100.1:4711"], "198.51.100.1"),
        ("10.1.1.1", ["[2001:db8::5]:4711"], "2001:db8::5"),
        # No header, or only proxies in it: the furthest proxy known.
        ("10.1.1.1", [], "10.1.1.1"),
        ("10.1.1.1", ["10.2.2.2, 10.3.3.3"], "10.2.2.2"),
        # Garbage where a trusted proxy would have written an address: stop believing there.
        ("10.1.1.1", ["198.51.100.1, not-an-address"], "10.1.1.1"),
    ],
)
def test_the_client_is_the_right_most_untrusted_address(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert client_address(peer, forwarded_for, TRUSTED) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    untrusting = Settings(_env_file=None).trusted_proxies
    assert client_address("127.0.0.1", ["198.51.100.1"], untrusting) == "127.0.0.1"


def test_a_bad_proxy_entry_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match=r"SUPERVISOR_TRUSTED_PROXIES: 'proxy\.internal'"):
        Settings(_env_file=None, TRUSTED_PROXIES="10.0.0.0/8, proxy.internal")
