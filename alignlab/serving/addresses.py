"""Who a request comes from, as the fair share of the line counts it: an address the visitor cannot choose.

``X-Forwarded-For`` is a list each proxy *appends* to: the address it saw the request come from. Its first entry
is whatever the client wrote, so only the entries the owner's own proxies appended can be believed. The address
counted is the one the farthest trusted proxy saw: counted from the right of the header by the number of proxies
in front of the app (``ALIGNLAB_TRUSTED_PROXIES``; by default one where the Space sets ``SPACE_ID`` and none
elsewhere, where the address is the socket's peer). A logged-in visitor is counted by their account instead.

Uvicorn, which Gradio serves with, rewrites the peer itself from ``X-Forwarded-For`` when the peer is in its
``FORWARDED_ALLOW_IPS`` (by default the loopback address): :func:`keep_the_peer` turns that off unless the owner
set it, so the lab's own reading of the header is the only one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: The setting, and the value uvicorn's trusted hosts take when it is not set: no host (the peer is left alone).
TRUSTED_PROXIES_VARIABLE = "ALIGNLAB_TRUSTED_PROXIES"
_UVICORN_TRUST = "FORWARDED_ALLOW_IPS"


@dataclass(frozen=True)
class Visitor:
    """Who a request is counted as: an account, or a network address (``kind``: ``"account"`` or ``"address"``)."""

    kind: str
    name: str

    @property
    def key(self) -> str:
        """The key visitors are grouped by (an account and an address never share one)."""
        return f"{self.kind}:{self.name}" if self.name else ""

    def text(self) -> str:
        """The visitor as the page names them to themselves."""
        if self.kind == "account":
            return f"your account **{self.name}**"
        return "your network address"


def trusted_proxies() -> int:
    """How many proxies in front of the app append to ``X-Forwarded-For`` (``ALIGNLAB_TRUSTED_PROXIES``): by
    default 1 on a Space (``SPACE_ID`` set) and 0 elsewhere; a value that is not a whole number >= 0 is the
    default."""
    default = 1 if os.environ.get("SPACE_ID") else 0
    try:
        value = int(os.environ.get(TRUSTED_PROXIES_VARIABLE, "").strip())
    except ValueError:
        return default
    return value if value >= 0 else default


def forwarded_address(forwarded: str, peer: str, proxies: int) -> str:
    """The address the farthest of ``proxies`` trusted proxies saw: the ``proxies``-th entry of ``forwarded``
    (``X-Forwarded-For``) from the right; the socket's ``peer`` where no proxy is trusted or none appended one.

    With fewer entries than trusted proxies, every entry was appended by one of them, and the first is the farthest.
    """
    entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()] if forwarded else []
    if proxies <= 0 or not entries:
        return peer
    return entries[-proxies] if len(entries) >= proxies else entries[0]


def keep_the_peer() -> None:
    """Keep uvicorn from rewriting the peer from ``X-Forwarded-For`` (before the server starts), unless the owner
    configured its trusted hosts themselves."""
    os.environ.setdefault(_UVICORN_TRUST, "")
