"""The databases API on a simulated service node (no server runs: the sim driver cannot run
commands, which the worker says as the failure reason): create answers the password once and
the connection string, reads never do; bounds are 422s naming the field, another org's database
is a 404, quota and capacity refusals say why; the password is stored sealed, never in the
audit log; a failed database is never billed."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from neocloud.client import ApiError, Client
from neocloud.compute.tables import InstanceRow
from neocloud.compute.worker import Worker
from neocloud.databases.steps import DatabaseConfig, DatabaseSteps
from neocloud.databases.tables import DatabaseRow, DatabaseUsageRow
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers, NodeRef
from neocloud.drivers.sim import SimDriver
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.ids import new_id
from neocloud.kernel.secrets import SecretBox

from .conftest import tenant_client

BODY = {"name": "shop", "version": "15", "storage_gib": 10, "preset": "small"}


def error(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, str | None, str | None]:
    return exc.value.status, exc.value.code, exc.value.param


def test_create_answers_the_password_once_and_reads_never(
    acme: Client, admin: Client, service_node: str, db: Database, app: Any
) -> None:
    created = acme.databases.create("shop", version="15", storage_gib=10, idempotency_key="k1")
    assert created["state"] == "provisioning"
    assert created["node_id"] == service_node
    password = created["password"]
    assert len(password) >= 32
    conn = created["connection"]
    assert (conn["port"], conn["dbname"], conn["user"]) == (15432, "shop", "app")
    assert created["connection_string"] == (
        f"postgresql://app:{password}@svc-1.example:15432/shop?sslmode=verify-full"
    )
    assert conn["uri"] == "postgresql://app@svc-1.example:15432/shop?sslmode=verify-full"
    # an idempotent replay answers the same database, without the secret
    again = acme.databases.create("shop", version="15", storage_gib=10, idempotency_key="k1")
    assert again["id"] == created["id"]
    assert (again["password"], again["connection_string"]) == (None, None)
    reads = [acme.databases.get(created["id"]), acme.databases.list()]
    assert password not in repr(reads)
    assert "password" not in reads[0]
    # stored sealed: the box opens it, the row never holds it in the clear
    with db.transaction() as s:
        row = s.get(DatabaseRow, created["id"])
        assert row is not None
        assert password not in row.sealed_password
        box: SecretBox = app.state.secret_box
        assert box.open(row.sealed_password) == {"password": password}
    audit = list(acme.audit.iter())
    assert created["id"] in repr(audit)  # the create is audited, by id, without the secret
    assert password not in repr(audit)


def test_bad_input_is_refused_naming_the_field(acme: Client, service_node: str) -> None:
    cases: list[tuple[dict[str, Any], str, int]] = [
        ({**BODY, "name": "Shop!"}, "name", 422),
        ({**BODY, "name": "postgres"}, "name", 422),
        ({**BODY, "version": "9"}, "version", 422),
        ({**BODY, "preset": "huge"}, "preset", 422),
        ({**BODY, "storage_gib": 0}, "storage_gib", 422),
        ({**BODY, "storage_gib": 5000}, "storage_gib", 422),
        ({**BODY, "allowed_cidrs": ["10.0.0.0/8", "nope"]}, "allowed_cidrs[1]", 422),
        ({**BODY, "user": "postgres"}, "user", 422),
        ({**BODY, "restore_from": "dbbak_01ARZ3NDEKTSV4RRFFQ69G5FAV"}, "restore_from", 404),
    ]
    for body, param, status in cases:
        with pytest.raises(ApiError) as exc:
            acme.request("POST", "databases", json=body)
        assert exc.value.status == status, (body, str(exc.value))
        assert exc.value.param == param, (body, str(exc.value))
    assert acme.databases.list()["data"] == []


def test_another_orgs_database_is_not_found(acme: Client, admin: Client, service_node: str) -> None:
    created = acme.databases.create("shop", version="15", storage_gib=10)
    other = tenant_client(admin, "globex")[1]
    for call in (
        lambda: other.databases.get(created["id"]),
        lambda: other.databases.delete(created["id"]),
        lambda: other.databases.backup(created["id"]),
        lambda: other.databases.backups(created["id"]),
        lambda: other.databases.ca_certificate(created["id"]),
    ):
        with pytest.raises(ApiError) as exc:
            call()
        assert error(exc)[:2] == (404, "database_not_found")
    assert other.databases.list()["data"] == []


def test_names_quota_and_capacity_say_why(acme: Client, service_node: str, settings: Any) -> None:
    acme.databases.create("shop", version="15", storage_gib=10)
    with pytest.raises(ApiError) as exc:
        acme.databases.create("shop", version="15", storage_gib=10)
    assert error(exc) == (409, "database_name_taken", "name")
    # 16 vCPUs, 64 GiB; a small (2, 4) runs: one large (8, 32) fits, a second does not
    acme.databases.create("big0", version="15", storage_gib=10, preset="large")
    with pytest.raises(ApiError) as exc:
        acme.databases.create("big1", version="15", storage_gib=10, preset="large")
    assert error(exc)[:2] == (409, "no_database_capacity")
    assert "svc-1.example" in str(exc.value)
    with pytest.raises(ApiError) as exc:
        acme.databases.create("huge", version="15", storage_gib=4000)
    assert "GiB of disk free" in str(exc.value)


def test_the_quota_counts_live_databases(
    acme: Client, service_node: str, db: Database, clock: VirtualClock, app: Any
) -> None:
    limit = app.state.ctx.settings.databases_max_per_org
    with db.transaction() as s:
        s.execute(sa.update(NodeRow).values(vcpus=10_000, ram_gib=100_000, nvme_gib=100_000))
    for i in range(limit):
        acme.databases.create(f"d{i}", version="15", storage_gib=1)
    with pytest.raises(ApiError) as exc:
        acme.databases.create("one_more", version="15", storage_gib=1)
    assert error(exc)[:2] == (403, "database_quota_exceeded")
    acme.databases.delete(acme.databases.list()["data"][0]["id"])  # deleting counts until gone
    with pytest.raises(ApiError):
        acme.databases.create("one_more", version="15", storage_gib=1)


class UnreachableDriver(SimDriver):
    """A node whose every command fails as an unreachable SSH server's would (the real fault
    runs in tests/nodes/test_databases_e2e.py on a test host)."""

    def run_root(
        self, node: NodeRef, script: str, *, timeout_s: float, stdin: bytes | None = None
    ) -> tuple[int, str]:
        del script, timeout_s, stdin
        return -1, f"node {node.hostname}: cannot connect: [Errno 113] No route to host"


def test_a_simulated_service_node_runs_it_simulated_and_bills_it(
    acme: Client, service_node: str, db: Database, clock: VirtualClock, app: Any
) -> None:
    created = acme.databases.create("shop", version="15", storage_gib=10)
    steps = DatabaseSteps(db, clock, Drivers.only(SimDriver()), app.state.secret_box)
    steps.run_once()
    steps.wait()
    got = acme.databases.get(created["id"])
    assert got["state"] == "running", got
    assert got["reason"].startswith("simulated node")
    with db.transaction() as s:
        spans = s.scalars(sa.select(DatabaseUsageRow)).all()
        assert [(u.preset, u.storage_gib, u.end_at) for u in spans] == [("small", 10, None)]
    clock.advance(3600)  # an hour running: on the invoice preview, per preset-hour and GiB
    org = acme.get("me")["org"]["id"]
    preview = acme.invoices.preview(org, "2026-03")
    lines = {ln["sku"]: ln for ln in preview["service_lines"]}
    assert lines["postgres.small.hour"]["quantity"] == "1"
    assert lines["postgres.small.hour"]["amount"]["amount"] == "0.12"
    assert lines["postgres.storage.gib_month"]["quantity"] == "10"  # 10 GiB for an hour
    assert preview["total"]["amount"] == "0.12"  # 10 GiB-hours at 0.20/730: under a cent
    backup = acme.databases.backup(created["id"])
    assert backup["state"] == "pending"
    clock.advance(60)
    steps.run_once()
    steps.wait()
    done = acme.databases.backups(created["id"])["data"]
    assert [(b["state"], b["size_bytes"]) for b in done] == [("completed", 0)]
    acme.databases.delete(created["id"])
    asked = clock.now()
    clock.advance(60)
    steps.run_once()
    steps.wait()
    assert acme.databases.get(created["id"])["state"] == "deleted"
    with db.transaction() as s:
        spans = s.scalars(sa.select(DatabaseUsageRow)).all()
        assert [u.end_at for u in spans] == [asked]  # billed until deletion was asked


def test_an_unreachable_node_fails_the_database_with_the_reason_and_bills_nothing(
    acme: Client, service_node: str, db: Database, clock: VirtualClock, app: Any
) -> None:
    created = acme.databases.create("shop", version="15", storage_gib=10)
    steps = DatabaseSteps(db, clock, Drivers.only(UnreachableDriver()), app.state.secret_box)
    assert steps.run_once() >= 1
    steps.wait()
    got = acme.databases.get(created["id"])
    assert got["state"] == "failed"
    assert got["reason"].startswith("service node svc-1.example: ")
    assert "No route to host" in got["reason"]
    with pytest.raises(ApiError) as exc:
        acme.databases.backup(created["id"])
    assert error(exc)[:2] == (409, "database_not_running")
    with db.transaction() as s:
        assert s.scalars(sa.select(DatabaseUsageRow)).all() == []
    deleted = acme.databases.delete(created["id"])
    assert deleted["state"] == "deleting"
    steps.run_once()
    steps.wait()
    assert acme.databases.get(created["id"])["state"] in ("deleting", "deleted")


def test_the_worker_hook_runs_database_steps(
    db: Database, clock: VirtualClock, service_node: str, acme: Client, app: Any
) -> None:
    steps = DatabaseSteps(db, clock, Drivers.only(SimDriver()), app.state.secret_box)
    worker = Worker(db, clock, driver=SimDriver(), holder="t", steps=(steps,))
    created = acme.databases.create("shop", version="15", storage_gib=10)
    worker.run_once()
    steps.wait()
    assert acme.databases.get(created["id"])["state"] == "running"


def an_instance(org_id: str, state: str, host: str, now: Any) -> InstanceRow:
    """An instance row as compute leaves it (written directly: what matters here is its org,
    state and address, which the health step reads)."""
    return InstanceRow(
        id=new_id("inst"), org_id=org_id, instance_type="1xH100", gpu_model="H100-SXM-80GB",
        gpu_count=1, vcpus=8, ram_gib=64, cls="on_demand", reservation_policy="none",
        reservation_ids=[], ssh_keys=[], gpu_indices=[0], state=state, created_by="t",
        created_at=now, updated_at=now,
        access={"host": host, "port": 22, "user": "ubuntu", "simulated": False},
    )  # fmt: skip


def test_pg_hba_follows_the_orgs_running_instances_and_backups_run_on_schedule(
    acme: Client, admin: Client, service_node: str, db: Database, clock: VirtualClock, app: Any
) -> None:
    created = acme.databases.create(
        "shop", version="15", storage_gib=1, allowed_cidrs=["203.0.113.0/28"]
    )
    config = DatabaseConfig(health_interval_s=30, backup_interval_h=1)
    steps = DatabaseSteps(db, clock, Drivers.only(SimDriver()), app.state.secret_box, config)
    steps.run_once()
    steps.wait()
    org = acme.get("me")["org"]["id"]
    other = tenant_client(admin, "globex")[0]["id"]
    with db.transaction() as s:
        assert s.get(DatabaseRow, created["id"]).hba_cidrs == ["203.0.113.0/28"]  # type: ignore[union-attr]
        s.add(an_instance(org, "running", "10.1.2.3", clock.now()))
        s.add(an_instance(org, "terminated", "10.1.2.4", clock.now()))
        s.add(an_instance(other, "running", "10.9.9.9", clock.now()))
    clock.advance(31)  # health is due: the step rewrites pg_hba.conf for the running instance
    steps.run_once()
    steps.wait()
    with db.transaction() as s:
        row = s.get(DatabaseRow, created["id"])
        assert row is not None
        assert row.hba_cidrs == ["10.1.2.3/32", "203.0.113.0/28"]
        assert row.health == "ok"
    clock.advance(3600)  # an hour after it ran: a scheduled backup
    steps.run_once()
    steps.wait()
    steps.run_once()
    steps.wait()
    kinds = [(b["kind"], b["state"]) for b in acme.databases.backups(created["id"])["data"]]
    assert kinds == [("scheduled", "completed")]
