"""The compute worker in a process of its own (``neocloud worker``) beside an API process that
runs none (``neocloud up --no-worker``), on one database: the API's writes wake the worker
across processes (``NOTIFY`` on PostgreSQL, the wake file on SQLite), and a stopped worker hands
its lease over at once.

Real processes, started as an operator would; the database is prepared (migrated, operator,
fleet) by the test first so that no process races another to migrate it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from neocloud.api.platform import prepare
from neocloud.client import Client
from neocloud.compute.worker import LEASE_NAME, WAKE_CHANNEL
from neocloud.db.engine import Database
from neocloud.db.tables import LeaseRow
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import load_settings

from .test_race_processes import FLEET_12, NEOCLOUD, _free_port, _tenant

BOTH = pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


class Procs:
    """Starts ``neocloud`` processes on one database and stops whatever is left at the end."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.db_url, self.tmp_path = db_url, tmp_path
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *args: str, interval_s: float = 1.0) -> subprocess.Popen[bytes]:
        n = len(self.running)
        log_path = self.tmp_path / f"proc{n}.log"
        env = {
            **os.environ,
            "NEOCLOUD_LOG_LEVEL": "warning",
            "NEOCLOUD_COMPUTE_WORKER_INTERVAL_S": str(interval_s),
            "NEOCLOUD_CONFIG": str(self.tmp_path / "profiles.json"),
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    *NEOCLOUD,
                    *args,
                    *("--data-dir", str(self.tmp_path / f"data{n}")),
                    *("--database-url", self.db_url),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.running.append((proc, log_path))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return next(path.read_text() for p, path in self.running if p is proc)

    def stop_all(self) -> None:
        for proc, _ in self.running:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.running:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def procs(db: Database, tmp_path: Path) -> Iterator[Procs]:
    running = Procs(db.engine.url.render_as_string(hide_password=False), tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def admin_key(db: Database, tmp_path: Path) -> str:
    """The database prepared as ``neocloud up`` would (migrated, operator, a 12-node fleet)."""
    spec = tmp_path / "fleet.yaml"
    spec.write_text(FLEET_12)
    settings = load_settings(
        database_url=db.engine.url.render_as_string(hide_password=False),
        data_dir=tmp_path / "setup",
    )
    prepared = prepare(settings, SystemClock(), fleet_file=spec, demo_fleet=False)
    prepared.db.dispose()
    assert prepared.admin_key is not None
    return prepared.admin_key


def _wait(what: str, check: Callable[[], Any], timeout_s: float, step_s: float = 0.02) -> float:
    """Poll ``check`` until it is truthy; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(step_s)
    return time.monotonic() - started


def _api(procs: Procs, proc: subprocess.Popen[bytes], port: int) -> str:
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, procs.log(proc)
        try:
            return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    _wait("the API answers", healthy, 60, step_s=0.1)
    return url


def _lease_pid(db: Database) -> int | None:
    """The pid of the process holding the scheduler lease (holder is host:pid:id), if any."""
    with db.transaction() as s:
        holder = s.execute(sa.select(LeaseRow.holder).where(LeaseRow.name == LEASE_NAME)).scalar()
    return None if holder is None else int(holder.split(":")[1])


def _listening(db: Database) -> int:
    """How many sessions of this database have LISTENed on the compute channel (pg_stat_activity
    shows a session's last statement)."""
    with db.transaction() as s:
        return int(
            s.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query = :q"
                ),
                {"q": f'LISTEN "{WAKE_CHANNEL}"'},
            ).scalar_one()
        )


@BOTH
def test_api_without_worker_then_a_worker_process_woken_across_processes(
    db: Database, procs: Procs, admin_key: str
) -> None:
    port = _free_port()
    api_proc = procs.start("up", "--no-worker", "--no-demo-fleet", "--port", str(port))
    url = _api(procs, api_proc, port)
    admin = Client(url, admin_key, retries=0)
    tenant = Client(url, _tenant(admin, "acme", quota=64), retries=0)
    admin.close()

    # The API alone never schedules: nothing takes the lease, the instance stays pending.
    first = tenant.instances.create("8xH100")
    time.sleep(1.5)
    assert tenant.instances.get(first["id"])["state"] == "pending"
    assert _lease_pid(db) is None

    # A worker process whose own cycle is a minute long: it leads, listens, runs the backlog.
    worker = procs.start("worker", interval_s=60)
    _wait("the worker leads", lambda: _lease_pid(db) == worker.pid, 30, step_s=0.1)
    if db.dialect == "postgresql":
        _wait("the worker listens", lambda: _listening(db) == 1, 10, step_s=0.05)
    _wait("the backlog runs", lambda: tenant.instances.get(first["id"])["state"] == "running", 5)
    time.sleep(0.3)  # any wake-up queued by the start is spent: the worker now sleeps 60 s

    # A create through the other process runs at once: only the wake-up can have woken it.
    started = time.monotonic()
    second = tenant.instances.create("8xH100")
    took = _wait(
        "the create made through the API process runs",
        lambda: tenant.instances.get(second["id"])["state"] == "running",
        2.0,
    )
    assert api_proc.poll() is None
    assert worker.poll() is None
    assert _lease_pid(db) == worker.pid
    total = time.monotonic() - started
    print(f"\ncreate -> running across processes: {took:.2f} s (with the create {total:.2f} s)")
    tenant.close()


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_sigterm_stops_the_worker_cleanly_and_hands_the_lease_over_at_once(
    db: Database, procs: Procs, admin_key: str
) -> None:
    first = procs.start("worker", interval_s=60)
    _wait("the first worker leads", lambda: _lease_pid(db) == first.pid, 30, step_s=0.1)
    second = procs.start("worker", interval_s=0.1)  # stands by, asking for the lease often
    _wait("the second worker listens", lambda: _listening(db) == 2, 30, step_s=0.1)
    assert _lease_pid(db) == first.pid  # the lease (TTL 15 s) is not the second's

    first.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert first.wait(timeout=10) == 0, procs.log(first)
    exited = time.monotonic() - started
    took_over = _wait("the second worker leads", lambda: _lease_pid(db) == second.pid, 3)
    assert "leases released" in procs.log(first)
    assert second.poll() is None
    print(f"\nSIGTERM -> exit 0 in {exited:.2f} s; lease taken over {took_over:.2f} s later")


def test_a_worker_refuses_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from neocloud.cli.main import app

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(app, ["worker", "--database-url", url])
    assert result.exit_code == 1, result.output
    assert "neocloud db upgrade" in " ".join(result.output.split())  # the terminal may wrap
    db = Database.from_url(url)
    assert sa.inspect(db.engine).get_table_names() == []  # nothing written, not even a lease
    db.dispose()
