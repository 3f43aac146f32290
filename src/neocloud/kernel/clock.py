"""Time as a dependency.

Logic never reads the wall clock; it is handed a ``Clock``. ``SystemClock`` is the real one;
``VirtualClock`` is moved by hand, which lets tests and the simulator replay months in seconds.
All times are timezone-aware UTC ``datetime`` values.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._now = ensure_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta or seconds); return the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: datetime) -> None:
        when = ensure_utc(when)
        with self._lock:
            if when < self._now:
                raise ValueError("a clock does not go backwards")
            self._now = when


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive value is taken to be UTC already (SQLite returns those).

    A value whose UTC equivalent leaves ``datetime``'s range (``0001-01-01T00:00:00+05:00``)
    raises ``ValueError``, never ``OverflowError``, so validators turn it into a 4xx."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is outside the representable range") from None


def rfc3339(value: datetime) -> str:
    """Format as RFC 3339 UTC with a ``Z`` suffix and millisecond precision at most."""
    value = ensure_utc(value)
    text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")
