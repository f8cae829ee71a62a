"""The VERP return path (SPEC §11): `<local>+<messageId>-<mac>@<bounce_domain>`.

A bounce arrives at the envelope sender, long after the relay answered 250; the address itself
names the message, so the listener needs no lookup table and no state. The MAC (HMAC of the
message id with the deployment's key ring, 40 bits) keeps anyone who can send mail to the bounce
domain from bouncing recipients of their choosing: a made-up or altered address names no message.
Message ids are lower-case hex and digits, so an MTA that changes the case of the local part
changes nothing; the whole local part stays within RFC 5321's 64 octets for a `local` of up to
MAX_LOCAL characters.
"""

from __future__ import annotations

import hashlib
import hmac

from streamapp.core.ids import partition_of
from streamapp.settings import KeyRing

_CONTEXT = b"streamapp-return-path\0"
MAC_HEX = 10
#: The longest `local`: `local` + "+" + the longest id (44) + "-" + MAC_HEX is RFC 5321's 64.
MAX_LOCAL = 64 - 1 - 44 - 1 - MAC_HEX


def _mac(key: bytes, message_id: str) -> str:
    return hmac.new(key, _CONTEXT + message_id.encode(), hashlib.sha256).hexdigest()[:MAC_HEX]


def return_path(local: str, domain: str, message_id: str, ring: KeyRing) -> str:
    """The envelope sender of message `message_id`."""
    if not 0 < len(local) <= MAX_LOCAL or "+" in local:
        raise ValueError(f"the return path's local part must be 1 to {MAX_LOCAL} characters without '+'")
    return f"{local}+{message_id}-{_mac(ring.signing, message_id)}@{domain}"


def message_of(address: str, local: str, domain: str, ring: KeyRing) -> str | None:
    """The message id a bounce's recipient address names, or None for any other address (another domain,
    another local part, a malformed or altered token): an answer for every key of the ring, so a bounce of
    mail sent before a key rotation is still read."""
    user, at, host = address.strip().strip("<>").rpartition("@")
    if not at or host.lower().rstrip(".") != domain.lower():
        return None
    prefix, plus, token = user.lower().partition("+")
    message_id, dash, mac = token.rpartition("-")
    if prefix != local.lower() or not plus or not dash or partition_of(message_id) is None:
        return None
    if any(hmac.compare_digest(mac, _mac(key, message_id)) for key in ring.verifying):
        return message_id
    return None
