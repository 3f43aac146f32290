"""Compute and sim-driver knobs come from ``NEOCLOUD_*`` settings; the reservation
cancellation policy is the operator's."""

from __future__ import annotations

from datetime import timedelta

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute.config import ComputeConfig
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.base import NodeRef, ProvisionRequest
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock, rfc3339
from neocloud.kernel.settings import load_settings


def test_compute_and_sim_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEOCLOUD_COMPUTE_PREEMPTION_NOTICE_S", "120")
    monkeypatch.setenv("NEOCLOUD_COMPUTE_RESERVATION_CANCEL_CUTOFF_H", "48")
    monkeypatch.setenv("NEOCLOUD_COMPUTE_BURN_IN", "false")
    monkeypatch.setenv("NEOCLOUD_SIM_PROVISION_S", "90")
    monkeypatch.setenv("NEOCLOUD_SIM_WIPE_S", "600")
    monkeypatch.setenv("NEOCLOUD_SIM_FAILURE_PROBABILITY", "1")
    monkeypatch.setenv("NEOCLOUD_SIM_SEED", "7")
    monkeypatch.setenv("NEOCLOUD_COMPUTE_ADMISSION_POLICY", "bid_price")
    settings = load_settings()
    config = ComputeConfig.from_settings(settings)
    assert config.admission_policy == "bid_price"
    assert (config.preemption_notice_s, config.cancel_cutoff_s, config.burn_in) == (
        120.0,
        48 * 3600.0,
        False,
    )
    driver = SimDriver.from_settings(settings)
    assert driver.seed == 7
    node = NodeRef("node_x", "gpu-x", "H100-SXM-80GB")
    step = driver.provision(node, ProvisionRequest("w", (0,), "w"))
    assert (step.ok, step.duration_s) == (False, 90.0)
    assert driver.wipe(node).duration_s == 600.0
    monkeypatch.setenv("NEOCLOUD_COMPUTE_RESERVATIONS_CANCELLABLE", "false")
    assert ComputeConfig.from_settings(load_settings()).cancel_cutoff_s is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NEOCLOUD_COMPUTE_PREEMPTION_NOTICE_S", "-1"),
        ("NEOCLOUD_SIM_FAILURE_PROBABILITY", "1.5"),
        ("NEOCLOUD_SIM_WIPE_S", "-3"),
    ],
)
def test_out_of_range_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name.removeprefix("NEOCLOUD_").lower()):
        load_settings()


def test_preemption_notice_follows_the_config(
    fleet: Client, acme: Client, db: Database, clock: VirtualClock
) -> None:
    worker = Worker(
        db, clock, driver=SimDriver(), config=ComputeConfig(preemption_notice_s=5), holder="w"
    )
    fleet.quotas.set(acme.get("me")["org_id"], "H100-SXM-80GB", 200)
    spots = [acme.instances.create("8xH100", cls="spot") for _ in range(8)]
    worker.run_once()
    acme.instances.create("8xH100")
    worker.run_once()
    victim = next(
        v for v in (acme.instances.get(s["id"]) for s in spots) if v["stop_reason"] == "preempted"
    )
    assert victim["stop_at"] == rfc3339(clock.now() + timedelta(seconds=5))
    clock.advance(5)
    worker.run_once()
    assert acme.instances.get(victim["id"])["state"] == "preempted"


def _buy(acme: Client, clock: VirtualClock, hours_ahead: float) -> str:
    start = clock.now() + timedelta(hours=hours_ahead)
    offer = acme.reservations.offerings("H100", 2, 24, start_after=rfc3339(start))[0]
    rid: str = acme.reservations.buy(offer["id"])["id"]
    return rid


def test_cancellation_closes_before_the_start_by_policy(acme: Client, clock: VirtualClock) -> None:
    app = acme._http.app  # type: ignore[attr-defined]
    app.state.compute_config = ComputeConfig(cancel_cutoff_s=48 * 3600)
    soon = _buy(acme, clock, 24)
    with pytest.raises(ApiError) as info:
        acme.reservations.cancel(soon)
    assert (info.value.status, info.value.code) == (409, "cancellation_closed")
    assert acme.reservations.get(soon)["state"] == "scheduled"
    later = _buy(acme, clock, 24 * 7)
    assert acme.reservations.cancel(later)["state"] == "cancelled"

    app.state.compute_config = ComputeConfig(cancel_cutoff_s=None)
    rid = _buy(acme, clock, 24 * 14)
    with pytest.raises(ApiError) as info:
        acme.reservations.cancel(rid)
    assert (info.value.status, info.value.code) == (409, "not_cancellable")
    assert acme.reservations.get(rid)["state"] == "scheduled"
