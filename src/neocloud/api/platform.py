"""Bring a platform up: database, migrations, the operator org and its first key, a fleet."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.kernel.clock import Clock
from neocloud.kernel.settings import Settings


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
    from neocloud.compute import service as compute_service
    from neocloud.fleet import service as fleet_service
    from neocloud.fleet.spec import demo_spec, load_spec_file
    from neocloud.tenancy import service as tenancy_service

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.from_url(settings.resolved_database_url())
    upgrade(db)
    admin_key = tenancy_service.bootstrap_operator(db=db, clock=clock)
    key_path = settings.data_dir / "admin-key"
    if admin_key is not None:
        _write_secret(key_path, admin_key)
    imported = 0
    if fleet_service.count_nodes(db=db) == 0 and (fleet_file or demo_fleet):
        spec = load_spec_file(fleet_file) if fleet_file else demo_spec()
        imported = fleet_service.import_spec(db=db, clock=clock, spec=spec).nodes_created
    compute_service.register_default_quotas(db=db, clock=clock)
    _price_builtin_models(db, clock)
    return Prepared(db, admin_key, key_path, imported)


def _price_builtin_models(db: Database, clock: Clock) -> None:
    """Put the built-in models' token prices in the price book (first start, or a model new to
    this release), so what ``/v1/models`` advertises is what the invoice charges."""
    from neocloud.studio.pricing import publish_missing, token_prices
    from neocloud.studio.runtime import builtin_catalog

    publish_missing(db=db, clock=clock, prices=token_prices(builtin_catalog().models.values()))


def _write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` readable by its owner only (mode 0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    path.chmod(0o600)
