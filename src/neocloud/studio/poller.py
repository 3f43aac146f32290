"""A daemon thread that calls a function now and then every few seconds: how a server process
learns of changes other processes made in the database (registered models, revoked keys)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class Poller:
    def __init__(
        self, name: str, step: Callable[[], None], interval_s: float, log: logging.Logger
    ) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run ``step`` now (a failure is logged: a server must start even if its table is not
        there yet), then every ``interval_s`` seconds (none when it is 0) until ``stop``."""
        self._guarded(first=True)
        if self.interval_s > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval_s):
            failing = not self._guarded(first=not failing)

    def _guarded(self, *, first: bool) -> bool:
        """``step``, through a database hiccup: logged once per run of failures."""
        try:
            self.step()
        except Exception:
            if first:
                self.log.warning("%s: the poll failed", self.name, exc_info=True)
            return False
        return True


class WorkLoop:
    """A daemon thread for a leased job worker (batches, fine-tuning): calls ``run_once`` again
    at once while it answers that it did work, else waits ``interval_s`` or until ``nudge``."""

    def __init__(
        self, name: str, run_once: Callable[[], bool], interval_s: float, log: logging.Logger
    ) -> None:
        self.name = name
        self.run_once = run_once
        self.interval_s = interval_s
        self.log = log
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def nudge(self) -> None:
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called: long work checks it between its steps."""
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                self.log.exception("%s: a cycle failed", self.name)
                busy = False
            if not busy:
                self._wake.wait(self.interval_s)
                self._wake.clear()
