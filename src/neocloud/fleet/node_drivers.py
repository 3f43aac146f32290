"""A node's driver settings: which driver runs it, how to reach it, and its credentials.

The same checks serve ``POST /api/v1/nodes`` and the fleet spec file. A setting that is not
secret (an address, a port, a user, a BMC's URL) is stored in ``nodes.driver_config`` and shown
to operators; a credential (the SSH private key, the BMC's user and password) is returned apart,
for the caller to seal with the platform's secret box into ``nodes.driver_secret``: it is
write-only, and no message raised here ever quotes it.

The ``redfish`` driver's settings are checked here, once, by ``parse_config``: the driver reads
a node's stored settings with the same function (fleet sits below the drivers, so the check
lives with the fleet).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
)

from neocloud.kernel.errors import ValidationFailed
from neocloud.web.fields import NAME_PATTERN, URL_MAX, Clean, CleanText

# The drivers a node may name. Which of them may share a node between workloads is the
# drivers package's business (``drivers.base.SHARING_DRIVERS``): fleet sits below it.
DRIVER_NAMES: tuple[str, ...] = ("sim", "ssh", "redfish")
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
CREDENTIAL_FIELDS: tuple[str, ...] = ("private_key", "bmc_username", "bmc_password")
MAX_BMC_PASSWORD_CHARS = 256
SSH_FIELDS = frozenset(
    {"address", "port", "user", "private_key", "gpu_check", "sudo", "scratch_paths", "host_key",
     "reboot_command", "agent_recorded"}
)  # fmt: skip
REDFISH_OWN_FIELDS = frozenset(
    {"bmc_url", "system_id", "verify_tls", "image_url", "boot_target", "reboot", "power_s",
     "boot_s", "bmc_username", "bmc_password"}
)  # fmt: skip
# A redfish node that also names an ssh ``address`` (and an operator ``private_key``) is a
# redfish + ssh node: OS steps over SSH, reimaged through the BMC between tenants.
REDFISH_SSH_FIELDS = frozenset(
    {"address", "port", "user", "private_key", "gpu_check", "sudo", "scratch_paths", "host_key",
     "reboot_command"}
)  # fmt: skip
REDFISH_FIELDS = REDFISH_OWN_FIELDS | REDFISH_SSH_FIELDS
# A password is taken as typed: no trimming (a space may be part of it), one line, bounded.
Password = Annotated[
    str,
    StringConstraints(
        strict=True,
        strip_whitespace=False,
        min_length=1,
        max_length=MAX_BMC_PASSWORD_CHARS,
        pattern=NAME_PATTERN,
    ),
]
StepSeconds = Annotated[float, Field(strict=False, ge=0, le=7200)]


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
    # -- redfish
    bmc_url: Clean | None = Field(
        None, min_length=1, max_length=URL_MAX, description="redfish: https://… of the BMC"
    )
    system_id: Clean | None = Field(
        None, min_length=1, max_length=200, description="redfish: the system (default: the only)"
    )
    verify_tls: StrictBool | None = Field(
        None, description="redfish: check the BMC's TLS certificate (true)"
    )
    image_url: Clean | None = Field(
        None, min_length=1, max_length=URL_MAX, description="redfish: the ISO to boot at provision"
    )
    boot_target: Literal["cd", "pxe", "hdd"] | None = Field(
        None, description="redfish: what provision boots once (cd with an image, else pxe)"
    )
    reboot: Literal["force", "graceful"] | None = Field(
        None, description="redfish: how a reboot restarts the server (force)"
    )
    power_s: StepSeconds | None = Field(
        None, description="redfish: seconds a power change takes (the driver's: 30)"
    )
    boot_s: StepSeconds | None = Field(
        None, description="redfish: seconds a boot takes (the driver's: 300)"
    )
    bmc_username: Clean | None = Field(
        None, min_length=1, max_length=64, description="redfish: the BMC user; write-only"
    )
    bmc_password: Password | None = Field(
        None, description="redfish: the BMC user's password; write-only (sealed, never returned)"
    )


class SpecDriverConfig(DriverConfigIn):
    """A node's driver settings in a fleet spec: as the API takes them, or the private key
    and the BMC password as files relative to the spec file."""

    private_key_file: Clean | None = Field(None, min_length=1, max_length=MAX_PATH_CHARS)
    bmc_password_file: Clean | None = Field(None, min_length=1, max_length=MAX_PATH_CHARS)


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


def check_driver(
    driver: str,
    config: DriverConfigIn | None,
    *,
    at: str = "",
    bmc_endpoint: str | None = None,
) -> DriverSettings:
    """Check a node's driver and its settings; a problem raises ``ValidationFailed`` whose
    ``param`` is the dotted field (``driver_config.address``, after the prefix ``at``) and whose
    message never quotes a credential. ``bmc_endpoint``: the node's fleet record of its BMC,
    the ``redfish`` driver's ``bmc_url`` when the settings name none."""
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
    allowed = SSH_FIELDS if driver == "ssh" else REDFISH_FIELDS
    stray = sorted(set(given) - allowed)
    if stray:
        raise ValidationFailed(
            f"{param}.{stray[0]}: not a setting of the {driver} driver",
            param=f"{param}.{stray[0]}",
        )
    if driver == "redfish":
        return _check_redfish(given, param, bmc_endpoint)
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


def _check_redfish(
    given: Mapping[str, Any], param: str, bmc_endpoint: str | None
) -> DriverSettings:
    """The ``redfish`` driver's settings (``parse_config``) and its sealed BMC login."""
    for required in ("bmc_username", "bmc_password"):
        if required not in given:
            raise ValidationFailed(
                f"{param}.{required} is required for the redfish driver",
                code="missing_field",
                param=f"{param}.{required}",
            )
    ssh_part = {k: v for k, v in given.items() if k in REDFISH_SSH_FIELDS}
    ssh = None
    if ssh_part:
        if "address" not in ssh_part:
            raise ValidationFailed(
                f"{param}.address is required with ssh settings on a redfish node (a redfish + "
                "ssh node, reimaged between tenants)",
                code="missing_field",
                param=f"{param}.address",
            )
        ssh = _check_ssh(ssh_part, param)
    settings = {
        k: v
        for k, v in given.items()
        if k not in ("bmc_username", "bmc_password") and k in REDFISH_OWN_FIELDS
    }
    try:
        cfg = parse_config(settings, bmc={"endpoint": bmc_endpoint} if bmc_endpoint else None)
    except RedfishConfigError as exc:
        raise ValidationFailed(f"{param}.{exc}", param=f"{param}.{exc.key}") from None
    config: dict[str, Any] = {
        "bmc_url": cfg.bmc_url,
        "verify_tls": cfg.verify_tls,
        "boot_target": BOOT_TARGET_NAMES[cfg.boot_target],
        "reboot": REBOOT_NAMES[cfg.reboot_type],
    }
    for name, value in (
        ("system_id", cfg.system_id),
        ("image_url", cfg.image_url),
        ("power_s", cfg.power_s),
        ("boot_s", cfg.boot_s),
    ):
        if value is not None:
            config[name] = value
    credentials = {
        "bmc_username": str(given["bmc_username"]),
        "bmc_password": str(given["bmc_password"]),
    }
    if ssh is not None:
        if cfg.image_url is None:
            raise ValidationFailed(
                f"{param}.image_url is required on a redfish + ssh node (its reimage boots it)",
                code="missing_field",
                param=f"{param}.image_url",
            )
        config.update(ssh.config)
        credentials.update(ssh.credentials)
    return DriverSettings("redfish", config, credentials)


# --------------------------------------------------------------------- redfish settings, checked

BOOT_TARGETS = {"cd": "Cd", "pxe": "Pxe", "hdd": "Hdd"}
REBOOT_TYPES = {"force": "ForceRestart", "graceful": "GracefulRestart"}
BOOT_TARGET_NAMES = {v: k for k, v in BOOT_TARGETS.items()}
REBOOT_NAMES = {v: k for k, v in REBOOT_TYPES.items()}
SYSTEM_ID = re.compile(r"[A-Za-z0-9._:/-]{1,200}")


class RedfishConfigError(ValueError):
    """A node's ``redfish`` settings are unusable; ``key`` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"driver_config.{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class RedfishConfig:
    """A node's non-secret Redfish settings (``NodeRef.config``), checked."""

    bmc_url: str
    system_id: str | None = None
    verify_tls: bool = True
    image_url: str | None = None
    boot_target: str = "Pxe"  # a Redfish BootSourceOverrideTarget
    reboot_type: str = "ForceRestart"
    power_s: float | None = None
    boot_s: float | None = None


def _http_url(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise RedfishConfigError(key, "must be an http:// or https:// URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RedfishConfigError(key, "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise RedfishConfigError(key, "must not carry credentials (they are sealed separately)")
    return value.rstrip("/") if key == "bmc_url" else value


def _seconds(key: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 7200:
        raise RedfishConfigError(key, "must be a number of seconds from 0 to 7200")
    return float(value)


def parse_config(
    config: Mapping[str, Any], *, bmc: Mapping[str, Any] | None = None
) -> RedfishConfig:
    """Check a node's Redfish settings; ``RedfishConfigError`` names the first bad one.
    ``bmc``: the node's fleet record of its BMC, whose ``endpoint`` (from the fleet spec's
    ``bmc`` pattern) serves when the config names no ``bmc_url``."""
    url = config.get("bmc_url")
    if url is None and bmc is not None:
        url = bmc.get("endpoint")
    bmc_url = _http_url("bmc_url", url)
    system_id = config.get("system_id")
    if system_id is not None and (
        not isinstance(system_id, str) or not SYSTEM_ID.fullmatch(system_id)
    ):
        raise RedfishConfigError("system_id", "must be a Redfish system id or path")
    verify = config.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise RedfishConfigError("verify_tls", "must be true or false")
    image = config.get("image_url")
    image_url = None if image is None else _http_url("image_url", image)
    default_boot = "cd" if image_url else "pxe"
    boot = str(config.get("boot_target", default_boot)).lower()
    if boot not in BOOT_TARGETS:
        raise RedfishConfigError("boot_target", f"must be one of {', '.join(BOOT_TARGETS)}")
    if boot == "cd" and image_url is None:
        raise RedfishConfigError("image_url", "is needed to boot from virtual media (cd)")
    reboot = str(config.get("reboot", "force")).lower()
    if reboot not in REBOOT_TYPES:
        raise RedfishConfigError("reboot", f"must be one of {', '.join(REBOOT_TYPES)}")
    return RedfishConfig(
        bmc_url=bmc_url,
        system_id=system_id,
        verify_tls=verify,
        image_url=image_url,
        boot_target=BOOT_TARGETS[boot],
        reboot_type=REBOOT_TYPES[reboot],
        power_s=_seconds("power_s", config.get("power_s")),
        boot_s=_seconds("boot_s", config.get("boot_s")),
    )


# ---------------------------------------------------------------------------- shared checks


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
    bmc_endpoint: str | None = None,
) -> DriverSettings:
    """A spec node's driver settings: later ``parts`` (the node's) over earlier ones (its
    template's), key by key, with ``private_key_file`` and ``bmc_password_file`` read relative
    to ``base_dir``; ``bmc_endpoint`` as for ``check_driver``."""
    merged: dict[str, Any] = {}
    for part in parts:
        if part is not None:
            merged.update(part.model_dump(exclude_none=True))
    for file_field, field_name, limit in (
        ("private_key_file", "private_key", MAX_PRIVATE_KEY_BYTES),
        ("bmc_password_file", "bmc_password", MAX_BMC_PASSWORD_CHARS),
    ):
        name = merged.pop(file_field, None)
        if name is None:
            continue
        param = f"{at}driver_config.{file_field}"
        if field_name in merged:
            raise ValidationFailed(
                f"{param}: give {field_name} or {file_field}, not both", param=param
            )
        text = _read_key_file(str(name), base_dir, param, limit=limit)
        merged[field_name] = text if field_name == "private_key" else password_text(text)
    try:
        config = DriverConfigIn.model_validate(merged) if merged else None
    except ValidationError as exc:  # a key file's contents fail the field's bounds
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        param = f"{at}driver_config.{name}"
        raise ValidationFailed(f"{param}: {first['msg']}", param=param) from None
    return check_driver(driver, config, at=at, bmc_endpoint=bmc_endpoint)


def password_text(text: str) -> str:
    """A password as read from a file: the first line, without its line ending."""
    return text.split("\n", 1)[0].removesuffix("\r")


def _read_key_file(
    name: str, base_dir: Path | None, param: str, *, limit: int = MAX_PRIVATE_KEY_BYTES
) -> str:
    if base_dir is None:
        raise ValidationFailed(
            f"{param}: a credential file is read where the spec file lies (`neocloud fleet "
            "import FILE` inlines it); a spec sent as text gives private_key or bmc_password",
            param=param,
        )
    try:
        with (base_dir / name).open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ValidationFailed(
            f"{param}: cannot read {name}: {exc.strerror or type(exc).__name__}", param=param
        ) from None
    if len(data) > limit:
        raise ValidationFailed(
            f"{param}: {name} is larger than a credential ({limit} bytes)", param=param
        )
    return data.decode("utf-8", errors="replace")
