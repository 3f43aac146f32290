"""The heartbeat contract (brief H9, "Contract"), as a checker the agent's tests apply to what
the agent really posts. Written from the contract's text, not imported from the control
plane's schemas (the agent and the control plane each follow the contract on their own); the
string bounds are the control plane's (fleet/agent_schemas.py): uuid and serial 64, GPU name
96, versions and PCI bus id 32, check names 58 of ``[A-Za-z0-9_.:-]``, units 16."""

from __future__ import annotations

import re
from typing import Any

CHECK_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,58}$")

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")

TOP = {"node_id", "agent_version", "simulated", "sent_at", "inventory", "telemetry", "checks"}
INVENTORY = {"driver_version", "cuda_version", "gpus"}
GPU = {"index", "uuid", "serial", "name", "memory_total_mib", "pci_bus_id", "nvlink_active"}
TELEMETRY = {
    "index", "utilization_pct", "memory_used_mib", "temperature_c", "power_w", "sm_clock_mhz",
    "ecc_correctable", "ecc_uncorrectable", "retired_pages", "remap_failed", "throttle", "xid",
}  # fmt: skip
CHECK = {"name", "status", "message", "value", "unit"}


def _int(value: Any, *, nullable: bool = False, minimum: int | None = 0) -> None:
    if value is None and nullable:
        return
    assert isinstance(value, int), value
    assert not isinstance(value, bool), value
    assert minimum is None or value >= minimum, value


def _num(value: Any, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    assert isinstance(value, int | float), value
    assert not isinstance(value, bool), value


def _str(value: Any, *, nullable: bool = False, max_len: int = 1000) -> None:
    if value is None and nullable:
        return
    assert isinstance(value, str), value
    assert 0 < len(value) <= max_len, value
    assert all(ch.isprintable() for ch in value), value


def check_heartbeat(body: dict[str, Any]) -> None:
    """Fail unless ``body`` has exactly the contract's fields, types and bounds."""
    assert set(body) == TOP, set(body) ^ TOP
    _str(body["node_id"], max_len=200)
    _str(body["agent_version"], max_len=32)
    assert isinstance(body["simulated"], bool)
    assert RFC3339.match(body["sent_at"]), body["sent_at"]
    inventory = body["inventory"]
    if inventory is not None:
        assert set(inventory) == INVENTORY
        _str(inventory["driver_version"], nullable=True, max_len=32)
        _str(inventory["cuda_version"], nullable=True, max_len=32)
        assert isinstance(inventory["gpus"], list)
        assert len(inventory["gpus"]) <= 16
        for gpu in inventory["gpus"]:
            assert set(gpu) == GPU, set(gpu) ^ GPU
            _int(gpu["index"])
            _int(gpu["index"], minimum=0)
            assert gpu["index"] < 16
            _str(gpu["uuid"], max_len=64)
            _str(gpu["serial"], nullable=True, max_len=64)
            _str(gpu["name"], max_len=96)
            _int(gpu["memory_total_mib"])
            _str(gpu["pci_bus_id"], nullable=True, max_len=32)
            _int(gpu["nvlink_active"], nullable=True)
    assert isinstance(body["telemetry"], list)
    assert len(body["telemetry"]) <= 16
    for t in body["telemetry"]:
        assert set(t) == TELEMETRY, set(t) ^ TELEMETRY
        _int(t["index"])
        _num(t["utilization_pct"])
        assert 0 <= t["utilization_pct"] <= 100
        _int(t["memory_used_mib"])
        _num(t["temperature_c"])
        assert -50 <= t["temperature_c"] <= 200
        _num(t["power_w"])
        assert t["power_w"] >= 0
        _int(t["sm_clock_mhz"], nullable=True)
        for counter in ("ecc_correctable", "ecc_uncorrectable", "retired_pages"):
            _int(t[counter])
        assert isinstance(t["remap_failed"], bool)
        assert isinstance(t["throttle"], list)
        assert len(t["throttle"]) <= 8
        assert all(isinstance(x, str) and x for x in t["throttle"])
        assert isinstance(t["xid"], list)
        assert len(t["xid"]) <= 16
        for x in t["xid"]:
            _int(x)
    assert isinstance(body["checks"], list)
    assert len(body["checks"]) <= 16
    for c in body["checks"]:
        assert set(c) == CHECK, set(c) ^ CHECK
        assert CHECK_NAME.match(c["name"]), c["name"]
        assert c["status"] in ("pass", "warn", "fail")
        _str(c["message"], nullable=True)
        _num(c["value"], nullable=True)
        _str(c["unit"], nullable=True, max_len=16)
