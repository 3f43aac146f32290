"""Wake-ups across processes: one process says "there is work", the others hear it at once.

On PostgreSQL a sender runs ``NOTIFY <channel>`` and every listener, each on a dedicated
connection that ran ``LISTEN <channel>``, gets it. SQLite has no NOTIFY, and every process on
one SQLite database is on the same host, so the sender touches a file beside the database and
listeners poll its modification time (a ``stat`` every ``poll_s``: no query, no lock).

A wake-up is a hint, never the truth: the rows say what must happen and a woken worker reads
them. A lost wake-up (a listener reconnecting, a process starting) costs at most one of the
worker's regular cycles, so senders and listeners log failures and carry on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import sql

from neocloud.db.engine import Database

log = logging.getLogger(__name__)
FILE_POLL_S = 0.02  # SQLite listeners stat the wake file this often
_RETRY_S = (0.5, 1.0, 2.0, 5.0)  # reconnect backoff, seconds


class Sender(Protocol):
    def notify(self) -> None: ...

    def stop(self) -> None: ...


class Listener(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def pg_conninfo(db: Database) -> str:
    """A libpq URL for ``db``'s server (SQLAlchemy's driver suffix removed)."""
    url = db.engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def wake_file(db: Database, channel: str) -> Path | None:
    """The file that stands for ``channel`` beside a SQLite database (None in memory)."""
    path = db.engine.url.database
    if not path or path == ":memory:":
        return None
    return Path(f"{path}-{channel}.wake")


def sender_for(db: Database, channel: str) -> Sender | None:
    """The way to wake ``channel``'s listeners on ``db`` (None: no other process can listen)."""
    if db.dialect == "postgresql":
        return PgSender(pg_conninfo(db), channel)
    path = wake_file(db, channel)
    return FileSender(path) if path is not None else None


def listener_for(db: Database, channel: str, on_wake: Callable[[], None]) -> Listener | None:
    """A listener that calls ``on_wake`` (from its own thread) on each wake-up of ``channel``."""
    if db.dialect == "postgresql":
        return PgListener(pg_conninfo(db), channel, on_wake)
    path = wake_file(db, channel)
    return FileListener(path, on_wake) if path is not None else None


class PgSender:
    """Sends ``NOTIFY`` from a thread of its own on a dedicated connection, so a request thread
    only sets a flag; wake-ups asked for while one is being sent are folded into the next."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self.conninfo, self.channel = conninfo, channel
        self.sent = 0  # NOTIFYs sent (tests and benchmarks read it)
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"notify-{channel}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Ask for a ``NOTIFY``; call after the write it announces has committed."""
        self._wanted.set()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    attempt = 0
                    while True:
                        self._wanted.wait()
                        if self._stop.is_set():
                            return
                        self._wanted.clear()  # before sending: a later ask sends again
                        conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
                        self.sent += 1
            except Exception:  # the server went away: send again once reconnected
                log.warning("NOTIFY %s failed; reconnecting", self.channel, exc_info=True)
                self._wanted.set()
                self._stop.wait(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
                attempt += 1

    def stop(self) -> None:
        self._stop.set()
        self._wanted.set()
        self._thread.join(5)


class PgListener:
    """``LISTEN`` on a dedicated connection in a thread; calls ``on_wake`` for each
    notification, and once after every (re)connection for what it may have missed."""

    def __init__(
        self, conninfo: str, channel: str, on_wake: Callable[[], None], *, check_s: float = 0.25
    ) -> None:
        self.conninfo, self.channel, self.on_wake = conninfo, channel, on_wake
        self.check_s = check_s  # how often the thread looks at its stop flag
        self.listening = threading.Event()  # set while LISTEN is in force
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"listen-{self.channel}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    attempt = 0
                    self.on_wake()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.check_s):
                            self.on_wake()
            except Exception:  # reconnect; the wake-up on connecting covers the gap
                self.listening.clear()
                log.warning("LISTEN %s failed; reconnecting", self.channel, exc_info=True)
                self._stop.wait(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
                attempt += 1
        self.listening.clear()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.check_s + 5)
            self._thread = None


class FileSender:
    """SQLite: a wake-up is a new modification time on the wake file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def notify(self) -> None:
        # An explicit time to the nanosecond: a plain touch takes the kernel's coarse clock,
        # so two wake-ups within one tick could look like one to a listener between them.
        now = time.time_ns()
        try:
            self.path.touch()
            os.utime(self.path, ns=(now, now))
        except OSError:
            log.warning("could not touch %s", self.path, exc_info=True)

    def stop(self) -> None:
        return None


class FileListener:
    """SQLite: polls the wake file's modification time every ``poll_s`` seconds."""

    def __init__(
        self, path: Path, on_wake: Callable[[], None], *, poll_s: float = FILE_POLL_S
    ) -> None:
        self.path, self.on_wake, self.poll_s = path, on_wake, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _mtime(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="listen-file", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        seen = self._mtime()
        while not self._stop.wait(self.poll_s):
            now = self._mtime()
            if now != seen:
                seen = now
                self.on_wake()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 5)
            self._thread = None
