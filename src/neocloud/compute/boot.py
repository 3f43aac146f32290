"""What a tenant's machine boots with, checked before anything is stored (pure).

An instance or cluster names an image of the operator's catalog, the SSH keys to install (ids of
the org's keys, and raw public key lines) and optional user data. Each check here raises
``ValidationFailed`` naming the request field, with a sentence that says how to fix it:

* ``user_data``: at most 64 KiB in UTF-8 bytes; a script (``#!``, run once as root at first
  boot) or a ``#cloud-config`` document, which must be a YAML mapping and needs an image with
  cloud-init;
* ``ssh_keys``: each line a valid OpenSSH public key (``tenancy.ssh_key_format``'s rules);
* image fields (operator's publish): a name of 1 to 64 of ``a-z 0-9 . _ -``, a POSIX login user
  that is not a system account, and drivers from ``DRIVERS``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import yaml

from neocloud.kernel.errors import ValidationFailed
from neocloud.tenancy.ssh_key_format import ParsedKey, parse_public_key

USER_DATA_MAX_BYTES = 64 * 1024
SCRIPT = "#!"
CLOUD_CONFIG = "#cloud-config"

IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LOGIN_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Accounts an image must not name as its login user: the driver creates the login user at
# provision and deletes it, its home and its processes at deprovision.
SYSTEM_USERS = frozenset(
    {"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
     "proxy", "www-data", "backup", "list", "irc", "nobody", "sshd", "systemd-network",
     "messagebus", "_apt", "postgres"}
)  # fmt: skip
DRIVERS = ("sim", "ssh", "redfish")


# ------------------------------------------------------------------------------------ user data


def check_user_data(text: str | None, *, image: str | None, cloud_init: bool) -> str | None:
    """``text`` if it is user data the image can run, else ``ValidationFailed`` (``user_data``).

    ``image`` is the image's name (None: no catalog image), ``cloud_init`` whether it has
    cloud-init."""
    if text is None:
        return None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad("user_data is not valid UTF-8 text") from None
    if size > USER_DATA_MAX_BYTES:
        raise _bad(
            f"user_data is {size} bytes in UTF-8; at most {USER_DATA_MAX_BYTES} (64 KiB)",
            code="user_data_too_large",
        )
    first = text.split("\n", 1)[0].rstrip("\r")
    if first.startswith(SCRIPT):
        return text
    if first.rstrip() == CLOUD_CONFIG:
        if not cloud_init:
            where = f"image {image}" if image else "the machine (no image was named)"
            raise _bad(
                f"#cloud-config user data needs cloud-init, and {where} has no cloud-init; "
                "send a #! script instead, or name an image with cloud_init true",
                code="cloud_init_unavailable",
            )
        _check_cloud_config(text)
        return text
    raise _bad(
        "user_data must start with #! (a script run once as root at first boot) "
        "or with a #cloud-config line (a cloud-init document)"
    )


def _check_cloud_config(text: str) -> None:
    try:
        # safe_load builds no Python objects but plain ones; aliases share, never copy.
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise _bad(f"user_data is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise _bad("user_data nests too deeply to be a cloud-config document") from None
    if not isinstance(doc, dict):
        raise _bad(
            "a #cloud-config document is a YAML mapping (keys such as packages:, runcmd:), "
            f"not {'an empty document' if doc is None else type(doc).__name__}"
        )


def _bad(message: str, *, code: str = "invalid_user_data") -> ValidationFailed:
    return ValidationFailed(message, code=code, param="user_data")


# ------------------------------------------------------------------------------------- ssh keys


def parse_inline_keys(lines: Sequence[str]) -> list[ParsedKey]:
    """Each public key line parsed and normalized; the first bad one is ``ValidationFailed``
    naming ``ssh_keys`` (its position in the message, never the text of what was sent)."""
    parsed = []
    for i, line in enumerate(lines):
        try:
            parsed.append(parse_public_key(line))
        except ValidationFailed as exc:
            raise ValidationFailed(
                f"ssh_keys[{i}]: {exc.message}", code=exc.code, param="ssh_keys"
            ) from None
    return parsed


def merge_keys(resolved: Iterable[str], inline: Iterable[ParsedKey]) -> list[str]:
    """The key lines to install: the org's keys (``resolved``, already normalized) then the
    inline ones, each key once (by fingerprint; the first spelling wins)."""
    seen: set[str] = set()
    lines = []
    for key in [*(parse_public_key(line) for line in resolved), *inline]:
        if key.fingerprint not in seen:
            seen.add(key.fingerprint)
            lines.append(key.line)
    return lines


# ------------------------------------------------------------------------------- image catalog


def check_image_name(name: str, *, param: str = "name") -> str:
    if not IMAGE_NAME.fullmatch(name):
        raise ValidationFailed(
            "an image name is 1 to 64 characters of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit",
            code="invalid_image_name",
            param=param,
        )
    return name


def check_login_user(name: str) -> str:
    if not LOGIN_USER.fullmatch(name):
        raise ValidationFailed(
            "login_user is a POSIX user name: a lowercase letter or '_' first, then up to 31 "
            "of a-z, 0-9, '_' and '-'",
            code="invalid_login_user",
            param="login_user",
        )
    if name in SYSTEM_USERS:
        raise ValidationFailed(
            f"login_user {name!r} is a system account; the driver creates the login user for "
            "each tenant and removes it afterwards, so name an ordinary user (e.g. ubuntu)",
            code="invalid_login_user",
            param="login_user",
        )
    return name


def check_drivers(drivers: Sequence[str]) -> list[str]:
    unknown = [d for d in drivers if d not in DRIVERS]
    if unknown or not drivers:
        raise ValidationFailed(
            f"drivers is a non-empty list of {', '.join(DRIVERS)}"
            + (f"; unknown: {', '.join(sorted(set(unknown)))}" if unknown else ""),
            code="invalid_drivers",
            param="drivers",
        )
    return list(dict.fromkeys(drivers))
