"""An ``Idempotency-Key`` survives its request's process dying: a retry after the lease runs a
request that changed nothing exactly once, and never runs one whose effect committed.

Through the app, a process "dies" by having the middleware's own step that would follow fail
(its ``release`` or ``store`` replaced by one that does nothing or raises): the database is left
as a SIGKILL at that point would leave it. ``test_a_sigkilled_process_*`` SIGKILLs a real
process (``idempotency_child.py``) with its effect's transaction in flight or just committed.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.api.middleware import IDEMPOTENCY_KEYS, BodyLimitAndIdempotencyMiddleware, Claim
from neocloud.db.effects import EffectMark, is_write, marking_effects
from neocloud.db.engine import Database
from neocloud.db.tables import IdempotencyRow
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import Conflict
from neocloud.tenancy import service as tenancy_service
from neocloud.tenancy.tables import OrgRow

CHILD = Path(__file__).with_name("idempotency_child.py")
LEASE_S = 60.0  # Settings.idempotency_lease_s's default, which the app fixture uses


def _post(http: TestClient, admin_key: str, name: str, key: str) -> Any:
    headers = {"Authorization": f"Bearer {admin_key}", "Idempotency-Key": key}
    return http.post("/api/v1/orgs", json={"name": name}, headers=headers)


def _orgs_named(db: Database, name: str) -> int:
    with db.transaction() as s:
        return int(s.scalar(sa.select(sa.func.count()).where(OrgRow.name == name)) or 0)


def _key_row(db: Database, key: str) -> Any:
    table = IDEMPOTENCY_KEYS
    with db.transaction() as s:
        return s.execute(sa.select(table).where(table.c.key == key)).one()


def test_writes_are_recognised_from_their_sql() -> None:
    for sql in (
        "INSERT INTO orgs (id) VALUES (?)",
        "  update orgs SET name = ?",
        "DELETE FROM orgs",
        "WITH x AS (SELECT 1) INSERT INTO orgs SELECT * FROM x",
        "WITH gone AS (DELETE FROM t RETURNING id) SELECT id FROM gone",
    ):
        assert is_write(sql), sql
    for sql in (
        "SELECT * FROM orgs FOR UPDATE",
        "SELECT pg_notify('wake', '')",
        "BEGIN IMMEDIATE",
        "SAVEPOINT sa_1",
        "WITH x AS (SELECT 1) SELECT * FROM x",
    ):
        assert not is_write(sql), sql


def test_died_before_its_effect_runs_once_after_the_lease(
    http: TestClient,
    admin_key: str,
    db: Database,
    clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(**_: Any) -> Any:
        raise RuntimeError("the process dies before writing anything")

    with monkeypatch.context() as patch:
        patch.setattr(tenancy_service, "create_org", crash)
        # the process is gone: nothing gives the key back
        patch.setattr(BodyLimitAndIdempotencyMiddleware, "release", lambda self, claim: None)
        assert _post(http, admin_key, "Lazarus", "dies-early").status_code == 500
    row = _key_row(db, "dies-early")
    assert row.status_code is None
    assert row.effect_at is None

    held = _post(http, admin_key, "Lazarus", "dies-early")
    assert held.status_code == 409
    assert held.json()["error"]["code"] == "idempotency_key_in_use"

    clock.advance(LEASE_S + 1)
    retried = _post(http, admin_key, "Lazarus", "dies-early")
    assert retried.status_code == 201, retried.text
    assert _orgs_named(db, "Lazarus") == 1
    again = _post(http, admin_key, "Lazarus", "dies-early")
    assert again.json()["id"] == retried.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert _orgs_named(db, "Lazarus") == 1


def test_died_after_its_effect_is_never_run_twice(
    http: TestClient,
    admin_key: str,
    db: Database,
    clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def die(self: Any, claim: Claim, status: int, body: Any) -> None:
        raise RuntimeError("the process dies between the handler's commit and storing")

    with monkeypatch.context() as patch:
        patch.setattr(BodyLimitAndIdempotencyMiddleware, "store", die)
        # whether the client saw the 201 or a broken connection does not matter
        with contextlib.suppress(RuntimeError):
            _post(http, admin_key, "Once Only", "dies-late")
    assert _orgs_named(db, "Once Only") == 1
    row = _key_row(db, "dies-late")
    assert row.status_code is None
    assert row.effect_at is not None

    assert _post(http, admin_key, "Once Only", "dies-late").json()["error"]["code"] == (
        "idempotency_key_in_use"
    )
    clock.advance(LEASE_S + 1)
    for _ in range(2):
        retried = _post(http, admin_key, "Once Only", "dies-late")
        assert retried.status_code == 409
        assert retried.json()["error"]["code"] == "idempotency_outcome_unknown"
        assert "took effect" in retried.json()["error"]["message"]
    assert _orgs_named(db, "Once Only") == 1


def test_a_server_error_after_the_effect_is_not_run_again(
    http: TestClient, admin_key: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tenancy_service.create_org

    def commit_then_fail(**kwargs: Any) -> Any:
        real(**kwargs)
        raise RuntimeError("fails after its write committed")

    with monkeypatch.context() as patch:
        patch.setattr(tenancy_service, "create_org", commit_then_fail)
        assert _post(http, admin_key, "Half Done", "fails-late").status_code == 500
    # Before the lease model the key was forgotten and this retry made a second org.
    retried = _post(http, admin_key, "Half Done", "fails-late")
    assert retried.status_code == 409
    assert retried.json()["error"]["code"] == "idempotency_outcome_unknown"
    assert _orgs_named(db, "Half Done") == 1


def test_a_server_error_before_any_write_is_forgotten(
    http: TestClient, admin_key: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(**_: Any) -> Any:
        raise RuntimeError("fails before writing")

    with monkeypatch.context() as patch:
        patch.setattr(tenancy_service, "create_org", crash)
        assert _post(http, admin_key, "Second Go", "fails-early").status_code == 500
    assert _post(http, admin_key, "Second Go", "fails-early").status_code == 201
    assert _orgs_named(db, "Second Go") == 1


def _middleware(db: Database, clock: VirtualClock) -> BodyLimitAndIdempotencyMiddleware:
    async def never(*_: Any) -> None:
        raise AssertionError("not called: these tests drive the middleware's steps")

    def authenticate(token: str) -> Principal:
        raise AssertionError("not called")

    return BodyLimitAndIdempotencyMiddleware(
        never,
        db=db,
        clock=clock,
        authenticate=authenticate,
        max_body_bytes=1024,
        ttl_s=3600,
        lease_s=LEASE_S,
    )


def _effect(db: Database, scope: str, key: str) -> None:
    """Something a handler writes: any row will do (another key's)."""
    with db.transaction() as s:
        s.execute(
            sa.insert(IDEMPOTENCY_KEYS).values(
                scope=scope,
                key=key,
                method="POST",
                path="/x",
                request_hash="h",
                created_at=datetime(2026, 3, 1, tzinfo=UTC),
            )
        )


def test_a_run_whose_key_was_taken_over_has_its_write_refused(
    db: Database, clock: VirtualClock
) -> None:
    mw = _middleware(db, clock)
    first = mw.claim("key_a", "slow", "POST", "/api/v1/orgs", "hash")
    assert isinstance(first, str)
    clock.advance(LEASE_S + 1)  # the first run is still going, but its lease lapsed
    second = mw.claim("key_a", "slow", "POST", "/api/v1/orgs", "hash")
    assert isinstance(second, str)
    assert second != first

    slow = Claim("key_a", "slow", first)
    mark = EffectMark(lambda s: mw.record_effect(s, slow))
    with marking_effects(mark), pytest.raises(Conflict) as refused:
        _effect(db, "effects", "slow-run")
    assert refused.value.code == "idempotency_key_in_use"
    assert not mark.committed
    with db.transaction() as s:  # the refused run's write was rolled back with it
        assert (
            s.scalar(sa.select(IDEMPOTENCY_KEYS.c.key).where(IDEMPOTENCY_KEYS.c.scope == "effects"))
            is None
        )

    fresh = Claim("key_a", "slow", second)
    mark = EffectMark(lambda s: mw.record_effect(s, fresh))
    with marking_effects(mark):
        _effect(db, "effects", "fresh-run")
    assert mark.committed
    assert _key_row(db, "slow").effect_at is not None
    # a third retry cannot take over a key whose effect committed, lease or no lease
    clock.advance(LEASE_S + 1)
    with pytest.raises(Conflict) as told:
        mw.claim("key_a", "slow", "POST", "/api/v1/orgs", "hash")
    assert told.value.code == "idempotency_outcome_unknown"


def test_reads_and_bookkeeping_record_no_effect(db: Database, clock: VirtualClock) -> None:
    mw = _middleware(db, clock)
    token = mw.claim("key_b", "k", "POST", "/api/v1/orgs", "hash")
    assert isinstance(token, str)
    mark = EffectMark(lambda s: mw.record_effect(s, Claim("key_b", "k", token)))
    with marking_effects(mark):
        with db.transaction() as s:
            s.execute(sa.select(IDEMPOTENCY_KEYS)).all()
        with db.transaction(effect=False) as s:
            s.execute(sa.update(IDEMPOTENCY_KEYS).values(path="/api/v1/orgs"))
        assert not mark.committed
        assert _key_row(db, "k").effect_at is None
        with db.transaction() as s:  # an ORM write, flushed at commit
            s.add(
                IdempotencyRow(
                    scope="effects",
                    key="orm",
                    method="POST",
                    path="/x",
                    request_hash="h",
                    created_at=clock.now(),
                )
            )
        assert mark.committed
    assert _key_row(db, "k").effect_at == clock.now()


def _effects(db: Database, key: str) -> int:
    table = IDEMPOTENCY_KEYS
    with db.transaction() as s:
        found = s.scalar(
            sa.select(sa.func.count()).where(table.c.scope == "effects", table.c.key == key)
        )
        return int(found or 0)


@pytest.mark.parametrize("moment", ["before-commit", "after-commit"])
def test_a_sigkilled_process_leaves_a_key_a_retry_handles_once(
    db: Database, clock: VirtualClock, moment: str
) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    key = f"killed-{moment}"
    child = subprocess.run(
        [sys.executable, str(CHILD), url, clock.now().isoformat(), key, moment],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    mw = _middleware(db, clock)
    with pytest.raises(Conflict) as held:
        mw.claim("key_child", key, "POST", "/api/v1/orgs", "hash")
    assert held.value.code == "idempotency_key_in_use"
    clock.advance(LEASE_S + 1)
    if moment == "after-commit":
        assert _effects(db, f"{key}-effect") == 1
        for _ in range(2):
            with pytest.raises(Conflict) as told:
                mw.claim("key_child", key, "POST", "/api/v1/orgs", "hash")
            assert told.value.code == "idempotency_outcome_unknown"
        assert _effects(db, f"{key}-effect") == 1
        return
    assert _effects(db, f"{key}-effect") == 0  # the killed transaction rolled back, stamp too
    token = mw.claim("key_child", key, "POST", "/api/v1/orgs", "hash")
    assert isinstance(token, str)
    mark = EffectMark(lambda s: mw.record_effect(s, Claim("key_child", key, token)))
    with marking_effects(mark):
        _effect(db, "effects", f"{key}-effect")
    assert mark.committed
    assert _effects(db, f"{key}-effect") == 1
    clock.advance(LEASE_S + 1)
    with pytest.raises(Conflict) as told:  # and it is not run a third time
        mw.claim("key_child", key, "POST", "/api/v1/orgs", "hash")
    assert told.value.code == "idempotency_outcome_unknown"
