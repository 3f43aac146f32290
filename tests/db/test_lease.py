"""The leader lease: one holder at a time, taken over only after it expires."""

import threading

from neocloud.db.engine import Database
from neocloud.db.lease import LeaderLease, lease_holder
from neocloud.kernel.clock import VirtualClock


def _lease(db: Database, clock: VirtualClock, holder: str) -> LeaderLease:
    return LeaderLease(db, clock, name="scheduler", holder=holder, ttl_s=15)


def test_one_holder_until_expiry_then_takeover(db: Database, clock: VirtualClock) -> None:
    a, b = _lease(db, clock, "a"), _lease(db, clock, "b")
    assert a.acquire()
    assert not b.acquire()
    clock.advance(10)
    assert a.acquire()  # renewal moves the expiry
    clock.advance(10)
    assert not b.acquire()  # 20 s after first take, but only 10 s after renewal
    assert a.is_held()
    clock.advance(6)
    assert not a.is_held()  # expired: a must stop applying results
    assert b.acquire()
    assert lease_holder(db, clock, "scheduler").holder == "b"  # type: ignore[union-attr]
    assert not a.acquire()  # a comes back too late


def test_release_lets_another_take_at_once(db: Database, clock: VirtualClock) -> None:
    a, b = _lease(db, clock, "a"), _lease(db, clock, "b")
    assert a.acquire()
    a.release()
    assert lease_holder(db, clock, "scheduler") is None
    assert b.acquire()


def test_racing_contenders_exactly_one_wins(db: Database, clock: VirtualClock) -> None:
    contenders = [_lease(db, clock, f"p{i}") for i in range(8)]
    barrier = threading.Barrier(len(contenders))
    results: dict[str, bool] = {}

    def run(lease: LeaderLease) -> None:
        barrier.wait()
        results[lease.holder] = lease.acquire()

    threads = [threading.Thread(target=run, args=(c,)) for c in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results.values()) == 1
    winner = next(h for h, won in results.items() if won)
    assert lease_holder(db, clock, "scheduler").holder == winner  # type: ignore[union-attr]
