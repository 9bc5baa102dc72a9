"""The SSRF guard: which links may be fetched, and the addresses a connection may go to.

A host is resolved once per judgement and every address it resolves to is judged; the guarded
yt-dlp session (engine.guarded_ytdlp) connects only to the addresses judged here, so a name that
answers differently the second time (DNS rebinding) cannot slip past. Errors name the host
only, never the link: its path and query string may carry secrets.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from engine.protocol import SubtideError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# One entry of socket.getaddrinfo: (family, type, proto, canonname, sockaddr).
AddrInfo = tuple[Any, ...]
# socket.getaddrinfo, or a stand-in with its signature (tests answer names themselves).
Resolver = Callable[..., list[AddrInfo]]

_METADATA_HOSTS = frozenset({"metadata.google.internal"})
_METADATA_IPS = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
# Not global, yet not flagged by every Python's ipaddress: carrier-grade NAT, and local-use
# NAT64 (RFC 8215), whose translator reaches whatever IPv4 network it sits in.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_ALSO_PRIVATE = (ipaddress.ip_network("100.64.0.0/10"), _LOCAL_NAT64)
# IPv6 forms that only spell an IPv4 host: a connection to them reaches that host (dual-stack
# sockets, NAT64 translators), so the IPv4 address is what is judged.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_AMBIGUOUS = re.compile(r"[\\\s\x00-\x1f\x7f]")


class UrlGuard:
    """Judges links and the addresses behind them for one session.

    `allow_private` lets private, loopback and link-local addresses through (a desktop, or a
    server on a trusted network); cloud metadata endpoints are refused even then: they hand out
    credentials to anything on the machine that asks. `resolver` answers host names (default:
    the system's); every address it answers is judged.
    """

    def __init__(self, *, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> None:
        self.allow_private = allow_private
        self._resolver = resolver

    def check_url(self, url: str) -> None:
        """Refuse links that are not http(s) or whose host is a refused address."""
        self.addresses(host_of(url), None)

    def addresses(self, host: str, port: int | None) -> list[AddrInfo]:
        """`host` resolved once, for a TCP connection to `port`: every answer has been judged,
        so a connection may go to any of them. Refused if any answer is refused."""
        host = host.strip("[]").rstrip(".")
        if host.lower() in _METADATA_HOSTS:
            raise refused(host)
        try:
            answers = self._resolver(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):  # UnicodeError: a name the IDNA codec rejects
            answers = []
        if not answers:
            raise SubtideError(
                "source_unavailable",
                f"Could not resolve host {host}",
                "check the URL and your connection",
            )
        for *_, sockaddr in answers:
            if is_refused(ipaddress.ip_address(sockaddr[0]), allow_private=self.allow_private):
                raise refused(host)
        return answers


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse links that are not http(s) or that point into a private network (see UrlGuard)."""
    UrlGuard(allow_private=allow_private).check_url(url)


def is_refused(address: Address, *, allow_private: bool) -> bool:
    """Whether a connection to `address` is refused: it, or an IPv4 address it carries, is
    cloud metadata, or private while private addresses are not allowed."""
    return any(
        candidate in _METADATA_IPS or (not allow_private and _is_private(candidate))
        for candidate in _destinations(address)
    )


def _destinations(address: Address) -> list[Address]:
    """The hosts a connection to `address` reaches or passes through."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    if address.ipv4_mapped:
        return [address.ipv4_mapped]
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        return [_last_32_bits(address)]
    # Tunnels reach an IPv6 host through the IPv4 hosts they name: 6to4 through its relay,
    # Teredo through its server and the client's NAT (both count). Local-use NAT64 may put the
    # IPv4 address in several places; the usual /96 one is checked for metadata.
    carried = [address.sixtofour, *(address.teredo or ())]
    if address in _LOCAL_NAT64:
        carried.append(_last_32_bits(address))
    return [address, *(ipv4 for ipv4 in carried if ipv4 is not None)]


def _last_32_bits(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)


def _is_private(address: Address) -> bool:
    return (
        not address.is_global  # also covers documentation and benchmark ranges
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or any(address in network for network in _ALSO_PRIVATE)
    )


def host_of(url: str) -> str:
    """The host name of an http(s) link, refusing anything else."""
    # Parsers disagree on these: urllib3 reads "http://10.0.0.1\@example.com" as host 10.0.0.1,
    # urlsplit as example.com. Real links percent-encode them, so refusing them costs nothing.
    if _AMBIGUOUS.search(url.strip()):
        raise SubtideError(
            "unsupported_source",
            "The link contains spaces, backslashes or control characters",
            "copy the link again from the address bar",
        )
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise SubtideError(
            "unsupported_source", "The link is not a valid URL", "check the URL"
        ) from None
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"'{parts.scheme}:' links" if parts.scheme else "links without http:// or https://"
        raise SubtideError(
            "unsupported_source",
            f"Only http and https links can be downloaded, not {shown}",
            "paste the full address of the video page, starting with https://",
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise SubtideError("unsupported_source", "The link has no host name", "check the URL")
    return host


def refused(host: str) -> SubtideError:
    return SubtideError(
        "unsupported_source",
        f"Refusing to download from {host}: it is a private, local or cloud metadata address",
        "only public addresses are allowed; downloads from private networks can be enabled "
        "in the settings of a server you run yourself",
    )
