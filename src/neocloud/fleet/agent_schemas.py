"""The node agent's wire shapes: what ``neocloud agent`` sends in a heartbeat and what it gets
back, and the agent token an operator issues. Every field is bounded; the agent sends exactly
these shapes (docs/agent.md is the contract)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from neocloud.fleet.schemas import HealthCheckOut
from neocloud.fleet.tables import GpuTelemetryLatestRow, GpuTelemetrySeriesRow
from neocloud.web.fields import NAME_PATTERN, Id, UtcTime
from neocloud.web.schemas import RequestModel, ResponseModel, Time

MAX_GPUS = 16  # a node with more GPUs than this is not a server we know of
MAX_CHECKS = 16
MAX_THROTTLE = 8
MAX_XID = 16
MIB_MAX = 16 * 1024 * 1024  # 16 TiB of GPU memory: far above any GPU
COUNTER_MAX = 2**53  # ECC counters and the like: what a JSON number carries exactly


def _line(max_length: int) -> StringConstraints:
    """A trimmed one-line string of at most ``max_length`` characters, no control characters."""
    return StringConstraints(
        strict=True, strip_whitespace=True, max_length=max_length, pattern=NAME_PATTERN
    )


Line16 = Annotated[str, _line(16)]
Line32 = Annotated[str, _line(32)]
Line64 = Annotated[str, _line(64)]
Line1000 = Annotated[str, _line(1000)]
Uuid = Annotated[str, _line(64), StringConstraints(min_length=1)]
Version = Annotated[str, _line(32), StringConstraints(min_length=1)]
GpuName = Annotated[str, _line(96), StringConstraints(min_length=1)]


Word = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/-]+$"),
]
GpuIndex = Annotated[int, Field(strict=True, ge=0, lt=MAX_GPUS)]
Mib = Annotated[int, Field(strict=True, ge=0, le=MIB_MAX)]
Counter = Annotated[int, Field(strict=True, ge=0, le=COUNTER_MAX)]


class GpuInventoryIn(RequestModel):
    index: GpuIndex
    uuid: Uuid
    serial: Line64 | None = None
    name: GpuName = Field(description="NVML's product name, e.g. 'NVIDIA H100 80GB HBM3'")
    memory_total_mib: Mib
    pci_bus_id: Line32 | None = None
    nvlink_active: Annotated[int, Field(strict=True, ge=0, le=64)] | None = None


class InventoryIn(RequestModel):
    driver_version: Line32 | None = None
    cuda_version: Line32 | None = None
    gpus: list[GpuInventoryIn] = Field(max_length=MAX_GPUS)


class GpuTelemetryIn(RequestModel):
    index: GpuIndex
    utilization_pct: float = Field(ge=0, le=100)
    memory_used_mib: Mib
    temperature_c: float = Field(ge=-50, le=200)
    power_w: float = Field(ge=0, le=10_000)
    sm_clock_mhz: Annotated[int, Field(strict=True, ge=0, le=100_000)] | None = None
    ecc_correctable: Counter = 0
    ecc_uncorrectable: Counter = 0
    retired_pages: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 0
    remap_failed: bool = False
    throttle: list[Word] = Field(
        default_factory=list,
        max_length=MAX_THROTTLE,
        description="active clock-throttle reasons: thermal, power, …",
    )
    xid: list[Annotated[int, Field(strict=True, ge=0, le=1_000_000)]] = Field(
        default_factory=list, max_length=MAX_XID, description="XID events since the last beat"
    )


class AgentCheckIn(RequestModel):
    # stored as ``agent.<name>`` in a 64-character column
    name: str = Field(min_length=1, max_length=58, pattern=r"^[A-Za-z0-9_.:-]+$")
    status: Literal["pass", "warn", "fail"]
    message: Line1000 | None = None
    value: float | None = Field(None, ge=-1e18, le=1e18)
    unit: Line16 | None = None


class HeartbeatIn(RequestModel):
    node_id: Id
    agent_version: Version
    simulated: bool
    sent_at: UtcTime
    inventory: InventoryIn | None = None
    telemetry: list[GpuTelemetryIn] = Field(default_factory=list, max_length=MAX_GPUS)
    checks: list[AgentCheckIn] = Field(default_factory=list, max_length=MAX_CHECKS)


class HeartbeatOut(ResponseModel):
    interval_s: float = Field(description="seconds until the next heartbeat")
    node_state: str
    run_active_checks: bool = Field(
        description="true only on an idle node (available or burn-in, no allocation)"
    )


class AgentTokenOut(ResponseModel):
    object: Literal["agent_token"] = "agent_token"
    node_id: str
    token: str = Field(description="shown once: only its hash is kept")
    created_at: Time


# --------------------------------------------------------------------------- telemetry reads


class GpuTelemetryOut(ResponseModel):
    node_id: str
    gpu_index: int
    at: Time
    uuid: str | None
    utilization_pct: float
    memory_used_mib: int
    temperature_c: float
    power_w: float
    sm_clock_mhz: int | None
    ecc_correctable: int
    ecc_uncorrectable: int
    retired_pages: int
    remap_failed: bool
    throttle: list[str]
    xid: list[int]

    @classmethod
    def of(cls, row: GpuTelemetryLatestRow) -> GpuTelemetryOut:
        return cls.model_validate(row, from_attributes=True)


class GpuSeriesPointOut(ResponseModel):
    node_id: str
    gpu_index: int
    bucket_at: Time
    samples: int
    utilization_avg: float
    utilization_max: float
    memory_used_avg_mib: float
    memory_used_max_mib: int
    temperature_avg_c: float
    temperature_max_c: float
    power_avg_w: float
    power_max_w: float
    ecc_uncorrectable: int

    @classmethod
    def of(cls, row: GpuTelemetrySeriesRow) -> GpuSeriesPointOut:
        return cls.model_validate(row, from_attributes=True)


class AgentStatusOut(ResponseModel):
    seen_at: Time | None
    version: str | None
    simulated: bool | None
    token_issued_at: Time | None
    inventory_at: Time | None
    inventory: dict[str, Any] | None


class NodeHealthOut(ResponseModel):
    """A node's health for the operator: state, the latest result per check, the recent check
    history (newest first), the agent's status and the GPUs' latest telemetry."""

    object: Literal["node_health"] = "node_health"
    node_id: str
    state: str
    health: str
    checks: dict[str, Any]
    history: list[HealthCheckOut]
    agent: AgentStatusOut
    telemetry: list[GpuTelemetryOut]


class InstanceMetricsOut(ResponseModel):
    """An instance's GPUs: the latest values and the series since ``since``."""

    object: Literal["instance_metrics"] = "instance_metrics"
    instance_id: str
    node_id: str | None
    gpu_indices: list[int]
    since: Time
    step_s: int
    latest: list[GpuTelemetryOut]
    series: list[GpuSeriesPointOut]
