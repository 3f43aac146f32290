"""OpenSSH public keys: parse, validate, normalize and fingerprint one ``authorized_keys`` line.

Pure: text in, a ``ParsedKey`` out, or a ``ValidationFailed`` naming ``public_key`` with a
sentence that says what is wrong and how to fix it. The key itself is parsed by the
``cryptography`` package (``load_ssh_public_key``), so a truncated or altered key is refused
here rather than by ``sshd`` on the tenant's node.

Accepted: ``ssh-ed25519``, ``ecdsa-sha2-nistp256``/``384``/``521`` and ``ssh-rsa`` of 2048 to
16384 bits. Refused with their own message: DSA (OpenSSH disabled it), certificates and
security-key (``sk-…``) keys (not supported yet), RSA under 2048 bits, the RFC 4716 and PEM
forms of a public key (with the ``ssh-keygen`` line that converts them), and anything that looks
like a private key, whose text is never repeated back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from neocloud.kernel.errors import ValidationFailed

PARAM = "public_key"
MAX_LINE_BYTES = 16_384  # the request field's bound too (``web.fields.SSH_KEY_MAX``)
MAX_COMMENT_CHARS = 200
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 16_384  # OpenSSH's own maximum
ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
ECDSA_BITS = {"ecdsa-sha2-nistp256": 256, "ecdsa-sha2-nistp384": 384, "ecdsa-sha2-nistp521": 521}
KEY_TYPES = (ED25519, *ECDSA_BITS, RSA)
ACCEPTED = "ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (2048 bits or more)"

_TYPE_WORD = re.compile(r"^[A-Za-z0-9@._+-]{1,64}$")
# A private key's PEM armour, PuTTY's two formats, and the base64 of "openssh-key-v1" that opens
# an OpenSSH private key's body (pasted without its armour).
_PRIVATE = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|PuTTY-User-Key-File-|SSH PRIVATE KEY FILE FORMAT"
    r"|b3BlbnNzaC1rZXktdjE"
)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ParsedKey:
    """A valid public key: ``line`` is what is stored and installed (``TYPE BASE64 [comment]``),
    ``fingerprint`` what ``ssh-keygen -l`` prints (``SHA256:…``), ``bits`` its size."""

    key_type: str
    bits: int
    line: str
    fingerprint: str
    comment: str


def _refuse(message: str, code: str = "invalid_ssh_key") -> ValidationFailed:
    return ValidationFailed(message, code=code, param=PARAM)


def fingerprint(blob: bytes) -> str:
    """``SHA256:`` and the unpadded base64 of the SHA-256 of the key's binary form, as
    ``ssh-keygen -l -E sha256`` prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def parse_public_key(text: str) -> ParsedKey:
    """Parse and validate one OpenSSH public key line; raise ``ValidationFailed`` (``public_key``).

    The stored line is re-encoded from the parsed key, so two spellings of one key (extra
    spaces, another comment) have one line body and one fingerprint; the comment is kept with
    runs of whitespace made one space, cut to 200 characters.
    """
    text = text.strip()
    _check_shape(text)
    parts = text.split(maxsplit=2)
    key_type = parts[0]
    _check_type(key_type)
    if len(parts) < 2:
        raise _refuse(f"the {key_type} key has no data: expected '{key_type} AAAA… [comment]'")
    blob = _decode(key_type, parts[1])
    key = _load(key_type, parts[1], blob)
    bits = _bits(key_type, key)
    canonical = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    body = canonical.decode("ascii")
    comment = _WHITESPACE.sub(" ", parts[2]).strip()[:MAX_COMMENT_CHARS] if len(parts) > 2 else ""
    canonical_blob = base64.b64decode(body.split()[1])
    return ParsedKey(
        key_type=key_type,
        bits=bits,
        line=f"{body} {comment}" if comment else body,
        fingerprint=fingerprint(canonical_blob),
        comment=comment,
    )


def _check_shape(text: str) -> None:
    if _PRIVATE.search(text):
        raise _refuse(
            "this looks like a PRIVATE key: never share it. Send the public key instead, the "
            "'.pub' file next to it (e.g. ~/.ssh/id_ed25519.pub), or print it with "
            "'ssh-keygen -y -f <private key file>'",
            code="private_key_given",
        )
    if not text:
        raise _refuse("the public key is empty")
    if len(text.encode("utf-8")) > MAX_LINE_BYTES:
        raise _refuse(f"a public key is at most {MAX_LINE_BYTES} bytes")
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise _refuse(
            "this is an RFC 4716 (SSH2) public key; convert it to OpenSSH form with "
            "'ssh-keygen -i -f <file>'",
            code="unsupported_key_format",
        )
    if "BEGIN PUBLIC KEY" in text or "BEGIN RSA PUBLIC KEY" in text:
        raise _refuse(
            "this is a PEM public key; convert it to OpenSSH form with "
            "'ssh-keygen -i -m PKCS8 -f <file>'",
            code="unsupported_key_format",
        )
    if "\n" in text or "\r" in text:
        raise _refuse("a public key is one line, 'TYPE BASE64 [comment]'; send one key per request")


def _check_type(key_type: str) -> None:
    if key_type in KEY_TYPES:
        return
    if not _TYPE_WORD.match(key_type):
        raise _refuse(
            "the key must start with its type ("
            + ACCEPTED
            + "); authorized_keys options before it are not accepted",
            code="unsupported_key_type",
        )
    if key_type == "ssh-dss":
        reason = "DSA keys are not accepted (OpenSSH disabled them); use ssh-ed25519"
    elif "-cert-" in key_type:
        reason = f"{key_type} is a certificate; send the plain public key"
    elif key_type.startswith("sk-"):
        reason = f"security-key ({key_type}) keys are not supported yet"
    else:
        reason = f"unknown key type {key_type!r}"
    raise _refuse(f"{reason}; accepted: {ACCEPTED}", code="unsupported_key_type")


def _decode(key_type: str, data: str) -> bytes:
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(
            f"the {key_type} key's base64 data is not valid: truncated or altered? "
            "Copy the whole line of the '.pub' file"
        ) from None
    if len(blob) < 4:
        raise _refuse(f"the {key_type} key's data is too short: truncated?")
    (size,) = struct.unpack(">I", blob[:4])
    inner = blob[4 : 4 + size]
    if size > 64 or len(inner) != size or not _TYPE_WORD.match(inner.decode("latin-1")):
        raise _refuse(f"the {key_type} key's data does not start with its type: not a key?")
    named = inner.decode("ascii")
    if named != key_type:
        raise _refuse(f"the line says {key_type} but its data is a {named} key")
    return blob


def _load(key_type: str, data: str, blob: bytes) -> serialization.SSHPublicKeyTypes:
    try:
        return serialization.load_ssh_public_key(f"{key_type} {data}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise _refuse(
            f"the {key_type} key's data is not a valid key ({len(blob)} bytes): truncated or "
            "altered? Copy the whole line of the '.pub' file"
        ) from None


def _bits(key_type: str, key: serialization.SSHPublicKeyTypes) -> int:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < RSA_MIN_BITS:
            raise _refuse(
                f"RSA keys must be at least {RSA_MIN_BITS} bits; this one has {bits}. "
                "Make a new key: 'ssh-keygen -t ed25519'",
                code="ssh_key_too_short",
            )
        if bits > RSA_MAX_BITS:
            raise _refuse(
                f"RSA keys may be at most {RSA_MAX_BITS} bits; this one has {bits}",
                code="ssh_key_too_long",
            )
        return bits
    raise _refuse(f"unknown key type {key_type!r}; accepted: {ACCEPTED}")  # pragma: no cover
