"""One parser for every time the CLI takes (``--since``, ``--until``): what people type, read
against the CLI state's Clock, sent to the API as RFC 3339 UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import typer

from neocloud.kernel.clock import rfc3339

FORMS = "7d, 7days, 12h, 30m, 2w (ago), RFC 3339, YYYY-MM-DD, YYYY-MM or unix seconds"
_AGO = re.compile(r"^(\d+)\s*([a-z]+)(?:\s+ago)?$")
_UNITS = {
    "weeks": ("w", "wk", "wks", "week", "weeks"),
    "days": ("d", "day", "days"),
    "hours": ("h", "hr", "hrs", "hour", "hours"),
    "minutes": ("m", "min", "mins", "minute", "minutes"),
    "seconds": ("s", "sec", "secs", "second", "seconds"),
}
_UNIT = {spelling: unit for unit, spellings in _UNITS.items() for spelling in spellings}


def parse_when(text: str, now: datetime, *, option: str = "--since") -> str:
    """A time for the API from what people type: a duration ago (``30m``, ``12h``, ``7d``,
    ``7days``, ``2w``), RFC 3339 / ISO 8601 (a zone-less time is UTC), a day ``YYYY-MM-DD`` or a
    month ``YYYY-MM`` (their first second, UTC) or unix seconds; RFC 3339 UTC out.

    Anything else is a ``typer.BadParameter`` naming ``option`` and the forms it takes.
    """
    value = text.strip().lower()
    if m := _AGO.match(value):
        unit = _UNIT.get(m[2])
        if unit is not None:
            ago = now - timedelta(**{unit: int(m[1])})
            return rfc3339(ago.replace(microsecond=0))
    if value.isdigit():
        return rfc3339(datetime.fromtimestamp(int(value), UTC))
    for fmt in ("%Y-%m-%d", "%Y-%m"):
        try:
            return rfc3339(datetime.strptime(value, fmt).replace(tzinfo=UTC))
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{option} takes {FORMS}; not {text!r}", param_hint=f"'{option}'"
        ) from None
    return rfc3339(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
