"""Bring a platform up: database, migrations, the operator org and its first key, a fleet; and
its background work (compute worker, invoicing), in the API's process or in one of its own."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neocloud.db.engine import Database
from neocloud.db.migrate import current_revisions, head_revisions, upgrade
from neocloud.db.notify import Listener, Sender, listener_for, sender_for
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict
from neocloud.kernel.secrets import SecretBox
from neocloud.kernel.settings import Settings

if TYPE_CHECKING:
    from neocloud.billing.worker import InvoicingWorker
    from neocloud.compute.worker import Worker
    from neocloud.drivers.base import Drivers
    from neocloud.drivers.ssh_commands import AgentInstall
    from neocloud.studio.finetuning.worker import FineTuneWorker


@dataclass
class Prepared:
    db: Database
    admin_key: str | None  # set only when this start created it
    admin_key_path: Path
    imported_nodes: int


def prepare(
    settings: Settings, clock: Clock, *, fleet_file: Path | None = None, demo_fleet: bool = True
) -> Prepared:
    """Migrate, create the operator org on first start, and load a fleet into an empty one."""
    from neocloud.compute import images as compute_images
    from neocloud.compute import service as compute_service
    from neocloud.fleet import service as fleet_service
    from neocloud.fleet.spec import demo_spec, load_spec_file
    from neocloud.tenancy import service as tenancy_service

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.from_settings(settings)
    upgrade(db)
    admin_key = tenancy_service.bootstrap_operator(db=db, clock=clock)
    key_path = settings.data_dir / "admin-key"
    if admin_key is not None:
        _write_secret(key_path, admin_key)
    imported = 0
    if fleet_service.count_nodes(db=db) == 0 and (fleet_file or demo_fleet):
        spec = load_spec_file(fleet_file) if fleet_file else demo_spec()
        imported = fleet_service.import_spec(
            db=db, clock=clock, spec=spec, box=secret_box(settings)
        ).nodes_created
    compute_service.register_default_quotas(db=db, clock=clock)
    compute_images.seed_catalog(db=db, clock=clock)  # an empty catalog gets the built-in images
    _price_builtin_models(db, clock)
    return Prepared(db, admin_key, key_path, imported)


def _price_builtin_models(db: Database, clock: Clock) -> None:
    """Put the built-in models' token prices in the price book (first start, or a model new to
    this release), so what ``/v1/models`` advertises is what the invoice charges."""
    from neocloud.studio.finetuning.service import training_prices
    from neocloud.studio.finetuning.serving import fine_tunable
    from neocloud.studio.pricing import publish_missing, token_prices
    from neocloud.studio.runtime import builtin_catalog

    catalog = builtin_catalog()
    prices = {**token_prices(catalog.models.values()), **training_prices(fine_tunable(catalog))}
    publish_missing(db=db, clock=clock, prices=prices)


SECRET_KEY_FILE = "secret-key"  # noqa: S105 - a file name, not a secret


def secret_box(settings: Settings) -> SecretBox:
    """The box that seals node credentials: ``NEOCLOUD_SECRET_KEY``, else the key file under
    the data directory (created with mode 0600 on first start, never overwritten)."""
    if settings.secret_key:
        return SecretBox(settings.secret_key)
    path = settings.data_dir / SECRET_KEY_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole under a temporary name, then linked into place: two processes starting
        # at once agree on one key, and neither ever reads a half-written file.
        tmp = settings.data_dir / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(SecretBox.new_key().decode("ascii") + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return SecretBox(path.read_text().strip())


def _write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` readable by its owner only (mode 0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    path.chmod(0o600)


@dataclass
class Background:
    """The background work running in this process, on a connection pool of its own (so it
    never queues behind request threads for a connection)."""

    db: Database
    compute: Worker
    invoicing: InvoicingWorker
    listener: Listener | None  # wakes ``compute`` when another process's API wrote
    finetune: FineTuneWorker | None = None  # the studio's fine-tuning jobs (local runner)

    def stop(self) -> None:
        """Stop the loops and release their leases, so another process takes over at once."""
        if self.finetune is not None:
            self.finetune.stop()
        if self.listener is not None:
            self.listener.stop()
        self.invoicing.stop()
        self.compute.stop()
        self.db.dispose()


def platform_drivers(
    settings: Settings,
    *,
    interactive: bool = False,
    db: Database | None = None,
    clock: Clock | None = None,
) -> Drivers:
    """The drivers this platform runs, chosen per node by its ``driver``: the simulator
    (``NEOCLOUD_SIM_*``) for the demo fleet, ``ssh`` for servers that already have an OS and
    ``redfish`` for servers driven through their BMC, both opening a node's sealed credentials
    with the platform's secret box. Every process that drives nodes (``neocloud up``,
    ``neocloud worker``) gets them here; the API process too (``interactive``: shorter timeouts,
    as an operator's ``nodes power`` or ``nodes inspect`` waits for the answer). With ``db``
    and ``clock``, redfish nodes boot with cloud-init seeds stored there and served by the API
    at the public URL, and redfish + ssh nodes reimage between tenants."""
    from neocloud.drivers.baremetal import BareMetalDriver
    from neocloud.drivers.base import Driver, Drivers
    from neocloud.drivers.redfish import RedfishDriver
    from neocloud.drivers.sim import SimDriver
    from neocloud.drivers.ssh import SshDriver
    from neocloud.fleet.seeds import SeedStore

    box = secret_box(settings)
    drivers: dict[str, Driver] = {"sim": SimDriver.from_settings(settings)}
    if interactive:
        ssh = SshDriver(box, connect_timeout_s=5, command_timeout_s=20)
        redfish = RedfishDriver(box, timeout_s=10, retries=1)
        drivers["ssh"] = ssh
        drivers["redfish"] = BareMetalDriver(redfish, ssh)
        return Drivers(drivers)
    # Seeds the BMCs fetch are served by the API at the public URL (``/boot/seeds/…``).
    seeds = None
    if db is not None and clock is not None:
        seeds = SeedStore(db, clock, box, settings.resolved_public_url(), ttl_s=settings.seed_ttl_s)
    ssh = SshDriver(box, agent=agent_install(settings))
    drivers["ssh"] = ssh
    drivers["redfish"] = BareMetalDriver(
        RedfishDriver(box, seeds=seeds), ssh, seeds=seeds, timeout_s=settings.reimage_timeout_s
    )
    return Drivers(drivers)


def agent_install(settings: Settings) -> AgentInstall | None:
    """How the ssh driver installs the node agent at burn-in (``NEOCLOUD_AGENT_INSTALL``,
    ``_PYTHON``, ``_PYTHONPATH``, ``_WHEEL``); None when it is off. An unusable combination
    (pythonpath without a path, wheel without a file) stops the platform with the reason."""
    if settings.agent_install == "off":
        return None
    from neocloud.drivers.ssh_commands import AgentInstall, SshConfigError

    try:
        return AgentInstall(
            settings.agent_install,
            python=settings.agent_python,
            pythonpath=settings.agent_pythonpath,
            wheel=None if settings.agent_wheel is None else str(settings.agent_wheel.resolve()),
        )
    except SshConfigError as exc:
        raise Conflict(f"NEOCLOUD_AGENT_INSTALL: {exc}", code="agent_install_invalid") from None


def start_background(settings: Settings, clock: Clock) -> Background:
    """Start the compute worker (leader lease, scheduler, reconcilers, the platform's
    drivers), its wake-up listener and the invoicing worker, each in a thread of this
    process."""
    from neocloud.billing.worker import InvoicingWorker
    from neocloud.compute.config import ComputeConfig
    from neocloud.compute.worker import WAKE_CHANNEL, Worker
    from neocloud.databases.steps import DatabaseConfig, DatabaseSteps
    from neocloud.storage.steps import StorageSteps

    db = Database.from_settings(settings)
    drivers = platform_drivers(settings, db=db, clock=clock)
    databases = DatabaseSteps(
        db,
        clock,
        drivers,
        secret_box(settings),
        DatabaseConfig(
            health_interval_s=settings.databases_health_interval_s,
            backup_interval_h=settings.databases_backup_interval_h,
        ),
    )
    worker = Worker(
        db,
        clock,
        driver=drivers,
        config=ComputeConfig.from_settings(settings),
        lease_ttl_s=settings.leader_lease_ttl_s,
        interval_s=settings.compute_worker_interval_s,
        box=secret_box(settings),  # seals managed Slurm's munge keys
        # managed databases; shared filesystems' volumes and mounts (local ones under the data dir)
        steps=[databases, StorageSteps(db, clock, drivers, data_dir=settings.data_dir)],
    )
    listener = listener_for(db, WAKE_CHANNEL, worker.nudge)
    if listener is not None:
        listener.start()
    worker.start()
    invoicing = InvoicingWorker.from_settings(db, clock, settings)
    invoicing.start()  # last month's invoices, hourly: drafts, finalized after the grace period
    from neocloud.studio.finetuning.runners import build_runner
    from neocloud.studio.finetuning.tracking import tracker_for
    from neocloud.studio.finetuning.worker import build_worker

    # studio_runner: local (in this process), fleet (an instance in the job's org's name first)
    # or node (that instance, and training on its node through the node's driver)
    runner = build_runner(db, clock, settings, drivers)
    tracker = tracker_for(settings)  # MLflow runs when NEOCLOUD_MLFLOW_TRACKING_URI is set
    finetune = build_worker(db, clock, settings.data_dir, runner=runner, tracker=tracker)
    if finetune is not None:
        finetune.start()  # claims fine-tuning jobs with a lease; resumes others' lapsed ones
    return Background(db, worker, invoicing, listener, finetune)


def wire_ports(state: Any, db: Database) -> None:
    """Connect the contexts' ports on an app's ``state``, where its routers read them: compute's
    prices from billing's price book, and tenancy's quotas to compute's count of GPUs in use
    and to the fleet catalog's GPU model names (neither context may import the other)."""
    from neocloud.billing.prices import BookPrices
    from neocloud.compute.quota import gpus_in_use_by_model
    from neocloud.fleet.catalog import CATALOG, find_gpu_model
    from neocloud.storage.service import STORAGE_QUOTA, storage_usage
    from neocloud.tenancy.quotas import GpuModelNames, QuotaPorts

    def canonical(name: str) -> str | None:
        if name.strip().lower() == STORAGE_QUOTA:  # storage's quota, in GiB
            return STORAGE_QUOTA
        model = find_gpu_model(name)
        return None if model is None else model.id

    def usage(*, db: Database, org_id: str) -> dict[str, int]:
        return {
            **gpus_in_use_by_model(db=db, org_id=org_id),
            **storage_usage(db=db, org_id=org_id),
        }

    state.compute_prices = BookPrices(db)
    state.quota_ports = QuotaPorts(
        usage=usage,
        models=GpuModelNames((*(m.id for m in CATALOG), STORAGE_QUOTA), canonical),
    )


def compute_waker(
    db: Database, background: Background | None
) -> tuple[Callable[[], None], Sender | None]:
    """What the API calls after a write that needs scheduling (``app.state.compute_nudge``):
    this process's worker if it runs one, and every worker process through ``db``'s wake-up
    channel. Returns it with the sender, to stop when the API stops."""
    from neocloud.compute.worker import WAKE_CHANNEL

    sender = sender_for(db, WAKE_CHANNEL)
    pokes: list[Callable[[], None]] = []
    if background is not None:
        pokes.append(background.compute.nudge)
    if sender is not None:
        pokes.append(sender.notify)

    def nudge() -> None:
        for poke in pokes:
            poke()

    return nudge, sender


def require_migrated(db: Database) -> None:
    """Refuse to work on a database that is not at the newest migration (``neocloud up`` or
    ``neocloud db upgrade`` migrate it; a worker does not, so two never race to)."""
    have, want = current_revisions(db), head_revisions(db)
    if have != want:
        raise Conflict(
            f"the database is at revision {sorted(have) or 'none'}, not {sorted(want)}: run "
            "`neocloud db upgrade` (or start `neocloud up`) first",
            code="database_not_migrated",
        )
