"""Compute fixtures: a small fleet, a tenant with a quota, and a worker driven step by step."""

from __future__ import annotations

import pytest

from neocloud.client import Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock

from .helpers import SMALL_FLEET, tenant_client


@pytest.fixture
def fleet(admin: Client) -> Client:
    assert admin.fleet.import_spec(SMALL_FLEET)["nodes_created"] == 8
    return admin


@pytest.fixture
def acme(fleet: Client) -> Client:
    """A tenant org (``acme``) with a 64-GPU H100 quota, as its owner."""
    return tenant_client(fleet, "acme")[1]


@pytest.fixture
def driver() -> SimDriver:
    return SimDriver(seed=1)


@pytest.fixture
def worker(db: Database, clock: VirtualClock, driver: SimDriver) -> Worker:
    return Worker(db, clock, driver=driver, holder="test-worker")
