"""Shared fixtures: a virtual clock, databases (SQLite and PostgreSQL), the app and clients.

API tests take the ``db`` fixture, which runs each test once on SQLite and once on PostgreSQL.
PostgreSQL comes from ``NEOCLOUD_TEST_POSTGRES_URL`` (default: postgres@127.0.0.1:5432/test);
each test session creates its own throwaway database there and drops it at the end. If no
server answers there but PostgreSQL's binaries are installed, a private server is started for
the session. Failing both, the PostgreSQL variants are skipped, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.db.metadata import all_metadata
from neocloud.db.migrate import upgrade
from neocloud.db.scratch import scratch_database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "NEOCLOUD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_URL = os.environ.get("NEOCLOUD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


def _reachable(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _throwaway_postgres() -> tuple[str, Callable[[], None]] | None:
    """Start a private PostgreSQL from the installed binaries, if there are any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = shutil.which("initdb") or (found[-1] if found else None)
    if initdb is None:
        return None
    bindir = Path(initdb).parent
    home = Path(tempfile.mkdtemp(prefix="neocloud-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root; run the server as the postgres user
        shutil.chown(home, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    datadir = home / "data"
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-o",
            options,
            "-l",
            str(home / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", stop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_database() -> Iterator[str]:
    admin_url, stop = PG_ADMIN_URL, None
    if not _reachable(admin_url):
        started = None
        try:
            started = _throwaway_postgres()
        except (OSError, subprocess.CalledProcessError, LookupError) as exc:
            if IN_CI:
                pytest.fail(f"could not start a throwaway PostgreSQL: {exc}")
        if started is None:
            message = f"PostgreSQL is not reachable at {PG_ADMIN_URL} and none could be started"
            if IN_CI:
                pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
            pytest.skip(message)
        admin_url, stop = started
    try:
        with scratch_database(admin_url, "neocloud_test") as url:
            yield url
    finally:
        if stop is not None:
            stop()


@pytest.fixture(scope="session")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path = tmp_path_factory.mktemp("sqlite") / "neocloud.db"
    db = Database.from_url(f"sqlite:///{path}")
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def postgresql_db() -> Iterator[Database]:
    gen = _postgres_database()
    url = next(gen)
    db = Database.from_url(url)
    upgrade(db)
    try:
        yield db
    finally:
        db.dispose()
        next(gen, None)


def _empty(db: Database) -> None:
    # Tables without a migration are caught by tests/db/test_schema.py, not here.
    present = set(sa.inspect(db.engine).get_table_names())
    tables = [t for t in reversed(all_metadata().sorted_tables) if t.name in present]
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    """A migrated, empty database: each test runs once per backend."""
    database: Database = request.getfixturevalue(f"{request.param}_db")
    _empty(database)
    return database


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, key_touch_interval_s=0)


@pytest.fixture
def admin_key(db: Database, clock: VirtualClock) -> str:
    from neocloud.tenancy.service import bootstrap_operator

    key = bootstrap_operator(db=db, clock=clock)
    assert key is not None
    return key


@pytest.fixture
def app(settings: Settings, db: Database, clock: VirtualClock):  # type: ignore[no-untyped-def]
    return create_app(settings=settings, db=db, clock=clock)


@pytest.fixture
def http(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """An unauthenticated HTTP client on the app."""
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def admin(app, admin_key: str) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    """The SDK authenticated as the operator admin."""
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield Client(api_key=admin_key, http=test_client, retries=0)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis for the shared rate-limit tests: skipped locally if none answers, a failure
    under CI=true (.ci/run starts one)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        message = f"Redis is not reachable at {REDIS_URL}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: .ci/run starts it)")
        pytest.skip(message)
    return REDIS_URL
