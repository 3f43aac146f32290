"""The fine-tuning runner a platform uses, from its settings (``studio_runner``)."""

from __future__ import annotations

from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers
from neocloud.kernel.clock import Clock
from neocloud.kernel.settings import Settings
from neocloud.studio.capacity import capacity_from_settings
from neocloud.studio.finetuning.fleet import FleetRunner
from neocloud.studio.finetuning.node import NodeRunner
from neocloud.studio.finetuning.worker import LocalRunner, Runner
from neocloud.studio.onnode import NodeOptions


def build_runner(
    db: Database, clock: Clock, settings: Settings, drivers: Drivers | None = None
) -> Runner:
    """The runner ``studio_runner`` names: ``local`` (default), ``fleet``, or ``node`` (which
    needs the platform's ``drivers`` to reach the nodes)."""
    capacity = capacity_from_settings(db, clock, settings)
    if capacity is None:
        return LocalRunner()
    if settings.studio_runner == "node":
        if drivers is None:
            raise ValueError("studio_runner=node needs the platform's drivers")
        return NodeRunner(capacity, drivers, NodeOptions.from_settings(settings))
    return FleetRunner(capacity)
