"""A node's driver settings: which driver runs it, how to reach it, and its credentials.

The same checks serve ``POST /api/v1/nodes`` and the fleet spec file. A setting that is not
secret (an address, a port, a user) is stored in ``nodes.driver_config`` and shown to operators;
a credential (today the SSH private key) is returned apart, for the caller to seal with the
platform's secret box into ``nodes.driver_secret``: it is write-only, and no message raised here
ever quotes it.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from neocloud.kernel.errors import ValidationFailed
from neocloud.web.fields import Clean, CleanText

# The drivers a node may name. Which of them may share a node between workloads is the
# drivers package's business (``drivers.base.SHARING_DRIVERS``): fleet sits below it.
DRIVER_NAMES: tuple[str, ...] = ("sim", "ssh")
GPU_CHECKS: tuple[str, ...] = ("nvidia-smi", "none")
MAX_PRIVATE_KEY_BYTES = 16 * 1024
MAX_HOST_KEY_CHARS = 16 * 1024
MAX_SCRATCH_PATHS = 8
MAX_PATH_CHARS = 4096
MAX_REBOOT_COMMAND = 256
# A wipe empties the scratch paths: never the system's own directories, nor anything under them.
FORBIDDEN_ROOTS: tuple[str, ...] = (
    "/etc", "/usr", "/bin", "/sbin", "/boot", "/proc", "/sys", "/dev", "/var", "/root",
    "/home", "/run", "/opt",
)  # fmt: skip
DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
POSIX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
CREDENTIAL_FIELDS: tuple[str, ...] = ("private_key",)


class DriverConfigIn(BaseModel):
    """How the driver reaches a node (``ssh``: every field but ``address`` and ``private_key``
    has a default; ``sim`` takes none of them)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    address: Clean | None = Field(
        None, min_length=1, max_length=253, description="IP literal or DNS name of the server"
    )
    port: StrictInt | None = Field(None, ge=1, le=65535, description="SSH port (default 22)")
    user: Clean | None = Field(
        None, min_length=1, max_length=32, description="the POSIX user to log in as (root)"
    )
    private_key: CleanText | None = Field(
        None,
        min_length=1,
        max_length=MAX_PRIVATE_KEY_BYTES,
        description="an unencrypted OpenSSH or PEM private key; write-only (sealed, never "
        "returned)",
    )
    gpu_check: Literal["nvidia-smi", "none"] | None = Field(
        None, description="how health checks the declared GPUs (none: hosts without GPUs)"
    )
    sudo: StrictBool | None = Field(
        None, description="whether the tenant's login user gets passwordless sudo (true)"
    )
    scratch_paths: list[Annotated[Clean, Field(min_length=1, max_length=MAX_PATH_CHARS)]] | None = (
        Field(None, max_length=MAX_SCRATCH_PATHS, description="directories a wipe empties")
    )
    host_key: Clean | None = Field(
        None,
        min_length=1,
        max_length=MAX_HOST_KEY_CHARS,
        description="the server's OpenSSH public host key line (the driver checks it)",
    )
    reboot_command: Clean | None = Field(
        None, min_length=1, max_length=MAX_REBOOT_COMMAND, description="default: reboot"
    )
    agent_recorded: Literal["h100", "h200", "h100-ecc", "h100-lost-gpu"] | None = Field(
        None,
        description="the node agent replays this recorded GPU source instead of NVML "
        "(reported simulated: test hosts, servers without GPUs)",
    )


class SpecDriverConfig(DriverConfigIn):
    """A node's driver settings in a fleet spec: as the API takes them, or the private key
    as a file relative to the spec file."""

    private_key_file: Clean | None = Field(None, min_length=1, max_length=MAX_PATH_CHARS)


@dataclass(frozen=True)
class DriverSettings:
    """What a node's driver settings became: ``config`` is stored as is (not secret),
    ``credentials`` is to be sealed (empty: nothing to seal)."""

    driver: str
    config: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)

    @property
    def credential_names(self) -> list[str]:
        return sorted(self.credentials)


def check_driver(driver: str, config: DriverConfigIn | None, *, at: str = "") -> DriverSettings:
    """Check a node's driver and its settings; a problem raises ``ValidationFailed`` whose
    ``param`` is the dotted field (``driver_config.address``, after the prefix ``at``) and whose
    message never quotes a credential."""
    param = f"{at}driver_config"
    if driver not in DRIVER_NAMES:
        raise ValidationFailed(
            f"unknown driver {driver!r}; drivers: {', '.join(DRIVER_NAMES)}",
            code="unknown_driver",
            param=f"{at}driver",
        )
    given = {} if config is None else config.model_dump(exclude_none=True)
    if driver == "sim":
        if given:
            raise ValidationFailed(
                f"the sim driver takes no settings (got {', '.join(sorted(given))})",
                param=f"{param}.{sorted(given)[0]}",
            )
        return DriverSettings("sim")
    return _check_ssh(given, param)


def _check_ssh(given: Mapping[str, Any], param: str) -> DriverSettings:
    def fail(name: str, message: str) -> ValidationFailed:
        return ValidationFailed(f"{param}.{name}: {message}", param=f"{param}.{name}")

    for required in ("address", "private_key"):
        if required not in given:
            raise ValidationFailed(
                f"{param}.{required} is required for the ssh driver",
                code="missing_field",
                param=f"{param}.{required}",
            )
    address = str(given["address"])
    if not _is_address(address):
        raise fail("address", "must be an IP address or a DNS name")
    user = str(given.get("user", "root"))
    if not POSIX_USER.fullmatch(user):
        raise fail("user", "must be a POSIX user name (a-z, 0-9, _ and -, at most 32)")
    key = check_private_key(str(given["private_key"]), param=f"{param}.private_key")
    config: dict[str, Any] = {
        "address": address,
        "port": int(given.get("port", 22)),
        "user": user,
        "gpu_check": str(given.get("gpu_check", "nvidia-smi")),
        "sudo": bool(given.get("sudo", True)),
        "scratch_paths": check_scratch_paths(
            list(given.get("scratch_paths", [])), param=f"{param}.scratch_paths"
        ),
    }
    if "host_key" in given:
        config["host_key"] = check_host_key(str(given["host_key"]), param=f"{param}.host_key")
    if "reboot_command" in given:
        config["reboot_command"] = str(given["reboot_command"])
    if "agent_recorded" in given:
        config["agent_recorded"] = str(given["agent_recorded"])
    return DriverSettings("ssh", config, {"private_key": key})


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return DNS_NAME.fullmatch(text) is not None and not text.replace(".", "").isdigit()
    return True


def check_private_key(text: str, *, param: str = "private_key") -> str:
    """The key, normalized (one trailing newline), if it is an unencrypted OpenSSH or PEM
    private key the ``cryptography`` package parses; else ``ValidationFailed``."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = text.strip().encode("utf-8") + b"\n"
    if len(data) > MAX_PRIVATE_KEY_BYTES:
        raise ValidationFailed(
            f"{param}: a private key is at most {MAX_PRIVATE_KEY_BYTES} bytes", param=param
        )
    openssh = data.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    try:
        if openssh:
            serialization.load_ssh_private_key(data, password=None)
        else:
            serialization.load_pem_private_key(data, password=None)
    except TypeError:  # what cryptography raises for a key that needs a passphrase
        raise ValidationFailed(
            f"{param}: the key is protected by a passphrase; the platform logs in unattended, "
            "so give an unencrypted key (ssh-keygen -p -N '' -f KEY on a copy)",
            code="encrypted_private_key",
            param=param,
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValidationFailed(
            f"{param}: not an OpenSSH or PEM private key that can be read",
            code="invalid_private_key",
            param=param,
        ) from None
    return data.decode("utf-8")


def check_host_key(text: str, *, param: str = "host_key") -> str:
    """One OpenSSH public key line (``ssh-ed25519 AAAA… [comment]``)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    line = text.strip()
    try:
        serialization.load_ssh_public_key(line.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm):
        raise ValidationFailed(
            f"{param}: not an OpenSSH public key line (as in /etc/ssh/ssh_host_ed25519_key.pub)",
            param=param,
        ) from None
    return line


def check_scratch_paths(paths: list[str], *, param: str = "scratch_paths") -> list[str]:
    """Normalized absolute paths a wipe may empty: never ``/`` nor a system directory or
    anything under one."""
    if len(paths) > MAX_SCRATCH_PATHS:
        raise ValidationFailed(f"{param}: at most {MAX_SCRATCH_PATHS} paths", param=param)
    out: list[str] = []
    for i, path in enumerate(paths):
        at = f"{param}[{i}]"
        if not path.startswith("/"):
            raise ValidationFailed(f"{at}: must be an absolute path", param=at)
        norm = "/" + posixpath.normpath(path).lstrip("/")
        if norm != "/" and norm != path.rstrip("/"):
            raise ValidationFailed(f"{at}: must be normalized (as {norm!r})", param=at)
        first = "/" + norm.split("/")[1]
        if norm == "/" or first in FORBIDDEN_ROOTS or first.startswith("/lib"):
            raise ValidationFailed(
                f"{at}: {norm!r} is a system directory or under one, and a wipe empties "
                "scratch paths; use a directory of its own (e.g. /scratch)",
                code="forbidden_scratch_path",
                param=at,
            )
        if norm not in out:
            out.append(norm)
    return out


def merge_driver(
    driver: str,
    parts: Sequence[SpecDriverConfig | None],
    *,
    base_dir: Path | None,
    at: str = "",
) -> DriverSettings:
    """A spec node's driver settings: later ``parts`` (the node's) over earlier ones (its
    template's), key by key, with ``private_key_file`` read relative to ``base_dir``."""
    merged: dict[str, Any] = {}
    for part in parts:
        if part is not None:
            merged.update(part.model_dump(exclude_none=True))
    key_file = merged.pop("private_key_file", None)
    if key_file is not None:
        param = f"{at}driver_config.private_key_file"
        if "private_key" in merged:
            raise ValidationFailed(
                f"{param}: give private_key or private_key_file, not both", param=param
            )
        merged["private_key"] = _read_key_file(str(key_file), base_dir, param)
    try:
        config = DriverConfigIn.model_validate(merged) if merged else None
    except ValidationError as exc:  # a key file's contents fail the field's bounds
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        param = f"{at}driver_config.{name}"
        raise ValidationFailed(f"{param}: {first['msg']}", param=param) from None
    return check_driver(driver, config, at=at)


def _read_key_file(name: str, base_dir: Path | None, param: str) -> str:
    if base_dir is None:
        raise ValidationFailed(
            f"{param}: a key file is read where the spec file lies (`neocloud fleet import "
            "FILE` inlines it); a spec sent as text gives private_key",
            param=param,
        )
    try:
        with (base_dir / name).open("rb") as fh:
            data = fh.read(MAX_PRIVATE_KEY_BYTES + 1)
    except OSError as exc:
        raise ValidationFailed(
            f"{param}: cannot read {name}: {exc.strerror or type(exc).__name__}", param=param
        ) from None
    if len(data) > MAX_PRIVATE_KEY_BYTES:
        raise ValidationFailed(
            f"{param}: {name} is larger than a private key ({MAX_PRIVATE_KEY_BYTES} bytes)",
            param=param,
        )
    return data.decode("utf-8", errors="replace")
