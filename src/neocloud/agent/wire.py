"""The heartbeat on the wire: ``POST /api/v1/agent/heartbeat`` and its answer.

The shapes are the contract shared with the control plane (``fleet/agent_schemas.py`` there;
the agent copies nothing from it and builds plain dicts here). The agent keeps within the
contract's bounds itself: at most 16 GPUs, 16 telemetry entries and 16 check results, 8
throttle reasons and 16 XIDs per GPU, one-line strings of bounded length.

Where a source could not read a value: the contract's nullable fields (``serial``,
``pci_bus_id``, ``nvlink_active``, ``sm_clock_mhz``, the versions) go as ``null``; a counter
the GPU does not keep (retired pages on Hopper, which remaps rows instead; ECC on a card with
ECC off) goes as ``0`` and an unreadable remap state as ``false``. A GPU whose utilization,
memory, temperature or power could not be read is left out of ``telemetry`` — no number is
made up — and a ``telemetry`` check says which GPU and field (status ``warn``).
ECC counts on the wire are the volatile ones (since the driver loaded), as dcgm-exporter's
``DCGM_FI_DEV_ECC_*_VOL_TOTAL``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from neocloud.agent import AGENT_VERSION_MAX
from neocloud.agent.gpus import GpuSample, Inventory

GPUS_MAX = 16
CHECKS_MAX = 16
THROTTLE_MAX = 8
XID_MAX = 16
# String bounds: the control plane's (fleet/agent_schemas.py on the agentcp branch), so that
# nothing the agent sends is refused for length. Real NVML values are far shorter.
UUID_MAX = 64  # NVML: "GPU-" and 36 characters
SERIAL_MAX = 64
GPU_NAME_MAX = 96
VERSION_MAX = 32
PCI_BUS_ID_MAX = 32  # "00000000:18:00.0"
CHECK_NAME_MAX = 58
UNIT_MAX = 16
MESSAGE_MAX = 1000
STATUSES = ("pass", "warn", "fail")
INTERVAL_MIN_S = 1.0
INTERVAL_MAX_S = 3600.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome as the control plane reads it: ``status`` pass, warn or fail;
    ``value`` in ``unit`` (``TFLOP/s``, ``GB/s``) when the check measured something."""

    name: str
    status: str
    message: str | None = None
    value: float | None = None
    unit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, not {self.status!r}")
        return {
            "name": check_name(self.name),
            "status": self.status,
            "message": one_line(self.message, MESSAGE_MAX) if self.message is not None else None,
            "value": self.value if self.value is None or math.isfinite(self.value) else None,
            "unit": one_line(self.unit, UNIT_MAX) if self.unit is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """The control plane's answer: when to beat next, the node's state, and whether the node
    is idle enough for active checks (never on a tenant's node)."""

    interval_s: float | None
    node_state: str
    run_active_checks: bool


def one_line(text: str, limit: int) -> str:
    """``text`` with control characters replaced by spaces, cut to ``limit`` characters."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def check_name(name: str) -> str:
    """A check's name as the control plane stores it: letters, digits and ``_.:-`` only
    (others become ``_``), at most 58 characters."""
    clean = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_.:-") else "_" for ch in name)
    return clean[:CHECK_NAME_MAX] or "check"


def rfc3339(value: datetime) -> str:
    """UTC, ``Z`` suffix, milliseconds at most (as the kernel's ``rfc3339``, which the agent
    does not import: the kernel package pulls in pydantic-settings)."""
    value = value.astimezone(UTC)
    text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def inventory_payload(inventory: Inventory) -> dict[str, Any]:
    """The contract's ``inventory`` object (the first 16 GPUs; a node has at most 8 or 4)."""
    return {
        "driver_version": _opt(inventory.driver_version, VERSION_MAX),
        "cuda_version": _opt(inventory.cuda_version, VERSION_MAX),
        "gpus": [
            {
                "index": gpu.index,
                "uuid": one_line(gpu.uuid, UUID_MAX),
                "serial": _opt(gpu.serial, SERIAL_MAX),
                "name": one_line(gpu.name, GPU_NAME_MAX),
                "memory_total_mib": max(0, gpu.memory_total_mib),
                "pci_bus_id": _opt(gpu.pci_bus_id, PCI_BUS_ID_MAX),
                "nvlink_active": gpu.nvlink_active,
            }
            for gpu in inventory.gpus[:GPUS_MAX]
        ],
    }


def _opt(text: str | None, limit: int) -> str | None:
    return one_line(text, limit) if text is not None else None


REQUIRED = ("utilization_pct", "memory_used_mib", "temperature_c", "power_w")


def telemetry_payload(samples: list[GpuSample]) -> tuple[list[dict[str, Any]], list[str]]:
    """The contract's ``telemetry`` list and, for GPUs left out, what could not be read
    (``gpu 2: temperature_c not readable``)."""
    entries: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for s in samples[:GPUS_MAX]:
        util, used, temp, power = s.utilization_pct, s.memory_used_mib, s.temperature_c, s.power_w
        if util is None or used is None or temp is None or power is None:
            missing = [name for name in REQUIRED if getattr(s, name) is None]
            unreadable.append(f"gpu {s.index}: {', '.join(missing)} not readable")
            continue
        entries.append(
            {
                "index": s.index,
                "utilization_pct": min(100.0, max(0.0, util)),
                "memory_used_mib": max(0, used),
                "temperature_c": temp,
                "power_w": max(0.0, power),
                "sm_clock_mhz": s.sm_clock_mhz,
                "ecc_correctable": max(0, s.ecc_correctable or 0),
                "ecc_uncorrectable": max(0, s.ecc_uncorrectable or 0),
                "retired_pages": max(0, s.retired_pages or 0),
                "remap_failed": bool(s.remap_failed),
                "throttle": list(dict.fromkeys(s.throttle))[:THROTTLE_MAX],
                "xid": list(dict.fromkeys(s.xid))[:XID_MAX],
            }
        )
    return entries, unreadable


def heartbeat_payload(
    *,
    node_id: str,
    agent_version: str,
    simulated: bool,
    sent_at: datetime,
    inventory: Inventory | None,
    samples: list[GpuSample],
    checks: list[CheckResult],
) -> dict[str, Any]:
    """The heartbeat body. ``inventory`` is ``None`` when unchanged since the last one the
    control plane took. A ``telemetry`` check joins ``checks`` when a GPU could not be read."""
    telemetry, unreadable = telemetry_payload(samples)
    results = list(checks)
    if unreadable:
        results.append(CheckResult("telemetry", "warn", "; ".join(unreadable)))
    return {
        "node_id": node_id,
        "agent_version": agent_version[:AGENT_VERSION_MAX],
        "simulated": simulated,
        "sent_at": rfc3339(sent_at),
        "inventory": inventory_payload(inventory) if inventory is not None else None,
        "telemetry": telemetry,
        "checks": [c.to_dict() for c in results[:CHECKS_MAX]],
    }


def parse_answer(body: object) -> Answer:
    """The heartbeat's answer; ``interval_s`` kept within 1 s and 1 h (``None`` when the
    answer has none: the agent keeps its own). Raises ``ValueError`` on an answer that is not
    the contract's shape."""
    if not isinstance(body, dict):
        raise ValueError("the heartbeat answer is not a JSON object")
    interval = body.get("interval_s")
    state = body.get("node_state")
    run_checks = body.get("run_active_checks")
    if interval is not None and (
        not isinstance(interval, int | float) or isinstance(interval, bool)
    ):
        raise ValueError("the heartbeat answer's interval_s is not a number")
    if not isinstance(state, str) or not isinstance(run_checks, bool):
        raise ValueError("the heartbeat answer lacks node_state or run_active_checks")
    value = None
    if interval is not None:
        value = float(interval) if math.isfinite(interval) else INTERVAL_MAX_S
        value = min(INTERVAL_MAX_S, max(INTERVAL_MIN_S, value))
    return Answer(
        interval_s=value,
        node_state=state,
        run_active_checks=run_checks,
    )
