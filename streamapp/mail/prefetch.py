"""Known mail-privacy prefetchers (SPEC §8): opens they make are a machine's, not a reader's.

Mail providers fetch a message's images themselves, on delivery or when the message is listed,
whether or not anyone reads it. Those fetches are recognised by their user agent or their address:

- Apple Mail Privacy Protection fetches through Apple's proxies with the bare user agent
  `Mozilla/5.0` (no platform, no engine: no browser sends that) from Apple's network 17.0.0.0/8;
- Gmail's image proxy says `GoogleImageProxy` (`… (via ggpht.com GoogleImageProxy)`) and fetches
  from 66.102.0.0/20 and 66.249.80.0/20;
- Yahoo's proxy says `YahooMailProxy`.

The address is the peer's, or the first address of `X-Forwarded-For` when a reverse proxy sets it:
a client that forges it changes only how its own open is classed. Opens within MACHINE_SECONDS of
delivery are machine opens too (streamapp.sending.tracking), which catches prefetchers not listed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: User agents of prefetching proxies (substrings), and Apple's exact one.
USER_AGENTS = ("GoogleImageProxy", "YahooMailProxy")
APPLE_USER_AGENT = "Mozilla/5.0"
NETWORKS = tuple(ipaddress.ip_network(n) for n in ("17.0.0.0/8", "66.102.0.0/20", "66.249.80.0/20"))


def is_prefetcher(user_agent: str | None, addresses: Iterable[str | None]) -> bool:
    """Whether a request with this user agent, from the first parsable of `addresses`, is a known prefetcher."""
    agent = (user_agent or "").strip()
    if agent == APPLE_USER_AGENT or any(name in agent for name in USER_AGENTS):
        return True
    for text in addresses:
        address = _address(text)
        if address is not None:
            return any(address in network for network in NETWORKS)
    return False


def client_addresses(forwarded_for: str | None, peer: str | None) -> list[str | None]:
    """The addresses to judge a request by: the client named by a reverse proxy first, then the peer."""
    first = forwarded_for.split(",", 1)[0].strip() if forwarded_for else None
    return [first, peer]


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text or len(text) > 64:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
