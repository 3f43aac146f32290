"""Credentials at rest: a node's private key or BMC password is sealed (Fernet: AES-128-CBC with
an HMAC-SHA256, from the maintained ``cryptography`` package) before it is stored, and opened
only by the driver at the moment it connects. A sealed value is never returned, logged, or put
in an audit entry; ``repr`` of a box shows no key.

The key comes from ``NEOCLOUD_SECRET_KEY`` (a urlsafe-base64 32-byte Fernet key) or from a key
file the platform creates under its data directory with mode 0600 on first start (see
``api.platform.secret_box``). Losing the key loses the sealed credentials, nothing else: an
operator registers the nodes' credentials again.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class SealedSecretError(ValueError):
    """A sealed value could not be opened (another key, or tampered with)."""


class SecretBox:
    def __init__(self, key: bytes | str) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                "the secret key must be 32 bytes in urlsafe base64 (Fernet.generate_key())"
            ) from exc

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @staticmethod
    def new_key() -> bytes:
        return Fernet.generate_key()

    def seal(self, values: dict[str, Any]) -> str:
        """Seal a small mapping of credentials (JSON inside) into one opaque token."""
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode("ascii")

    def open(self, token: str) -> dict[str, Any]:
        try:
            data = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, ValueError) as exc:
            raise SealedSecretError(
                "sealed credentials cannot be opened with this platform's secret key"
            ) from exc
        if not isinstance(data, dict):
            raise SealedSecretError("sealed credentials are not a mapping")
        return data
