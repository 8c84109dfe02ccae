"""Which webhook URLs may be called: http(s) only, and no private network unless allowed.

A URL whose host is, or resolves to, a loopback, private, link-local, multicast, reserved or
unspecified address is refused unless the operator allows private URLs
(`METERSTREAM_ALERTS_ALLOW_PRIVATE_URLS`): otherwise a tenant could make the service call into
the operator's own network. The check runs when an endpoint is saved and again before every
attempt, since a name can later resolve elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

Resolver = Callable[[str], list[str]]
MAX_URL_LENGTH = 2048


def resolve(host: str) -> list[str]:
    """Every address `host` resolves to (empty if it does not)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def url_problem(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> str | None:
    """Why `url` may not be a webhook endpoint, or None if it may.

    >>> url_problem("ftp://example.com/x", allow_private=True)
    'the URL must start with https:// or http://'
    >>> url_problem("http://127.0.0.1:9/hook", allow_private=False)
    '127.0.0.1 is a loopback, private or reserved address (not allowed on this service)'
    >>> url_problem("http://127.0.0.1:9/hook", allow_private=True) is None
    True
    """
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("https", "http"):
        return "the URL must start with https:// or http://"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if parts.username or parts.password:
        return "the URL may not carry a user name or password"
    del port
    if allow_private:
        return None
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolver(host)
        if not addresses:
            return f"{host} does not resolve"
    bad = [a for a in addresses if _private(a)]
    if bad:
        return f"{bad[0]} is a loopback, private or reserved address (not allowed on this service)"
    return None
