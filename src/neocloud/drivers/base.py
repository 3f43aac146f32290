"""The provisioning port: what the reconciler and burn-in ask of the hardware, whatever drives it.

A step answers at once with a ``StepResult``: whether it was accepted and how many seconds it
takes to complete. The reconciler records the due time and checks back; it never sleeps.

The driver is chosen per node (``NodeRef.driver``: ``sim``, ``ssh``, later ``redfish``) from the
platform's ``Drivers``. A driver that cannot share a node between workloads (bare metal:
``shares_nodes`` false) only ever receives whole-node workloads: the scheduler keeps partial-node
instance types off such nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

DEFAULT_LOGIN_USER = "ubuntu"
# The drivers whose nodes may hold several workloads at once (partial-node instance types,
# fractions). The scheduler reads this static rule (a node's ``driver`` column), so placement
# stays pure; ``Drivers.shares_nodes`` answers the same for the drivers a platform runs.
SHARING_DRIVERS: frozenset[str] = frozenset({"sim"})


def driver_shares_nodes(name: str) -> bool:
    """Whether nodes that name driver ``name`` may hold partial-node workloads."""
    return name in SHARING_DRIVERS


@dataclass(frozen=True, slots=True)
class NodeRef:
    """The node a step acts on (the driver needs no database).

    ``config`` holds the node's driver settings that are not secret (an address, a port, a
    user); ``sealed`` its credentials (a private key, a BMC password) encrypted at rest, which
    only the driver opens, with the platform's secret box, at the moment it connects.
    """

    id: str
    hostname: str
    gpu_model: str
    gpu_count: int = 0
    driver: str = "sim"
    config: Mapping[str, Any] = field(default_factory=dict)
    sealed: str | None = None
    bmc: dict[str, Any] | None = None
    role: str = (
        "gpu"  # gpu, storage or service (``fleet.domain.NodeRole``): the latter have no GPUs
    )


@dataclass(frozen=True, slots=True)
class Login:
    """The tenant's login on the node: the user the image names, their public keys (OpenSSH
    lines), and whether the user gets passwordless sudo (an operator setting per node)."""

    user: str = DEFAULT_LOGIN_USER
    public_keys: tuple[str, ...] = ()
    sudo: bool = True
    # A workload the platform runs in the tenant's name (a studio job): the user exists for its
    # processes, nobody logs in, so it may have no key.
    service: bool = False


@dataclass(frozen=True, slots=True)
class ImageRef:
    """The image a workload runs: its catalog name and whether it carries cloud-init."""

    name: str
    cloud_init: bool = False


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    """Everything a real provisioning needs besides the node."""

    workload_id: str
    gpu_indices: tuple[int, ...]
    hostname: str  # the name the tenant's machine takes
    login: Login = field(default_factory=Login)
    image: ImageRef | None = None
    user_data: str | None = None  # a "#!" script run once as root, or "#cloud-config"


@dataclass(frozen=True, slots=True)
class Access:
    """How a tenant reaches a provisioned workload. ``simulated``: an address from a
    documentation range that no packet reaches (the simulator's answer), never a real one."""

    host: str
    port: int
    user: str
    addresses: tuple[str, ...] = ()
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "addresses": list(self.addresses),
            "simulated": self.simulated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Access:
        return cls(
            str(data["host"]),
            int(data["port"]),
            str(data["user"]),
            tuple(str(a) for a in data.get("addresses", ())),
            bool(data.get("simulated", False)),
        )


@dataclass(frozen=True, slots=True)
class StepResult:
    """``access``: set by a provision that succeeded; ``notes``: what the step wants kept in
    the workload's events (a user data script's exit status and output tail, say); ``repair``:
    the step failed half-way and the node is unfit for the next tenant until repaired."""

    ok: bool
    duration_s: float = 0.0
    message: str | None = None
    access: Access | None = None
    notes: tuple[str, ...] = ()
    repair: bool = False


@dataclass(frozen=True, slots=True)
class HealthResult:
    ok: bool
    checks: dict[str, str] = field(default_factory=dict)
    message: str | None = None


class Driver(Protocol):
    """Provision and deprovision workloads, reboot, wipe, power and check nodes."""

    @property
    def shares_nodes(self) -> bool:
        """Whether one node may hold several workloads (partial-node instance types)."""
        ...

    def provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        """Start a workload (an instance, or one node of a cluster) on its GPUs."""
        ...

    def deprovision(self, node: NodeRef, *, workload_id: str, login_user: str) -> StepResult:
        """Stop a workload: the tenant's processes and login are gone when it succeeds."""
        ...

    def reboot(self, node: NodeRef, *, workload_id: str) -> StepResult:
        """Restart the workload's machine; it stays the tenant's."""
        ...

    def wipe(self, node: NodeRef) -> StepResult:
        """Clean the node between tenants (scratch, GPU memory); a failure sends it to repair."""
        ...

    def power(self, node: NodeRef, *, on: bool) -> StepResult: ...

    def health(self, node: NodeRef) -> HealthResult: ...


@runtime_checkable
class Executor(Protocol):
    """An optional capability of a driver: run a script as root on a node (configuring
    software on a tenant's running cluster, e.g. Slurm). ``stdin``: bytes handed to the script
    on its standard input, never on its command line (a secret such as a munge key goes there).
    Answers (exit status, output); -1 with a message when the script could not be run or did
    not finish within ``timeout_s`` seconds. Never raises for a node's failure."""

    def run_root(
        self, node: NodeRef, script: str, *, timeout_s: float, stdin: bytes | None = None
    ) -> tuple[int, str]: ...


@runtime_checkable
class Streamer(Protocol):
    """An optional capability of a driver: run a long script as root on a node and hand its
    standard output to the caller line by line while it runs (a studio job training on the
    node compute gave it). ``stdin`` is sent first and the script's standard input then stays
    open for as long as the caller waits: it reaches end-of-file only when the caller goes
    (``on_line`` raised, the deadline passed, the caller's process died), so a script can stop
    with its caller by watching it. ``on_line`` may raise to stop: the connection is closed and
    the exception goes on to the caller. Answers (exit status, the last of standard error);
    -1 with a message naming the node when the script could not be run or did not finish
    within ``timeout_s`` seconds. Never raises for a node's failure."""

    def stream_root(
        self,
        node: NodeRef,
        script: str,
        *,
        timeout_s: float,
        stdin: bytes,
        on_line: Callable[[str], None],
    ) -> tuple[int, str]: ...


class SeedPublisher(Protocol):
    """Where a driver puts a cloud-init seed image for a BMC to fetch (``fleet.seeds``): it
    answers the URL (holding a one-boot token) and forgets a node's seeds when asked."""

    def publish(self, *, node_id: str, workload_id: str, image: bytes) -> str: ...

    def discard(self, *, node_id: str, workload_id: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class WipeProgress:
    """Where a wipe that takes a while (a reimage) stands: ``done`` and ``ok`` (the node may
    serve the next tenant), ``done`` and not ``ok`` (it failed: ``message`` says why), or not
    ``done`` (check again after ``retry_s`` seconds)."""

    done: bool
    ok: bool = True
    retry_s: float = 0.0
    message: str | None = None
    notes: tuple[str, ...] = ()


@runtime_checkable
class WipeChecker(Protocol):
    """An optional capability of a driver whose ``wipe`` only starts the work (a reimage): the
    reconciler asks, once the wipe's duration has passed, whether it is over; ``elapsed_s``:
    seconds since the wipe started. Never raises for a node's failure."""

    def check_wipe(self, node: NodeRef, *, elapsed_s: float) -> WipeProgress: ...


class UnknownDriver(LookupError):
    """A node names a driver this platform does not run."""


class Drivers:
    """The drivers a platform runs, chosen per node by ``NodeRef.driver``.

    ``Drivers.only(d)`` sends every node to one driver whatever it names (the simulator in
    tests and trace simulations)."""

    def __init__(self, drivers: Mapping[str, Driver], *, only: Driver | None = None) -> None:
        self.by_name = dict(drivers)
        self.only_driver = only

    @classmethod
    def only(cls, driver: Driver) -> Drivers:
        return cls({}, only=driver)

    @classmethod
    def of(cls, driver: Driver | Drivers) -> Drivers:
        return driver if isinstance(driver, Drivers) else cls.only(driver)

    def for_node(self, node: NodeRef) -> Driver:
        if self.only_driver is not None:
            return self.only_driver
        try:
            return self.by_name[node.driver]
        except KeyError:
            raise UnknownDriver(f"no {node.driver!r} driver runs here") from None

    def shares_nodes(self, name: str) -> bool:
        """Whether nodes of driver ``name`` may hold partial-node workloads (unknown: no)."""
        if self.only_driver is not None:
            return self.only_driver.shares_nodes
        driver = self.by_name.get(name)
        return driver is not None and driver.shares_nodes
