"""``neocloud db backup`` / ``db restore``: a round trip through the CLI gives back every table
row by row, on SQLite and on PostgreSQL (scratch databases this test creates and drops); restore
refuses a database holding rows without --force and a backup from a newer release; a SQLite
backup taken while a writer commits is one instant's state."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.api.platform import prepare
from neocloud.client import Client
from neocloud.compute.worker import Worker
from neocloud.db.backup import inspect_backup, restore, row_count
from neocloud.db.engine import Database
from neocloud.db.metadata import all_metadata
from neocloud.db.scratch import scratch_database
from neocloud.db.tables import LeaseRow
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.errors import Conflict, InvalidRequest
from neocloud.kernel.settings import load_settings

NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]
PG_ADMIN_URL = os.environ.get(
    "NEOCLOUD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _populate(url: str, data_dir: Path) -> None:
    """A platform's worth of rows: operator, demo fleet, quotas, images, prices; a tenant with
    instances placed and running (allocations, GPU claims, billing intervals, audit)."""
    settings = load_settings(database_url=url, data_dir=data_dir)
    clock = SystemClock()
    prepared = prepare(settings, clock, demo_fleet=True)
    assert prepared.admin_key is not None
    db = prepared.db
    app = create_app(settings=settings, db=db, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as http:
        admin = Client(api_key=prepared.admin_key, http=http, retries=0)
        org = admin.orgs.create("Acme", slug="acme", owner_email="owner@acme.example")
        user = admin.users.list(org["id"])["data"][0]
        key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
        admin.quotas.set(org["id"], "H100-SXM-80GB", 64)
        acme = Client(api_key=key["secret"], http=http, retries=0)
        for _ in range(3):
            acme.instances.create(instance_type="1xH100")
        worker = Worker(db, clock, driver=SimDriver(seed=1), holder="backup-test")
        for _ in range(4):
            worker.run_once()
        worker.lease.release()
    db.dispose()


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, ordered by primary key (or by every column where there is none)."""
    engine = Database.from_url(url).engine
    tables: dict[str, list[tuple[Any, ...]]] = {}
    try:
        present = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            for table in all_metadata().sorted_tables:
                if table.name not in present:
                    continue
                order = list(table.primary_key.columns) or list(table.columns)
                tables[table.name] = [
                    tuple(r) for r in conn.execute(sa.select(table).order_by(*order))
                ]
            tables["alembic_version"] = [
                tuple(r) for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ]
    finally:
        engine.dispose()
    return tables


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NEOCLOUD, "db", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NEOCLOUD_LOG_LEVEL": "warning"},
    )


@pytest.fixture
def pg_urls() -> Iterator[tuple[str, str]]:
    """Two scratch PostgreSQL databases: a source and a restore target."""
    if not _reachable(PG_ADMIN_URL):
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (CI=true)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    with (
        scratch_database(PG_ADMIN_URL, "neocloud_backup_src") as source,
        scratch_database(PG_ADMIN_URL, "neocloud_backup_dst") as target,
    ):
        yield source, target


def _round_trip(source: str, target: str, tmp_path: Path) -> None:
    _populate(source, tmp_path / "data")
    before = _snapshot(source)
    assert sum(len(rows) for rows in before.values()) > 500  # a real platform's worth
    assert before["allocations"], "instances were placed"
    assert before["gpu_claims"]
    file = tmp_path / "backup.bin"
    made = _cli("backup", str(file), "--database-url", source)
    assert made.returncode == 0, made.stderr
    assert "written to" in made.stdout
    restored = _cli("restore", str(file), "--database-url", target)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    after = _snapshot(target)
    assert after.keys() == before.keys()
    differing = [name for name in before if before[name] != after[name]]
    assert differing == [], differing
    print(
        f"\nrestore comparison ({sa.make_url(source).get_backend_name()}): "
        f"{len(before)} tables, {sum(len(r) for r in before.values())} rows, "
        f"{len(differing)} differing; backup {file.stat().st_size:,} bytes"
    )

    # A second restore onto the now-populated target needs --force.
    again = _cli("restore", str(file), "--database-url", target)
    assert again.returncode == 1
    assert "--force" in again.stdout + again.stderr
    forced = _cli("restore", str(file), "--database-url", target, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert _snapshot(target) == before


def test_sqlite_round_trip_compares_every_table(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'src' / 'neocloud.db'}"
    target = f"sqlite:///{tmp_path / 'dst' / 'neocloud.db'}"
    _round_trip(source, target, tmp_path)


@pytest.mark.postgres
def test_postgresql_round_trip_compares_every_table(
    pg_urls: tuple[str, str], tmp_path: Path
) -> None:
    _round_trip(*pg_urls, tmp_path)


def test_restore_refuses_a_backup_from_a_newer_release_and_a_foreign_file(
    tmp_path: Path,
) -> None:
    source = f"sqlite:///{tmp_path / 'src.db'}"
    db = Database.from_url(source)
    from neocloud.db.migrate import upgrade

    upgrade(db)
    db.dispose()
    file = tmp_path / "b.db"
    assert _cli("backup", str(file), "--database-url", source).returncode == 0
    conn = sqlite3.connect(file)
    conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    conn.commit()
    conn.close()
    assert inspect_backup(file).revisions == {"9999_from_the_future"}
    target = f"sqlite:///{tmp_path / 'dst.db'}"
    with pytest.raises(Conflict) as caught:
        restore(url=target, file=file)
    assert caught.value.code == "backup_schema_unknown"

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a backup at all")
    with pytest.raises(InvalidRequest):
        restore(url=target, file=junk)


def test_a_fresh_database_counts_as_empty(tmp_path: Path) -> None:
    """`neocloud db upgrade` then restore needs no --force: migrations alone add no rows."""
    db = Database.from_url(f"sqlite:///{tmp_path / 'fresh.db'}")
    from neocloud.db.migrate import upgrade

    upgrade(db)
    assert row_count(db) == 0
    db.dispose()


def test_sqlite_backup_while_a_writer_commits_is_one_instant(tmp_path: Path) -> None:
    """A writer commits pairs of rows (a_i, b_i) in one transaction each while backups run:
    every backup holds as many a's as b's, never half a transaction."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    db = Database.from_url(url)
    from neocloud.db.backup import backup
    from neocloud.db.migrate import upgrade

    upgrade(db)
    stop = threading.Event()
    now = SystemClock().now()

    def write() -> None:
        i = 0
        while not stop.is_set():
            with db.transaction() as s:
                for side in "ab":
                    s.add(
                        LeaseRow(
                            name=f"{side}{i}",
                            holder="h",
                            token="t",
                            acquired_at=now,
                            expires_at=now,
                        )
                    )
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    counts = []
    try:
        for n in range(5):
            file = tmp_path / f"live{n}.db"
            backup(url=url, file=file)
            conn = sqlite3.connect(file)
            a, b = (
                conn.execute(
                    "SELECT count(*) FROM leases WHERE name LIKE ?", (f"{s}%",)
                ).fetchone()[0]
                for s in "ab"
            )
            conn.close()
            counts.append((a, b))
    finally:
        stop.set()
        writer.join()
        db.dispose()
    assert all(a == b for a, b in counts), counts
    assert counts[-1][0] > 0, "the writer committed while the backups ran"
