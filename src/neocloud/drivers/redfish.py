"""The ``redfish`` driver: bare-metal servers driven through their BMC's Redfish API (``sushy``).

Power on and off, reset, a one-time boot override (virtual media CD, PXE or disk), virtual
media insert and eject, and the system's health and inventory, read from the BMC. Nothing here
logs in to the server's OS: a ``redfish``-only node powers and boots the machine (with a
cloud-init seed carrying the tenant's login and user data beside the image, when a seed
publisher is given), and its ``provision`` answers no ``Access`` (no OS login is known).
A ``redfish`` + ``ssh`` node, reimaged between tenants, is ``drivers.baremetal``'s.

Steps answer as soon as the BMC has accepted the request, with the seconds the server takes to
get there (``power_s``, ``boot_s``); the reconciler checks back after that long. A step never
raises for a BMC's failure: it answers ``StepResult(ok=False, message=...)`` naming the node, the
step and the cause (unreachable, TLS, bad credentials, unknown system, a refused action).

The BMC credentials (``bmc_username``, ``bmc_password``) are opened from ``NodeRef.sealed``
with the platform's ``SecretBox`` at the moment of connecting; they are never logged, returned,
kept, or put in a message. What is emulated in the tests and what is not: docs/nodes-redfish.md.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import sushy  # type: ignore[import-untyped]
from sushy import exceptions as sushy_exc
from sushy.auth import SessionOrBasicAuth  # type: ignore[import-untyped]
from urllib3.exceptions import InsecureRequestWarning

from neocloud.drivers.base import (
    HealthResult,
    NodeRef,
    ProvisionRequest,
    SeedPublisher,
    StepResult,
)
from neocloud.drivers.nocloud import Seed, SeedError, build_seed_iso
from neocloud.fleet.node_drivers import (
    BOOT_TARGETS,
    REBOOT_TYPES,
    RedfishConfig,
    RedfishConfigError,
    parse_config,
)
from neocloud.kernel.secrets import SealedSecretError, SecretBox

log = logging.getLogger(__name__)

SEALED_KEYS = ("bmc_username", "bmc_password")
# Redfish health → the platform's check status; a BMC that reports none is a warning.
HEALTH_STATUS = {"OK": "pass", "Warning": "warn", "Critical": "fail"}
_RANK = {"pass": 0, "warn": 1, "fail": 2}
# Virtual media a seed image may go into (besides the image's CD drive).
SEED_MEDIA_TYPES = frozenset({"CD", "DVD", "USBStick", "Floppy"})
# The settings are checked where the fleet registers a node (``fleet.node_drivers``), one copy
# for registration and for every step here; re-exported for the driver's callers.
__all__ = [
    "BOOT_TARGETS",
    "REBOOT_TYPES",
    "SEALED_KEYS",
    "RedfishConfig",
    "RedfishConfigError",
    "RedfishDriver",
    "RedfishError",
    "health_status",
    "parse_config",
]


class RedfishError(Exception):
    """A step cannot go on; the message names the node and the cause (never a secret)."""


def health_status(*values: str | None) -> str:
    """The worst of Redfish health values (``OK``, ``Warning``, ``Critical``) as a check
    status; a missing or unknown value counts as ``warn``."""
    worst = "pass"
    for value in values:
        status = HEALTH_STATUS.get(value or "", "warn")
        if _RANK[status] > _RANK[worst]:
            worst = status
    return worst


def _enum_value(value: Any) -> str | None:
    """A sushy enum member's Redfish string (``None`` stays ``None``)."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _connection_cause(text: str) -> str:
    """What a connection failure was, from the requests error sushy wraps (no secret in it)."""
    lowered = text.lower()
    if "certificate" in lowered or "ssl" in lowered:
        return "its TLS certificate is not trusted or TLS failed (verify_tls)"
    if "timed out" in lowered or "timeout" in lowered:
        return "it did not answer in time"
    if "refused" in lowered:
        return "the connection was refused"
    if "name or service not known" in lowered or "resolution" in lowered or "resolve" in lowered:
        return "its name does not resolve"
    return "the connection failed"


class RedfishDriver:
    """The ``redfish`` driver (see the module docstring). ``timeout_s``: the BMC's answer to
    one request (connecting: at most 10 s of it); ``power_s`` and ``boot_s``: the seconds a
    power change and a boot take, unless the node's config says otherwise."""

    def __init__(
        self,
        box: SecretBox,
        *,
        timeout_s: float = 30.0,
        power_s: float = 30.0,
        boot_s: float = 300.0,
        retries: int = 2,
        retry_delay_s: float = 1.0,
        seeds: SeedPublisher | None = None,
    ) -> None:
        self.box = box
        self.seeds = seeds  # where cloud-init seeds are served from (None: no seeds)
        self.timeout_s = timeout_s
        self.power_s = power_s
        self.boot_s = boot_s
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self._quiet_hosts: set[str] = set()
        self._lock = threading.Lock()

    @property
    def shares_nodes(self) -> bool:
        return False

    # -- connecting ---------------------------------------------------------------------------

    def _credentials(self, node: NodeRef) -> tuple[str, str]:
        if not node.sealed:
            raise RedfishError(f"node {node.hostname}: no BMC credentials are registered")
        try:
            opened = self.box.open(node.sealed)
        except SealedSecretError as exc:
            raise RedfishError(f"node {node.hostname}: BMC credentials: {exc}") from None
        user, password = opened.get("bmc_username"), opened.get("bmc_password")
        if not isinstance(user, str) or not user or not isinstance(password, str):
            raise RedfishError(
                f"node {node.hostname}: the sealed credentials lack bmc_username/bmc_password"
            )
        return user, password

    def _quiet_unverified(self, url: str) -> None:
        """An operator who set ``verify_tls: false`` for a BMC (a self-signed certificate, the
        usual case) is not warned on every request to it; other hosts still are."""
        host = urlsplit(url).hostname or ""
        with self._lock:
            if host in self._quiet_hosts:
                return
            self._quiet_hosts.add(host)
            warnings.filterwarnings(
                "ignore",
                message=rf"Unverified HTTPS request is being made to host '{re.escape(host)}'",
                category=InsecureRequestWarning,
            )

    @contextmanager
    def _system(self, node: NodeRef, what: str) -> Iterator[tuple[RedfishConfig, Any]]:
        """The node's sushy ``System``; every failure becomes a ``RedfishError`` saying what
        went wrong, with the password scrubbed from anything the BMC said."""
        try:
            cfg = parse_config(node.config, bmc=node.bmc)
        except RedfishConfigError as exc:
            raise RedfishError(f"node {node.hostname}: {what}: {exc}") from None
        user, password = self._credentials(node)
        if not cfg.verify_tls and cfg.bmc_url.startswith("https:"):
            self._quiet_unverified(cfg.bmc_url)
        auth = SessionOrBasicAuth(username=user, password=password)
        prefix = f"node {node.hostname}: {what}: BMC {cfg.bmc_url}"
        try:
            root = sushy.Sushy(
                cfg.bmc_url,
                auth=auth,
                verify=cfg.verify_tls,
                read_timeout=self.timeout_s,
                connect_timeout=min(self.timeout_s, 10.0),
                server_side_retries=self.retries,
                server_side_retries_delay=self.retry_delay_s,
            )
            yield cfg, self._find_system(root, cfg, prefix)
        except sushy_exc.ConnectionError as exc:
            cause = _connection_cause(str(exc))
            raise RedfishError(f"{prefix} is unreachable: {cause}") from None
        except sushy_exc.AccessError as exc:
            if exc.status_code == 401:
                raise RedfishError(
                    f"{prefix} refused the credentials (401): check bmc_username/bmc_password"
                ) from None
            raise RedfishError(
                f"{prefix} denied access ({exc.status_code}): the BMC user lacks the privilege"
            ) from None
        except sushy_exc.SushyError as exc:
            detail = str(exc).replace(password, "***") if password else str(exc)
            raise RedfishError(f"{prefix}: {type(exc).__name__}: {detail}") from None
        finally:
            # Ends a Redfish session (BMCs allow few at a time); best effort, never a failure.
            with suppress(Exception):
                auth.close()

    @staticmethod
    def _find_system(root: Any, cfg: RedfishConfig, prefix: str) -> Any:
        collection = root.get_system_collection()
        members = [str(p) for p in collection.members_identities]
        if cfg.system_id is None:
            if len(members) != 1:
                ids = ", ".join(m.rsplit("/", 1)[-1] for m in members) or "none"
                raise RedfishError(
                    f"{prefix} lists {len(members)} systems ({ids}): set system_id to one"
                )
            return root.get_system(members[0])
        wanted = cfg.system_id.rstrip("/")
        path = wanted if wanted.startswith("/") else f"{collection.path.rstrip('/')}/{wanted}"
        try:
            return root.get_system(path)
        except sushy_exc.ResourceNotFoundError:
            ids = ", ".join(m.rsplit("/", 1)[-1] for m in members) or "none"
            raise RedfishError(
                f"{prefix} has no system {cfg.system_id!r} (it has: {ids})"
            ) from None

    def _step(self, node: NodeRef, what: str, act: Any) -> StepResult:
        """Run ``act(cfg, system) -> StepResult``; a failure is a failed step with its cause."""
        try:
            with self._system(node, what) as (cfg, system):
                result: StepResult = act(cfg, system)
                return result
        except RedfishError as exc:
            log.warning("redfish %s", exc)
            return StepResult(False, message=str(exc))

    # -- actions ------------------------------------------------------------------------------

    def _reset(self, node: NodeRef, system: Any, reset_type: str) -> None:
        allowed = {_enum_value(v) for v in system.get_allowed_reset_system_values()}
        if reset_type not in allowed:
            fallback = {"GracefulRestart": "ForceRestart", "ForceOn": "On", "On": "ForceOn"}
            alt = fallback.get(reset_type)
            if alt is None or alt not in allowed:
                raise RedfishError(
                    f"node {node.hostname}: the BMC does not offer {reset_type}"
                    f" (it offers: {', '.join(sorted(a for a in allowed if a))})"
                )
            reset_type = alt
        system.reset_system(sushy.ResetType(reset_type))

    def _power_to(self, node: NodeRef, cfg: RedfishConfig, system: Any, on: bool) -> StepResult:
        state = _enum_value(system.power_state)
        seconds = self.power_s if cfg.power_s is None else cfg.power_s
        if on and state == "On":
            return StepResult(True, 0.0, notes=("power: already on",))
        if not on and state == "Off":
            return StepResult(True, 0.0, notes=("power: already off",))
        self._reset(node, system, "On" if on else "ForceOff")
        return StepResult(True, seconds, notes=(f"power: {state} -> {'On' if on else 'Off'}",))

    def power(self, node: NodeRef, *, on: bool) -> StepResult:
        return self._step(
            node, "power " + ("on" if on else "off"), lambda c, s: self._power_to(node, c, s, on)
        )

    def reset(self, node: NodeRef) -> StepResult:
        """A hard reset (ForceRestart; an off server is powered on), for ``nodes power reset``."""

        def act(cfg: RedfishConfig, system: Any) -> StepResult:
            off = _enum_value(system.power_state) == "Off"
            self._reset(node, system, "On" if off else "ForceRestart")
            return StepResult(True, self.power_s if cfg.power_s is None else cfg.power_s)

        return self._step(node, "reset", act)

    def reboot(self, node: NodeRef, *, workload_id: str) -> StepResult:
        """The node's ``reboot`` setting: ForceRestart (default) or GracefulRestart (falls back
        to ForceRestart where the BMC offers no graceful one); an off server is powered on."""

        def act(cfg: RedfishConfig, system: Any) -> StepResult:
            off = _enum_value(system.power_state) == "Off"
            self._reset(node, system, "On" if off else cfg.reboot_type)
            return StepResult(True, self.boot_s if cfg.boot_s is None else cfg.boot_s)

        return self._step(node, "reboot", act)

    def deprovision(self, node: NodeRef, *, workload_id: str, login_user: str) -> StepResult:
        """The tenant's machine stops: power off (ForceOff)."""
        return self._step(node, "deprovision", lambda c, s: self._power_to(node, c, s, False))

    def wipe(self, node: NodeRef) -> StepResult:
        """Power off and eject every virtual medium; the next provision boots the image again.
        Disks are not erased here (docs/nodes-redfish.md)."""

        def act(cfg: RedfishConfig, system: Any) -> StepResult:
            step = self._power_to(node, cfg, system, False)
            ejected = []
            for medium in virtual_media(system):
                if medium.inserted:
                    medium.eject_media()
                    ejected.append(str(medium.identity))
            note = f"virtual media ejected: {', '.join(ejected)}" if ejected else "no media"
            return StepResult(True, step.duration_s, notes=(*step.notes, note))

        return self._step(node, "wipe", act)

    def provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        """Boot the node once from its ``boot_target`` (virtual media CD with ``image_url``
        inserted, PXE or disk) and power it on (or reset it if on). With an image and a seed
        publisher, a cloud-init NoCloud seed (``drivers.nocloud``: the tenant's login, keys and
        user data) goes into a second virtual medium, fetched by the BMC from the platform.
        No OS login is known to a redfish-only node, so the result carries no ``Access``."""
        seed = Seed(request.workload_id, request.hostname, request.login, request.user_data)
        return self.boot_image(node, seed=seed, what="provision")

    def boot_image(self, node: NodeRef, *, seed: Seed | None, what: str) -> StepResult:
        """Insert the node's image (and ``seed``, when it has an image and this driver a seed
        publisher), set the one-time boot override, and power on or reset; answers after the
        BMC accepted, with ``boot_s``."""
        seed_url: str | None = None
        if seed is not None and self.seeds is not None:
            try:
                cfg = parse_config(node.config, bmc=node.bmc)
            except RedfishConfigError as exc:
                return StepResult(False, message=f"node {node.hostname}: {what}: {exc}")
            if cfg.image_url is not None:
                try:
                    image = build_seed_iso(seed)
                except SeedError as exc:
                    return StepResult(False, message=f"node {node.hostname}: {what}: {exc}")
                seed_url = self.seeds.publish(
                    node_id=node.id, workload_id=seed.instance_id, image=image
                )

        def act(cfg: RedfishConfig, system: Any) -> StepResult:
            notes: list[str] = []
            if cfg.image_url is not None:
                notes.append(self._insert(node, system, cfg.image_url))
            if seed_url is not None:
                notes.append(self._insert_seed(node, system, seed_url))
            target = sushy.BootSource(cfg.boot_target)
            allowed = {_enum_value(v) for v in system.get_allowed_system_boot_source_values()}
            if cfg.boot_target not in allowed:
                raise RedfishError(
                    f"node {node.hostname}: the BMC cannot boot from {cfg.boot_target}"
                    f" (it offers: {', '.join(sorted(a for a in allowed if a))})"
                )
            system.set_system_boot_options(
                target=target, enabled=sushy.BootSourceOverrideEnabled.ONCE
            )
            notes.append(f"boot override: {cfg.boot_target} once")
            off = _enum_value(system.power_state) == "Off"
            self._reset(node, system, "On" if off else "ForceRestart")
            notes.append("power: on" if off else "power: reset")
            tenant_data = seed is not None and bool(seed.login.public_keys or seed.user_data)
            if seed_url is None and tenant_data and what == "provision":
                notes.append(
                    "login and user data not applied: no image or no seed server for "
                    "a cloud-init seed"
                )
            seconds = self.boot_s if cfg.boot_s is None else cfg.boot_s
            return StepResult(True, seconds, access=None, notes=tuple(notes))

        result = self._step(node, what, act)
        if not result.ok and seed_url is not None and self.seeds is not None:
            self.seeds.discard(node_id=node.id, workload_id=seed.instance_id if seed else None)
        return result

    def _insert(self, node: NodeRef, system: Any, image_url: str) -> str:
        candidates = [
            m
            for m in virtual_media(system)
            if {_enum_value(t) for t in m.media_types} & {"CD", "DVD"}
        ]
        if not candidates:
            raise RedfishError(f"node {node.hostname}: the BMC offers no virtual CD/DVD drive")
        medium = candidates[0]
        if medium.inserted and medium.image == image_url:
            return f"virtual media {medium.identity}: image already inserted"
        if medium.inserted:
            medium.eject_media()
            medium.refresh(force=True)
        medium.insert_media(image_url, inserted=True, write_protected=True)
        return f"virtual media {medium.identity}: image inserted"

    def _insert_seed(self, node: NodeRef, system: Any, seed_url: str) -> str:
        """The seed goes into a medium other than the image's first CD/DVD drive: a second
        CD/DVD drive if there is one, else a USB stick or removable disk (cloud-init finds the
        ``cidata`` volume on any block device). The URL is never put in a note (its token)."""
        media = virtual_media(system)
        cds = [m for m in media if {_enum_value(t) for t in m.media_types} & {"CD", "DVD"}]
        others = [
            m
            for m in media
            if m not in cds[:1] and {_enum_value(t) for t in m.media_types} & SEED_MEDIA_TYPES
        ]
        if not others:
            raise RedfishError(
                f"node {node.hostname}: the BMC offers no second virtual medium for the "
                "cloud-init seed (a CD/DVD drive besides the image's, or a USB stick)"
            )
        ordered = [m for m in others if m in cds] + [m for m in others if m not in cds]
        medium = ordered[0]
        if medium.inserted:
            medium.eject_media()
            medium.refresh(force=True)
        medium.insert_media(seed_url, inserted=True, write_protected=True)
        return f"virtual media {medium.identity}: cloud-init seed inserted"

    # -- reading ------------------------------------------------------------------------------

    def health(self, node: NodeRef) -> HealthResult:
        """``bmc``: reached and logged in; ``bmc_health``: the system's Redfish health
        (OK → pass, Warning → warn, Critical → fail, none reported → warn); ``power``: pass
        when on, warn otherwise. Fails on a ``fail`` check."""
        checks: dict[str, str] = {}
        try:
            with self._system(node, "health") as (_cfg, system):
                checks["bmc"] = "pass"
                status = system.status
                health = _enum_value(getattr(status, "health", None))
                rollup = _enum_value(getattr(status, "health_rollup", None))
                checks["bmc_health"] = health_status(health, *([rollup] if rollup else []))
                power = _enum_value(system.power_state)
                checks["power"] = "pass" if power == "On" else "warn"
        except RedfishError as exc:
            checks.setdefault("bmc", "fail")
            return HealthResult(False, checks, str(exc))
        message = f"node {node.hostname}: BMC health {health or 'not reported'}, power {power}"
        return HealthResult(checks["bmc_health"] != "fail", checks, message)

    def inspect(self, node: NodeRef) -> dict[str, Any]:
        """The system's inventory as the BMC reports it (``None``: not reported): identity,
        model, serial, CPUs, memory, NICs, power state, health, boot override, virtual media.
        ``RedfishError`` when the BMC cannot be read."""
        with self._system(node, "inspect") as (_cfg, system):
            return _inventory(system)


def _optional(read: Any) -> Any:
    """A part of the inventory a BMC may not offer (``None`` then)."""
    try:
        return read()
    except (sushy_exc.MissingAttributeError, sushy_exc.ResourceNotFoundError):
        return None
    except sushy_exc.HTTPError as exc:
        if exc.status_code in (400, 404, 405, 501):
            return None
        raise


def _cpus(system: Any) -> dict[str, Any] | None:
    summary = system.json.get("ProcessorSummary") or {}
    count, model = summary.get("Count"), summary.get("Model")
    procs = _optional(lambda: list(system.processors.get_members()))
    if procs:
        count = count or sum(p.total_cores or 0 for p in procs) or None
        model = model or procs[0].model
        return {"count": count, "model": model, "sockets": len(procs)}
    if count is None and model is None:
        return None
    return {"count": count, "model": model, "sockets": None}


def virtual_media(system: Any) -> list[Any]:
    """The system's virtual media (on the system, or else on its managers)."""
    try:
        return list(system.virtual_media.get_members())
    except sushy_exc.MissingAttributeError:
        media: list[Any] = []
        for manager in system.managers:
            try:
                media.extend(manager.virtual_media.get_members())
            except sushy_exc.MissingAttributeError:
                continue
        return media


def _inventory(system: Any) -> dict[str, Any]:
    status = system.status
    memory = system.memory_summary
    boot = system.boot
    nics = _optional(lambda: [n.mac_address for n in system.ethernet_interfaces.get_members()])
    media = _optional(lambda: virtual_media(system)) or []
    return {
        "system_id": system.identity,
        "name": system.name,
        "uuid": system.uuid,
        "manufacturer": system.manufacturer,
        "model": system.model,
        "serial_number": system.serial_number,
        "sku": system.sku,
        "bios_version": system.bios_version,
        "power_state": _enum_value(system.power_state),
        "health": _enum_value(getattr(status, "health", None)),
        "health_rollup": _enum_value(getattr(status, "health_rollup", None)),
        "state": _enum_value(getattr(status, "state", None)),
        "cpus": _cpus(system),
        "memory_gib": getattr(memory, "size_gib", None) if memory is not None else None,
        "nics": nics,
        "boot": None
        if boot is None
        else {
            "target": _enum_value(boot.target),
            "enabled": _enum_value(boot.enabled),
            "mode": _enum_value(boot.mode),
        },
        "virtual_media": [
            {"id": m.identity, "inserted": bool(m.inserted), "image": m.image or None}
            for m in media
        ],
    }
