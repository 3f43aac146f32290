"""Wake-ups across processes (``db.notify``) in one process: a sender's wake-up reaches every
listener of its channel on the same database, and only those, on both backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.db.notify import FileListener, PgListener, listener_for, sender_for


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1

    def reach(self, n: int, timeout_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < n:
            assert time.monotonic() < deadline, f"{self.count} wake-ups, wanted {n}"
            time.sleep(0.005)


@pytest.fixture
def listen(db: Database) -> Iterator[Callable[[str], Wakes]]:
    """Start a listener on a channel of ``db``; returns its wake-up counter (ready to hear)."""
    started = []

    def start(channel: str) -> Wakes:
        wakes = Wakes()
        listener = listener_for(db, channel, wakes)
        assert listener is not None
        listener.start()
        started.append(listener)
        if isinstance(listener, PgListener):
            assert listener.listening.wait(5)
            wakes.reach(1)  # one wake-up on connecting, for what it may have missed
            wakes.count = 0
        else:
            assert isinstance(listener, FileListener)
            time.sleep(2 * listener.poll_s)  # it has read the file's current time
        return wakes

    yield start
    for listener in started:
        listener.stop()


def test_a_wake_up_reaches_the_channels_listeners_and_no_other(
    db: Database, listen: Callable[[str], Wakes]
) -> None:
    compute, compute_too, other = listen("nc_compute"), listen("nc_compute"), listen("nc_other")
    sender = sender_for(db, "nc_compute")
    assert sender is not None
    try:
        sender.notify()
        compute.reach(1)
        compute_too.reach(1)
        # Wake-ups in quick succession are not lost: a later one is heard after an earlier one.
        sender.notify()
        compute.reach(2)
        sender.notify()
        compute.reach(3)
        time.sleep(0.1)
        assert other.count == 0
    finally:
        sender.stop()


def test_an_in_memory_sqlite_database_has_no_wake_up_channel() -> None:
    db = Database.from_url("sqlite://")
    assert sender_for(db, "nc_compute") is None
    assert listener_for(db, "nc_compute", lambda: None) is None


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_sender_and_listener_survive_their_connections_being_cut(
    db: Database, listen: Callable[[str], Wakes]
) -> None:
    wakes = listen("nc_cut")
    sender = sender_for(db, "nc_cut")
    assert sender is not None
    try:
        sender.notify()
        wakes.reach(1)
        # The server drops both sessions (a restart, an idle timeout, an operator's kill).
        with db.transaction() as s:
            cut = s.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND (query = 'LISTEN \"nc_cut\"' "
                    "OR query LIKE 'SELECT pg_notify%')"
                )
            ).scalar_one()
        assert cut == 2
        wakes.reach(2, timeout_s=5)  # the listener reconnected and woke once for the gap
        heard = wakes.count
        sender.notify()  # fails on the dead session, then is sent again on a new one
        wakes.reach(heard + 1, timeout_s=5)
    finally:
        sender.stop()
