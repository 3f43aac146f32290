"""Wire shapes of the compute API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from neocloud.compute import access
from neocloud.compute.clusters import ClusterView
from neocloud.compute.domain import CapacityClass, InstanceType
from neocloud.compute.prices import GpuPrices
from neocloud.compute.reconciler import workload_hostname
from neocloud.compute.slurm import scheduler_view
from neocloud.compute.tables import (
    ComputeEventRow,
    ImageRow,
    InstanceRow,
    OfferingRow,
    ReservationRow,
)
from neocloud.kernel.money import Money
from neocloud.web.fields import (
    SSH_KEYS_MAX,
    Clean,
    CleanText,
    Count,
    Hours,
    Id,
    Seconds,
    SshKey,
    Text,
    UtcTime,
)
from neocloud.web.schemas import ListOut, MoneyOut, RequestModel, ResponseModel, Time

Name = Field(None, max_length=128)
SSH_KEYS_HELP = "OpenSSH public key lines to install, besides ssh_key_ids' keys"
SshKeyIds: Any = Field(
    default_factory=list,
    max_length=16,
    description="ids of your org's SSH keys (sshkey_…) to install for the login user",
)
ImageName = Field(
    None, max_length=64, description="an image of GET /api/v1/images; default: the default image"
)
UserData = Field(
    None,
    max_length=65536,
    description="at most 64 KiB (UTF-8): a #! script run once as root at first boot, or a "
    "#cloud-config document (images with cloud_init only)",
)


# ----------------------------------------------------------------------------------- requests


class InstanceCreate(RequestModel):
    instance_type: Clean = Field(min_length=1, max_length=32, examples=["8xH100"])
    cls: Clean = Field("on_demand", alias="class", max_length=16, examples=["on_demand", "spot"])
    project_id: Id | None = None
    reservation_policy: Clean = Field("auto", max_length=8)
    reservation_ids: list[Id] = Field(default_factory=list, max_length=16)
    ssh_keys: list[SshKey] = Field(
        default_factory=list, max_length=SSH_KEYS_MAX, description=SSH_KEYS_HELP
    )
    ssh_key_ids: list[Id] = SshKeyIds
    image: Clean | None = ImageName
    user_data: CleanText | None = UserData
    name: Clean | None = Name
    queue: bool | None = Field(
        None, description="wait for capacity (pending) instead of failing with no_capacity"
    )
    max_wait_s: Seconds | None = Field(
        None, description="how long a queued request waits (1 s to 7 days; default 1 day)"
    )


# ---------------------------------------------------------------------------------- responses


class PricesOut(ResponseModel):
    on_demand: MoneyOut
    spot: MoneyOut


class AvailabilityOut(ResponseModel):
    on_demand: str
    spot: str


class InstanceTypeOut(ResponseModel):
    id: str
    object: Literal["instance_type"] = "instance_type"
    gpu_model: str
    gpus: int
    vcpus: int
    ram_gib: int
    nvme_gib: int
    whole_node: bool
    price_per_hour: PricesOut
    availability: AvailabilityOut

    @classmethod
    def of(cls, t: InstanceType, availability: str, prices: GpuPrices) -> InstanceTypeOut:
        return cls(
            id=t.name,
            gpu_model=t.gpu_model,
            gpus=t.gpus,
            vcpus=t.vcpus,
            ram_gib=t.ram_gib,
            nvme_gib=t.nvme_gib,
            whole_node=t.whole_node,
            price_per_hour=PricesOut(
                on_demand=MoneyOut.of(
                    prices.per_gpu_hour(t.gpu_model, CapacityClass.ON_DEMAND) * t.gpus
                ),
                spot=MoneyOut.of(prices.per_gpu_hour(t.gpu_model, CapacityClass.SPOT) * t.gpus),
            ),
            availability=AvailabilityOut(on_demand=availability, spot=availability),
        )


class SshOut(ResponseModel):
    """How to log in to a running machine: ``command`` is the whole line to type."""

    host: str = Field(examples=["2001:db8::5f3a:1c2e"])
    port: int = Field(examples=[22])
    user: str = Field(examples=["ubuntu"])
    command: str = Field(examples=["ssh -p 22 ubuntu@2001:db8::5f3a:1c2e"])


SSH_FIELD = Field(description="how to log in: set while it runs, null otherwise")
ADDRESSES_FIELD = Field(
    description="the machine's addresses while it is yours (provisioning to stopping); "
    "empty before and after"
)
SIMULATED_FIELD = Field(
    description="true: the simulator's address (a documentation range), which no server "
    "answers; null until provisioned"
)


class InstanceOut(ResponseModel):
    id: str
    object: Literal["instance"] = "instance"
    name: str | None
    org_id: str
    project_id: str | None
    cluster_id: str | None
    reservation_id: str | None
    instance_type: str
    gpu_model: str
    gpu_count: int
    vcpus: int
    ram_gib: int
    cls: str = Field(serialization_alias="class")
    reservation_policy: str
    state: str
    state_reason: str | None
    state_message: str | None
    node_id: str | None
    gpu_indices: list[int]
    image: str | None
    ssh_keys: int = Field(description="number of ssh keys installed")
    ssh: SshOut | None = SSH_FIELD
    addresses: list[str] = ADDRESSES_FIELD
    simulated: bool | None = SIMULATED_FIELD
    stop_at: Time | None
    stop_reason: str | None
    queue_until: Time | None
    price_per_hour: MoneyOut
    created_at: Time
    updated_at: Time
    running_at: Time | None
    ended_at: Time | None

    @classmethod
    def of(cls, row: InstanceRow, price: Money) -> InstanceOut:
        return cls(
            id=row.id,
            name=row.name,
            org_id=row.org_id,
            project_id=row.project_id,
            cluster_id=row.cluster_id,
            reservation_id=row.reservation_id,
            instance_type=row.instance_type,
            gpu_model=row.gpu_model,
            gpu_count=row.gpu_count,
            vcpus=row.vcpus,
            ram_gib=row.ram_gib,
            cls=row.cls,
            reservation_policy=row.reservation_policy,
            state=row.state,
            state_reason=row.state_reason,
            state_message=row.state_message,
            node_id=row.node_id,
            gpu_indices=list(row.gpu_indices or []),
            image=row.image,
            ssh_keys=len(row.ssh_keys or []),
            **_access_fields(row),
            stop_at=row.stop_at,
            stop_reason=row.stop_reason,
            queue_until=row.queue_until,
            price_per_hour=MoneyOut.of(price),
            created_at=row.created_at,
            updated_at=row.updated_at,
            running_at=row.running_at,
            ended_at=row.ended_at,
        )


def _access_fields(row: InstanceRow) -> dict[str, Any]:
    view = access.ssh_view(row.access, row.state)
    return {
        "ssh": None if view is None else SshOut(**view),
        "addresses": access.addresses_of(row.access, row.state),
        "simulated": access.simulated_of(row.access),
    }


class ComputeEventOut(ResponseModel):
    id: str
    object: Literal["event"] = "event"
    subject_id: str
    at: Time
    kind: str
    from_state: str | None
    to_state: str | None
    reason: str | None
    message: str | None
    node_id: str | None

    @classmethod
    def of(cls, row: ComputeEventRow) -> ComputeEventOut:
        return cls.model_validate(row, from_attributes=True)


# -------------------------------------------------------------------------------------- clusters


class TopologyIn(RequestModel):
    required: Clean = Field("fabric", max_length=32, description="all nodes inside one such domain")
    preferred: Clean | None = Field("block", max_length=32, description="use as few as possible")
    segment: Count | None = Field(None, description="groups of this many nodes, each in one block")


class SchedulerIn(RequestModel):
    type: Clean = Field(
        min_length=1,
        max_length=32,
        description="the scheduler the platform installs and manages on the members: slurm",
        examples=["slurm"],
    )


class ClusterCreate(RequestModel):
    gpu_model: Clean = Field(min_length=1, max_length=64, examples=["H100"])
    node_count: Count = Field(examples=[16])
    cls: Clean = Field("on_demand", alias="class", max_length=16)
    topology: TopologyIn = Field(default_factory=TopologyIn)
    fabric: Clean | None = Field(None, max_length=63)
    project_id: Id | None = None
    reservation_policy: Clean = Field("auto", max_length=8)
    ssh_keys: list[SshKey] = Field(
        default_factory=list, max_length=SSH_KEYS_MAX, description=SSH_KEYS_HELP
    )
    ssh_key_ids: list[Id] = SshKeyIds
    image: Clean | None = ImageName
    user_data: CleanText | None = UserData
    name: Clean | None = Name
    queue: bool | None = Field(
        None, description="wait for capacity (pending) instead of failing with no_capacity"
    )
    max_wait_s: Seconds | None = Field(
        None, description="how long a queued request waits (1 s to 7 days; default 1 day)"
    )
    scheduler: SchedulerIn | None = Field(
        None,
        description="a managed scheduler on the members once they run (docs/slurm.md):"
        ' {"type": "slurm"}',
    )


class ClusterNodeOut(ResponseModel):
    instance_id: str
    hostname: str = Field(
        description="the machine's hostname, also its name in the cluster's hosts formats",
        examples=["train-0"],
    )
    node_id: str | None
    state: str
    state_reason: str | None
    topology_path: dict[str, str] | None
    ssh: SshOut | None = SSH_FIELD
    addresses: list[str] = ADDRESSES_FIELD
    simulated: bool | None = SIMULATED_FIELD


class SchedulerControllerOut(ResponseModel):
    instance_id: str
    hostname: str
    address: str


class SchedulerOut(ResponseModel):
    type: str = Field(examples=["slurm"])
    state: str = Field(
        description="configuring, ready, failed (see reason), removing, removed",
        examples=["ready"],
    )
    reason: str | None
    simulated: bool | None = Field(
        description="true on simulated nodes: no Slurm daemons run there"
    )
    controller: SchedulerControllerOut | None = Field(
        description="the member that runs slurmctld (log in there to sinfo, srun, sbatch)"
    )
    login_command: str | None = Field(
        description="ssh to the controller as the login user, while ready",
        examples=["ssh -p 22 ubuntu@10.0.0.1"],
    )
    ready_at: Time | None


class ClusterOut(ResponseModel):
    id: str
    object: Literal["cluster"] = "cluster"
    name: str | None
    org_id: str
    project_id: str | None
    gpu_model: str
    node_count: int
    cls: str = Field(serialization_alias="class")
    topology: dict[str, Any]
    fabric: str | None
    reservation_policy: str
    state: str
    state_reason: str | None
    state_message: str | None
    queue_until: Time | None
    nodes: list[ClusterNodeOut]
    scheduler: SchedulerOut | None = Field(
        None, description="the managed scheduler, when the cluster asked for one"
    )
    price_per_hour: MoneyOut
    created_at: Time
    updated_at: Time
    running_at: Time | None
    ended_at: Time | None

    @classmethod
    def of(cls, view: ClusterView, price: Money) -> ClusterOut:
        c = view.cluster
        return cls(
            id=c.id,
            name=c.name,
            org_id=c.org_id,
            project_id=c.project_id,
            gpu_model=c.gpu_model,
            node_count=c.node_count,
            cls=c.cls,
            topology=dict(c.topology),
            fabric=c.fabric,
            reservation_policy=c.reservation_policy,
            state=c.state,
            state_reason=c.state_reason,
            state_message=c.state_message,
            queue_until=c.queue_until,
            nodes=[
                ClusterNodeOut(
                    instance_id=m.id,
                    hostname=workload_hostname(m),
                    node_id=m.node_id,
                    state=m.state,
                    state_reason=m.state_reason,
                    topology_path=view.paths.get(m.node_id) if m.node_id else None,
                    **_access_fields(m),
                )
                for m in view.members
            ],
            scheduler=_scheduler_out(view),
            price_per_hour=MoneyOut.of(price),
            created_at=c.created_at,
            updated_at=c.updated_at,
            running_at=c.running_at,
            ended_at=c.ended_at,
        )


def _scheduler_out(view: ClusterView) -> SchedulerOut | None:
    got = scheduler_view(view.cluster, view.members)
    return None if got is None else SchedulerOut.model_validate(got)


# ---------------------------------------------------------------------------------- reservations


class OfferingsQuery(RequestModel):
    gpu_model: Clean = Field(min_length=1, max_length=64)
    node_count: Count
    duration_hours: Hours = Field(description="1 day to 12 months (operators: up to 5 years)")
    start_after: UtcTime | None = None
    start_before: UtcTime | None = None
    fabric: Clean | None = Field(None, max_length=63)
    org_id: Id | None = Field(None, description="operator admins: quote for this org (contracts)")


class OfferingOut(ResponseModel):
    id: str
    object: Literal["offering"] = "offering"
    gpu_model: str
    node_count: int
    fabric: str
    start: Time
    end: Time
    price: MoneyOut
    expires_at: Time

    @classmethod
    def of(cls, row: OfferingRow) -> OfferingOut:
        return cls(
            id=row.id,
            gpu_model=row.gpu_model,
            node_count=row.node_count,
            fabric=row.fabric,
            start=row.start_at,
            end=row.end_at,
            price=MoneyOut.of(Money(row.price_amount, row.price_currency).rounded()),
            expires_at=row.expires_at,
        )


class DeclinedOfferingOut(ResponseModel):
    """An option that fits but that the admission policy does not sell, and why."""

    start: Time
    end: Time
    fabric: str
    reason: str
    bid_price_per_gpu_hour: str
    price_per_gpu_hour: str


class OfferingsOut(ListOut[OfferingOut]):
    """Offerings shown; ``declined``: options not shown (admission policy), with the reason."""

    declined: list[DeclinedOfferingOut] = Field(default_factory=list)


class ReservationCreate(RequestModel):
    offering_id: Id


class ReservationExtend(RequestModel):
    hours: Hours


class ReservationOut(ResponseModel):
    id: str
    object: Literal["reservation"] = "reservation"
    org_id: str
    offering_id: str | None
    gpu_model: str
    node_count: int
    fabric: str | None
    node_ids: list[str]
    start: Time
    end: Time
    price: MoneyOut
    state: str
    state_reason: str | None
    created_at: Time

    @classmethod
    def of(cls, row: ReservationRow) -> ReservationOut:
        return cls(
            id=row.id,
            org_id=row.org_id,
            offering_id=row.offering_id,
            gpu_model=row.gpu_model,
            node_count=row.node_count,
            fabric=row.fabric,
            node_ids=list(row.node_ids),
            start=row.start_at,
            end=row.end_at,
            price=MoneyOut.of(Money(row.price_amount, row.price_currency).rounded()),
            state=row.state,
            state_reason=row.state_reason,
            created_at=row.created_at,
        )


# -------------------------------------------------------------------------------------- capacity


class TenantLineOut(ResponseModel):
    domain: str
    org_id: str
    gpus: int = Field(description="GPUs the org holds in the domain now")


class TenantMapOut(ResponseModel):
    object: Literal["capacity.tenants"] = "capacity.tenants"
    group_by: str
    data: list[TenantLineOut] = Field(description="by domain, then most GPUs first")


class CapacityOut(ResponseModel):
    object: Literal["capacity"] = "capacity"
    region: str
    gpu_model: str
    on_demand: str
    spot: str
    free_gpus: int | None = Field(None, description="operators only")
    total_gpus: int | None = Field(None, description="operators only")
    free_nodes: int | None = Field(None, description="whole nodes free now; operators only")
    partial_node: str = Field(
        "none",
        description="availability for instance types smaller than a node: bare-metal nodes "
        "(never shared) do not count",
    )
    partial_capable_gpus: int | None = Field(
        None, description="free GPUs on nodes that may be shared; operators only"
    )


# ---------------------------------------------------------------------------------------- images

Drivers = Field(max_length=3, description="drivers that can install or run it: sim, ssh, redfish")


class ImageCreate(RequestModel):
    name: Clean = Field(min_length=1, max_length=64, examples=["ubuntu-22.04-cuda-12.4"])
    os: Clean = Field(min_length=1, max_length=64, examples=["Ubuntu 22.04"])
    cuda_driver: Clean | None = Field(None, max_length=32, examples=["550"])
    cuda_toolkit: Clean | None = Field(None, max_length=32, examples=["12.4"])
    login_user: Clean = Field("ubuntu", min_length=1, max_length=32)
    cloud_init: bool = False
    drivers: list[Annotated[Clean, Field(max_length=16)]] = Drivers
    is_default: bool = False
    description: Text = ""


class ImageUpdate(RequestModel):
    description: Text | None = None
    drivers: list[Annotated[Clean, Field(max_length=16)]] | None = Field(
        None, max_length=3, description="drivers that can install or run it: sim, ssh, redfish"
    )
    is_default: bool | None = Field(None, description="true: make it the default image")


class ImageOut(ResponseModel):
    name: str
    object: Literal["image"] = "image"
    os: str
    cuda_driver: str | None
    cuda_toolkit: str | None
    login_user: str
    cloud_init: bool
    drivers: list[str]
    is_default: bool
    description: str
    created_at: Time
    updated_at: Time
    retired_at: Time | None

    @classmethod
    def of(cls, row: ImageRow) -> ImageOut:
        return cls(
            name=row.name,
            os=row.os,
            cuda_driver=row.cuda_driver,
            cuda_toolkit=row.cuda_toolkit,
            login_user=row.login_user,
            cloud_init=row.cloud_init,
            drivers=list(row.drivers),
            is_default=bool(row.is_default),
            description=row.description,
            created_at=row.created_at,
            updated_at=row.updated_at,
            retired_at=row.retired_at,
        )
