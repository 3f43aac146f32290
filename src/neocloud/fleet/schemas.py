"""Wire shapes of the fleet API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool

from neocloud.fleet.catalog import GpuModel
from neocloud.fleet.domain import CheckStatus, NodeState
from neocloud.fleet.node_control import Inventory, PowerAction, PowerResult
from neocloud.fleet.node_drivers import DRIVER_NAMES, DriverConfigIn
from neocloud.fleet.service import DomainCount, ImportResult, SummaryLine
from neocloud.fleet.spec import HOSTNAME_PATTERN, MAX_LABELS, LabelKey, Labels, LabelValue
from neocloud.fleet.tables import HealthCheckRow, NodeEventRow, NodeRow
from neocloud.kernel.money import Money
from neocloud.web.fields import Clean, CleanText
from neocloud.web.schemas import MoneyOut, RequestModel, ResponseModel, Time

Reason = Annotated[Clean | None, Field(None, max_length=500)]


# ----------------------------------------------------------------------------------- requests


class NodeActionIn(RequestModel):
    reason: Reason = None


class NodeTransitionIn(RequestModel):
    to: NodeState
    reason: Reason = None


class NodePowerIn(RequestModel):
    action: PowerAction = Field(description="on, off (hard power off) or reset (hard reset)")
    force: StrictBool = Field(
        False, description="power off or reset even while a tenant's workload is on the node"
    )


class HealthCheckIn(RequestModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    status: CheckStatus
    message: CleanText | None = Field(None, max_length=1000)


class HealthReportIn(RequestModel):
    checks: list[HealthCheckIn] = Field(min_length=1, max_length=100)


class NodeCreate(RequestModel):
    """One server to register; it starts ``enrolled`` and burn-in checks it through its
    driver before any tenant can get it."""

    hostname: str = Field(
        min_length=1, max_length=253, pattern=HOSTNAME_PATTERN, description="a DNS name, unique"
    )
    role: Literal["gpu", "storage", "service"] = Field(
        "gpu",
        description="gpu: rented to tenants; storage or service: the platform's own (no GPUs, "
        "never rented)",
    )
    gpu_model: Clean | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="H100, H200-SXM-141GB, … (required for a gpu node; left out otherwise)",
    )
    gpu_count: int | None = Field(
        None,
        ge=0,
        le=16,
        strict=True,
        description="GPUs the server declares: 1..16 for a gpu node; 0 or left out otherwise",
    )
    vcpus: int = Field(ge=1, le=4096, strict=True)
    ram_gib: int = Field(ge=1, le=1 << 20, strict=True)
    nvme_gib: int = Field(0, ge=0, le=1 << 24, strict=True)
    topology: dict[LabelKey, LabelValue] = Field(
        max_length=16, description="{level: domain name} for every level of the fleet"
    )
    labels: Labels = Field(default_factory=dict, max_length=MAX_LABELS)
    driver: Literal["sim", "ssh", "redfish"] = Field(
        description="which driver runs it: " + ", ".join(DRIVER_NAMES)
    )
    driver_config: DriverConfigIn | None = Field(
        None,
        description="how the driver reaches it; private_key, bmc_username and bmc_password "
        "are write-only",
    )


class FleetImportIn(RequestModel):
    spec: str = Field(min_length=1, description="the fleet spec, as YAML text")
    initial_state: Literal["available", "enrolled", "burn_in"] = "available"


# ---------------------------------------------------------------------------------- responses


class NodeOut(ResponseModel):
    id: str
    object: Literal["node"] = "node"
    hostname: str
    role: str = Field(description="gpu, storage or service (the platform's own, no GPUs)")
    gpu_model: str = Field(description="the catalog model; none for a node without GPUs")
    gpu_count: int
    vcpus: int
    ram_gib: int
    nvme_gib: int
    topology: dict[str, str]
    state: str
    state_reason: str | None
    cordoned: bool = Field(description="held out of service by an operator until uncordoned")
    drain_requested_at: Time | None
    health: str
    health_checks: dict[str, Any]
    labels: dict[str, str]
    bmc: dict[str, Any] | None = Field(description="where its baseboard controller answers")
    driver: str = Field(description="which driver runs it (sim, ssh, redfish)")
    driver_config: dict[str, Any] = Field(description="the driver's settings, secrets left out")
    credentials: list[str] = Field(
        description="names of the credentials set (sealed at rest, never returned)"
    )
    capex: MoneyOut | None
    book_life_years: int | None
    in_service_at: Time | None
    created_at: Time
    updated_at: Time

    @classmethod
    def of(cls, row: NodeRow) -> NodeOut:
        capex = None
        if row.capex_amount is not None:
            capex = MoneyOut.of(Money(row.capex_amount, row.capex_currency or "USD").rounded())
        return cls(
            id=row.id,
            hostname=row.hostname,
            role=row.role or "gpu",
            gpu_model=row.gpu_model,
            gpu_count=row.gpu_count,
            vcpus=row.vcpus,
            ram_gib=row.ram_gib,
            nvme_gib=row.nvme_gib,
            topology=dict(row.topology),
            state=row.state,
            state_reason=row.state_reason,
            cordoned=row.hold,
            drain_requested_at=row.drain_requested_at,
            health=row.health,
            health_checks=dict(row.health_checks or {}),
            labels=dict(row.labels or {}),
            bmc=public_bmc(row.bmc),
            driver=row.driver or "sim",
            driver_config=public_config(row.driver_config),
            credentials=list((row.driver_config or {}).get("credentials", [])),
            capex=capex,
            book_life_years=row.book_life_years,
            in_service_at=row.in_service_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


BMC_PUBLIC_FIELDS = ("endpoint", "vendor")


def public_bmc(bmc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The BMC's endpoint and vendor: nothing else of it ever leaves (a credential belongs in
    the sealed ``driver_secret``)."""
    if bmc is None:
        return None
    return {k: bmc[k] for k in BMC_PUBLIC_FIELDS if k in bmc}


def public_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """A node's driver settings as shown: without the credential names (``credentials``) and
    without any credential, should one ever be stored there by mistake."""
    hidden = {"credentials", "private_key", "password", "secret", "bmc_username", "bmc_password"}
    return {k: v for k, v in (config or {}).items() if k not in hidden}


class NodePowerOut(ResponseModel):
    object: Literal["node_power"] = "node_power"
    node_id: str
    hostname: str
    driver: str
    action: str
    forced: bool = Field(description="a tenant's workload was on the node and force was given")
    duration_s: float = Field(description="seconds the machine takes to get there (accepted now)")
    message: str | None
    notes: list[str]
    simulated: bool = Field(description="the simulator's pretend power: no machine was touched")

    @classmethod
    def of(cls, result: PowerResult) -> NodePowerOut:
        node, outcome = result.node, result.outcome
        return cls(
            node_id=node.id,
            hostname=node.hostname,
            driver=node.driver or "sim",
            action=result.action,
            forced=result.forced,
            duration_s=outcome.duration_s,
            message=outcome.message,
            notes=list(outcome.notes),
            simulated=outcome.simulated,
        )


class NodeInventoryOut(ResponseModel):
    object: Literal["node_inventory"] = "node_inventory"
    node_id: str
    hostname: str
    driver: str
    source: str = Field(description="bmc (redfish), ssh, or declared (what it was registered as)")
    simulated: bool = Field(description="declared facts of a simulated node: no machine was asked")
    inventory: dict[str, Any] = Field(description="what the driver read; null: not reported")

    @classmethod
    def of(cls, node: NodeRow, inventory: Inventory) -> NodeInventoryOut:
        return cls(
            node_id=node.id,
            hostname=node.hostname,
            driver=node.driver or "sim",
            source=inventory.source,
            simulated=inventory.simulated,
            inventory=dict(inventory.data),
        )


class NodeEventOut(ResponseModel):
    id: str
    object: Literal["node_event"] = "node_event"
    node_id: str
    at: Time
    from_state: str | None
    to_state: str
    reason: str | None
    actor: str

    @classmethod
    def of(cls, row: NodeEventRow) -> NodeEventOut:
        return cls.model_validate(row, from_attributes=True)


class HealthCheckOut(ResponseModel):
    id: str
    object: Literal["health_check"] = "health_check"
    node_id: str
    at: Time
    name: str
    status: str
    message: str | None

    @classmethod
    def of(cls, row: HealthCheckRow) -> HealthCheckOut:
        return cls.model_validate(row, from_attributes=True)


class GpuModelOut(ResponseModel):
    id: str
    object: Literal["gpu_model"] = "gpu_model"
    name: str
    vendor: str
    architecture: str
    aliases: list[str]
    memory_gb: int
    tdp_w: int
    nvlink_domain: int
    max_gpus_per_node: int
    bf16_tflops: str = Field(description="peak dense bf16 TFLOP/s per GPU")
    hbm_tbps: str = Field(description="memory bandwidth per GPU, TB/s")
    list_price_per_gpu_hour: MoneyOut

    @classmethod
    def of(cls, m: GpuModel) -> GpuModelOut:
        return cls(
            id=m.id,
            name=m.name,
            vendor=m.vendor,
            architecture=m.architecture,
            aliases=list(m.aliases),
            memory_gb=m.memory_gb,
            tdp_w=m.tdp_w,
            nvlink_domain=m.nvlink_domain,
            max_gpus_per_node=m.max_gpus_per_node,
            bf16_tflops=str(m.bf16_tflops),
            hbm_tbps=str(m.hbm_tbps),
            list_price_per_gpu_hour=MoneyOut.of(m.list_price_per_gpu_hour),
        )


class SummaryLineOut(ResponseModel):
    gpu_model: str
    state: str
    domain: str | None
    nodes: int
    gpus: int
    health: str | None = Field(default=None, description="set when asked with health=true")

    @classmethod
    def of(cls, line: SummaryLine) -> SummaryLineOut:
        return cls.model_validate(line, from_attributes=True)


class FleetSummaryOut(ResponseModel):
    object: Literal["fleet_summary"] = "fleet_summary"
    group_by: str | None
    total_nodes: int
    total_gpus: int
    by_state: dict[str, int] = Field(description="nodes per state")
    data: list[SummaryLineOut] = Field(description="one line per model x state (x domain)")


class DomainOut(ResponseModel):
    level: str
    name: str
    parent: str
    nodes: int
    gpus: int

    @classmethod
    def of(cls, d: DomainCount) -> DomainOut:
        return cls.model_validate(d, from_attributes=True)


class TopologyOut(ResponseModel):
    object: Literal["topology"] = "topology"
    levels: list[str]
    domains: list[DomainOut]


class FleetImportOut(ResponseModel):
    id: str
    object: Literal["fleet_import"] = "fleet_import"
    nodes_created: int
    gpus_created: int
    domains_created: int
    initial_state: str

    @classmethod
    def of(cls, r: ImportResult) -> FleetImportOut:
        return cls(
            id=r.import_id,
            nodes_created=r.nodes_created,
            gpus_created=r.gpus_created,
            domains_created=r.domains_created,
            initial_state=r.initial_state.value,
        )
