"""Typed, prefixed, sortable identifiers.

An id is ``<prefix>_<26 Crockford base32 characters>``: 48 bits of milliseconds since the Unix
epoch followed by 80 random bits (the ULID layout). Ids made by one process sort by creation time,
so lists ordered by id come back in creation order and make stable pagination cursors.

Ids that something is keyed on and that a caller could otherwise guess (request ids, which
billing uses as the idempotency key of a request's usage) are ``random_id``: 96 bits from the
operating system's CSPRNG and nothing else, so two processes never share a sequence and no id
says anything about the next one.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_RE = re.compile(r"^(?P<prefix>[a-z][a-z0-9]{0,7})_(?P<body>[0-9A-HJKMNP-TV-Z]{26})$")

# One table so that prefixes never collide and readers can look up what a prefix means.
PREFIXES: dict[str, str] = {
    "org": "organization",
    "prj": "project",
    "usr": "user",
    "key": "api key",
    "mem": "membership",
    "quo": "quota",
    "aud": "audit event",
    "node": "node",
    "evt": "event",
    "hc": "health check",
    "imp": "fleet import",
    "inst": "instance",
    "clu": "cluster",
    "rsv": "reservation",
    "off": "offering",
    "alc": "allocation",
    "inv": "invoice",
    "pb": "price book",
    "use": "usage event",
    "line": "invoice line",
    "ctr": "billing contract",
    "cred": "credit grant",
    "cn": "credit note",
    "req": "request",
    "usg": "studio usage record",
    "sshkey": "ssh key",
    "db": "managed database",
    "dbbak": "database backup",
    "dbuse": "database usage span",
    "pool": "storage pool",
    "fs": "filesystem",
    "fsa": "filesystem attachment",
}

_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str, *, at: datetime | None = None) -> str:
    """Return a new id with ``prefix``; ``at`` sets its time part (default: now).

    Within one process ids made in the same millisecond still increase (the random part grows
    by a random step of 1 to 2^32), so ordering by id is ordering by creation and an id does
    not give away the next one.
    """
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}; register it in kernel.ids.PREFIXES")
    global _last_ms, _last_rand
    ms = int(at.timestamp() * 1000) if at is not None else _now_ms()
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1 + secrets.randbits(32)) & ((1 << 80) - 1)
        else:
            rand = secrets.randbits(80)
        _last_ms, _last_rand = ms, rand
    return f"{prefix}_{_encode(ms, 10)}{_encode(rand, 16)}"


# Random bytes in a ``random_id``: 96 bits, so a collision among 10^12 ids has a chance under
# 10^-5, and guessing the next id is guessing 96 bits.
RANDOM_ID_BYTES = 12


def random_id(prefix: str, *, sep: str = "_") -> str:
    """``<prefix><sep><24 hex digits>``: 96 random bits from ``secrets`` (one ``getrandom``
    call, about a microsecond), no counter, no time, no per-process state; e.g.
    ``random_id("req")`` is a request id, ``random_id("chatcmpl", sep="-")`` a chat id."""
    return f"{prefix}{sep}{secrets.token_hex(RANDOM_ID_BYTES)}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_id(value: str, expected_prefix: str | None = None) -> tuple[str, str]:
    """Split ``value`` into ``(prefix, body)``; raise ``ValueError`` if malformed."""
    match = _ID_RE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a neocloud id")
    prefix = match.group("prefix")
    if expected_prefix is not None and prefix != expected_prefix:
        raise ValueError(f"{value!r} is not a {PREFIXES.get(expected_prefix, expected_prefix)} id")
    return prefix, match.group("body")


def is_id(value: str, prefix: str | None = None) -> bool:
    try:
        parse_id(value, prefix)
    except ValueError:
        return False
    return True
