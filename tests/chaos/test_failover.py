"""Failover under SIGKILL: one API replica and two workers on one PostgreSQL database. Six
instances are provisioning when the leader worker is SIGKILLed; the standby takes the scheduler
lease and finishes them; nothing in flight is lost (every one runs) or done twice (one
allocation each, each state entered once). Prints the failover times."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from neocloud.client import Client
from neocloud.db.engine import Database

from .harness import fleet_spec, platform, scheduler_holder_pid
from .invariants import allocation_violations, double_claims, repeated_transitions

IN_FLIGHT = 6


def _wait(what: str, timeout_s: float, poll_s: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        yield
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(poll_s)


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_leader_worker_sigkilled_standby_takes_over_and_loses_nothing(
    db: Database, tmp_path: Path
) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    with platform(url, tmp_path, fleet_spec(), NEOCLOUD_SIM_PROVISION_S="2") as plat:
        api = plat.add_api("api0")
        workers = [plat.add_worker("w0"), plat.add_worker("w1")]
        for proc in [api, *workers]:
            plat.start(proc)
        for proc in [api, *workers]:
            plat.wait_ready(proc)
        for _ in _wait("a worker holds the lease", 30):
            leader_pid = scheduler_holder_pid(db)
            if leader_pid is not None:
                break
        leader = next(w for w in workers if w.pid == leader_pid)
        standby = next(w for w in workers if w is not leader)

        admin = Client(api.url or "", plat.admin_key, retries=3)
        org = admin.orgs.create("Acme", slug="acme", owner_email="owner@acme.example")
        user = admin.users.list(org["id"])["data"][0]
        key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
        admin.quotas.set(org["id"], "H100-SXM-80GB", 64)
        acme = Client(api.url or "", key["secret"], retries=3)
        ids = [acme.instances.create("1xH100")["id"] for _ in range(IN_FLIGHT)]
        for _ in _wait("the leader starts provisioning", 20):
            states = {acme.instances.get(i)["state"] for i in ids}
            if states <= {"provisioning", "running"} and "provisioning" in states:
                break

        plat.kill(leader)
        killed = time.monotonic()
        for _ in _wait("the standby takes the lease", 30):
            if scheduler_holder_pid(db) == standby.pid:
                takeover_s = time.monotonic() - killed
                break
        for _ in _wait("the in-flight instances run", 30):
            states = [acme.instances.get(i)["state"] for i in ids]
            if all(s == "running" for s in states):
                in_flight_s = time.monotonic() - killed
                break
        after = acme.instances.create("1xH100")["id"]
        for _ in _wait("an instance created after the kill runs", 30):
            if acme.instances.get(after)["state"] == "running":
                new_work_s = time.monotonic() - killed
                break
        admin.close()
        acme.close()

    assert double_claims(db) == []
    assert allocation_violations(db) == []
    assert repeated_transitions(db) == []
    print(
        f"\nfailover: lease taken over {takeover_s:.1f} s after SIGKILL; the {IN_FLIGHT} "
        f"in-flight instances running {in_flight_s:.1f} s after; a new one running "
        f"{new_work_s:.1f} s after"
    )
    assert takeover_s < 10
    assert in_flight_s < 10
