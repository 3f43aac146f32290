"""End to end: managed PostgreSQL on a `service` test host (docs/databases.md).

`neocloud up` drives a test host registered as a `service` node through the `ssh` driver. A
tenant creates a database with the CLI and connects with psycopg using exactly the returned
connection string, over TLS verified against the platform's CA (`sslmode=verify-full`); writes
rows, takes a backup, restores it into a new database and finds the rows there; deletes both,
leaving no server, data directory or OS user behind. A client from an address that is not
allowed is refused by pg_hba, as is one without TLS. The password appears in exactly one
answer, and in no log, audit event or database file. Faults: a service node that goes away
fails its database with the reason, and its failed time is not billed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from . import test_real_nodes_e2e as e2e
from .conftest import Host, run_testhost
from .platform import Platform, running_platform, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
tenant = e2e.tenant


@pytest.fixture
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own, checking database health every second."""
    env = {"NEOCLOUD_DATABASES_HEALTH_INTERVAL_S": "1"}
    with running_platform(tmp_path_factory.mktemp("databases"), env=env) as running:
        yield running


@pytest.fixture
def postgres_installed() -> None:
    """PostgreSQL comes from the machine (test hosts are overlays of its `/`)."""
    if not (PG_BIN / "initdb").exists():
        reason = f"PostgreSQL 15 is not installed here ({PG_BIN}): scripts/install-test-deps"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)


def register_service(platform: Platform, host: Host, key_path: Path) -> str:
    done = platform.cli(
        None,
        "nodes", "add", "svc-0", "--role", "service", "--vcpus", "16", "--ram-gib", "64",
        "--nvme-gib", "500", *[a for t in e2e.TOPOLOGY for a in ("--topology", t)],
        "--driver", "ssh", "--address", host.address, "--private-key-file", str(key_path),
        "--gpu-check", "none", "--reboot-command", e2e.TESTHOST_REBOOT, "--json",
    )  # fmt: skip
    node_id = str(json.loads(done.stdout)["id"])
    wait_for("burn-in", lambda: e2e.node_state(platform, node_id) == "available", timeout=120)
    wait_for(
        "PostgreSQL 15 offered",
        lambda: "15" in platform.ok("GET", "/database-options")["versions"],
        timeout=60,
    )
    return node_id


def database(p: Platform, key: str, database_id: str) -> dict[str, Any]:
    got: dict[str, Any] = p.ok("GET", f"/databases/{database_id}", key)
    return got


def settled(p: Platform, key: str, database_id: str, timeout: float = 120) -> dict[str, Any]:
    got: dict[str, Any] = wait_for(
        f"{database_id} settled",
        lambda: (
            (d := database(p, key, database_id))["state"] not in ("provisioning", "deleting") and d
        ),
        timeout=timeout,
    )
    return got


def create(p: Platform, key: str, name: str, *extra: str) -> dict[str, Any]:
    made: dict[str, Any] = json.loads(
        p.cli(
            key, "databases", *extra[:1], *extra[1:2], name, "--version", "15",
            "--storage-gib", "5", "--allowed-cidr", "10.231.0.1/32", "--json",
        ).stdout
    )  # fmt: skip
    return made


def test_a_tenant_connects_backs_up_restores_and_deletes_leaving_nothing(
    platform: Platform,
    tenant: dict[str, Any],
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    postgres_installed: None,
    tmp_path: Path,
) -> None:
    _, op_public, op_key_path = operator_keypair
    svc = testhost("svc", authorized_key=op_public)
    outsider = testhost("out")  # another address on the bridge, not allowed
    register_service(platform, svc, op_key_path)
    key = tenant["key"]

    started = time.monotonic()
    made = json.loads(
        platform.cli(
            key, "databases", "create", "shop", "--version", "15", "--storage-gib", "5",
            "--allowed-cidr", "10.231.0.1/32", "--json",
        ).stdout
    )  # fmt: skip
    password, dsn = made["password"], made["connection_string"]
    assert made["state"] == "provisioning"
    assert dsn == f"postgresql://app:{password}@{svc.address}:15432/shop?sslmode=verify-full"
    got = settled(platform, key, made["id"])
    assert got["state"] == "running", got
    ca = tmp_path / "ca.pem"
    platform.cli(key, "databases", "ca", made["id"], "--output", str(ca))
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")

    with psycopg.connect(dsn, sslrootcert=str(ca), connect_timeout=10) as conn:
        connected = time.monotonic() - started
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("app", "shop")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 100) g")
    print(f"\ncreate to connect: {connected:.1f} s ({got['reason']})")

    # verify-full means verify: another CA is refused, and so is a client without TLS
    other_ca = tmp_path / "other.pem"
    shutil.copy(op_key_path.with_suffix(".pub"), other_ca)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, sslrootcert=str(other_ca), connect_timeout=5).close()
    plain = dsn.replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf"):
        psycopg.connect(plain, connect_timeout=5).close()
    # from an address not allowed, pg_hba refuses (the machine's psql, inside the other host)
    refused = outsider.exec(
        f"PGSSLMODE=require {PG_BIN}/psql 'postgresql://app@{svc.address}:15432/shop'"
        " -c 'select 1'",
        input=password + "\n",
    )
    assert refused.returncode != 0
    assert "pg_hba.conf" in refused.stderr, refused.stderr

    # a backup, restored into a new database, holds the rows
    backup = json.loads(platform.cli(key, "databases", "backup", "shop", "--json").stdout)
    assert backup["state"] == "pending"
    done = wait_for(
        "backup",
        lambda: [
            b for b in platform.ok("GET", f"/databases/{made['id']}/backups", key)["data"]
            if b["state"] != "pending"
        ],
        timeout=60,
    )  # fmt: skip
    assert done[0]["state"] == "completed", done
    assert done[0]["size_bytes"] > 0
    restored = json.loads(
        platform.cli(
            key, "databases", "restore", backup["id"], "shop_copy", "--version", "15",
            "--storage-gib", "5", "--allowed-cidr", "10.231.0.1/32", "--json",
        ).stdout
    )  # fmt: skip
    assert restored["restore_from"] == backup["id"]
    assert settled(platform, key, restored["id"])["state"] == "running"
    with psycopg.connect(restored["connection_string"], sslrootcert=str(ca)) as conn:
        count = conn.execute("SELECT count(*), max(item) FROM orders").fetchone()
        assert count == (100, "item 99")
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'")
        assert owner.fetchone() == ("app",)

    # a restore that fails (its dump is gone from the node) fails with the reason, and leaves
    # nothing half-made behind: no third OS user, no third data directory
    dump = f"/var/lib/neocloud/postgres-backups/{made['id']}/{backup['id']}.dump"
    assert svc.exec(f"rm {dump}").returncode == 0
    body = {"name": "broken", "version": "15", "storage_gib": 1, "restore_from": backup["id"]}
    broken = platform.ok("POST", "/databases", key, json=body)
    failed = settled(platform, key, broken["id"])
    assert failed["state"] == "failed"
    assert failed["reason"].startswith("service node svc-0: restoring the backup failed: backup")
    users = svc.exec("getent passwd | grep ^ncdb_ | cut -d: -f1").stdout.split()
    assert len(users) == 2, users
    assert len(svc.exec("ls /var/lib/neocloud/postgres").stdout.split()) == 2  # not .template

    # delete them all: nothing is left on the node
    reads = [got, backup, done, failed]  # every answer but the creates
    for d in (made, restored, broken):
        platform.cli(key, "databases", "delete", d["id"])
    for d in (made, restored, broken):
        gone = wait_for(
            "deleted",
            lambda d=d: (g := database(platform, key, d["id"]))["state"] == "deleted" and g,
        )
        reads.append(gone)
    assert svc.exec("pgrep -a postgres").returncode == 1
    left = svc.exec("ls -A /var/lib/neocloud/postgres /var/lib/neocloud/postgres-backups")
    assert left.stdout.split() == [  # only the node's template cluster, no database's files
        "/var/lib/neocloud/postgres:",
        ".template-15",
        "/var/lib/neocloud/postgres-backups:",
    ]
    assert svc.exec("getent passwd | grep ^ncdb_").returncode == 1
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, sslrootcert=str(ca), connect_timeout=5).close()

    # the password: in the create answer only; never in a read, the log, the audit or the db
    reads.append(platform.ok("GET", "/databases", key, params={"deleted": "true"}))
    audit = platform.api("GET", "/audit-events", params={"limit": 1000}).text
    assert made["id"] in audit
    stored = (platform.data_dir / "neocloud.db").read_bytes()
    for text in (json.dumps(reads), audit, platform.log.read_text()):
        for secret in (password, restored["password"], broken["password"]):
            assert secret not in text
    assert password.encode() not in stored
    assert restored["password"].encode() not in stored
    assert password in json.dumps(made)
    assert password not in json.dumps(restored)  # each database its own password


def test_a_service_node_that_goes_away_fails_its_database_unbilled(
    platform: Platform,
    tenant: dict[str, Any],
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    postgres_installed: None,
) -> None:
    _, op_public, op_key_path = operator_keypair
    svc = testhost("svc", authorized_key=op_public)
    register_service(platform, svc, op_key_path)
    key = tenant["key"]
    made = platform.ok(
        "POST", "/databases", key, json={"name": "doomed", "version": "15", "storage_gib": 2}
    )
    assert settled(platform, key, made["id"])["state"] == "running"
    assert run_testhost("down", svc.name).returncode == 0  # the node is gone
    failed = wait_for(
        "failed",
        lambda: (d := database(platform, key, made["id"]))["state"] == "failed" and d,
        timeout=90,
    )
    assert failed["reason"].startswith("health check on service node svc-0: "), failed["reason"]
    assert failed["health"] == "failing"
    assert failed["running_at"] is not None

    org = platform.ok("GET", "/me", key)["org"]["id"]

    def billed_hours() -> str:
        month = {"org_id": org, "period": time.strftime("%Y-%m", time.gmtime())}
        preview = platform.ok("GET", "/invoices/preview", key, params=month)
        hours = [ln["quantity"] for ln in preview["service_lines"] if ln["sku"].endswith(".hour")]
        assert len(hours) == 1, preview
        return str(hours[0])

    before = billed_hours()
    assert float(before) > 0
    time.sleep(3)  # failed time passes: none of it is billed
    assert billed_hours() == before
