"""Wire shapes of the fleet API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from neocloud.fleet.catalog import GpuModel
from neocloud.fleet.domain import CheckStatus, NodeState
from neocloud.fleet.service import DomainCount, ImportResult, SummaryLine
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


class HealthCheckIn(RequestModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    status: CheckStatus
    message: CleanText | None = Field(None, max_length=1000)


class HealthReportIn(RequestModel):
    checks: list[HealthCheckIn] = Field(min_length=1, max_length=100)


class FleetImportIn(RequestModel):
    spec: str = Field(min_length=1, description="the fleet spec, as YAML text")
    initial_state: Literal["available", "enrolled", "burn_in"] = "available"


# ---------------------------------------------------------------------------------- responses


class NodeOut(ResponseModel):
    id: str
    object: Literal["node"] = "node"
    hostname: str
    gpu_model: str
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
    bmc: dict[str, Any] | None
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
            bmc=row.bmc,
            capex=capex,
            book_life_years=row.book_life_years,
            in_service_at=row.in_service_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
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
