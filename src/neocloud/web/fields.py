"""Field types every request schema shares: bounded, strictly typed, documented.

Each type carries its bound in the OpenAPI document (``maximum``, ``maxLength``, ``pattern``), so
clients and the fuzzer see what the server enforces, and a value outside it is a 422 naming the
field before any service runs. The bounds, in one table (``docs/security.md`` quotes it):

================  ==========================================================================
``UtcTime``       RFC 3339 (or a bare date), years 1970 to 8999 as written; no offset = UTC
``Name``          1 to 200 characters, trimmed, no control characters
``ShortText``     0 to 200 characters, trimmed, no control characters
``Text``          up to 1,000 characters, trimmed, no control characters but tab and newlines
``Clean``         trimmed, no control characters; each field gives its ``max_length``
``CleanText``     as ``Clean``, tab and newlines allowed (scripts, messages)
``Id``            an object id: 1 to 40 characters, no control characters
``Email``         3 to 254 characters, ``local@domain.tld``, no control characters or spaces
``Url``           ``http://`` or ``https://``, up to 2,048 characters, no control characters
``SshKey``        one public key line, at most 16 kB; at most 20 keys (``SSH_KEYS_MAX``)
``Count``         an integer 0 to 1,000,000 (GPUs, nodes)
``Priority``      an integer -1,000,000 to 1,000,000
``Hours``         an integer -1,000,000 to 1,000,000 (the service checks the term)
``Seconds``       an integer -10^9 to 10^9 (the service checks the wait)
``Tokens``        an integer 0 to 10^12 (a token count or limit per event, minute or month)
``Amount``        a decimal -10^12 to 10^12, at most 6 places (the service checks the sign)
``Price``         a decimal 0 to 10^12, at most 6 places (unit prices)
``Fraction``      a decimal 0 to 1, at most 6 places
``Currency``      one of ``kernel.money.SUPPORTED_CURRENCIES`` (today USD)
================  ==========================================================================

Integers are strict: JSON ``false`` is not 0, ``1.0`` and ``"1"`` are not 1. Every integer bound
is far below 2^63, so whatever passes fits a PostgreSQL ``BIGINT`` and Python's arithmetic on it
stays exact. Text refuses NUL and the other C0/C1 control characters, which PostgreSQL cannot
store (NUL) and which forge log lines and terminal output (the rest).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field, PlainSerializer, StringConstraints, WithJsonSchema

from neocloud.kernel.clock import ensure_utc, rfc3339
from neocloud.kernel.money import SUPPORTED_CURRENCIES

# ------------------------------------------------------------------------------------- times

EARLIEST_YEAR = 1970
LATEST_YEAR = 8999  # far from datetime.max, so a window or a term added to it still fits
TIME_PATTERN = (
    r"^(19[7-9][0-9]|[2-8][0-9]{3})-[0-9]{2}-[0-9]{2}"
    r"([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?([Zz]|[+-][0-9]{2}:?[0-9]{2})?)?$"
)


def _utc(value: datetime) -> datetime:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"the year must be between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return ensure_utc(value)  # in range: the UTC value cannot leave datetime's range


UtcTime = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(rfc3339, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIME_PATTERN,
            "description": f"RFC 3339, years {EARLIEST_YEAR} to {LATEST_YEAR}; "
            "a time without an offset is UTC",
        }
    ),
]
"""A point in time: RFC 3339 in, timezone-aware UTC out; out of range is a 422."""


# -------------------------------------------------------------------------------------- text

# C0 controls, DEL and C1 controls; Text allows tab, line feed and carriage return.
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
NAME_PATTERN = rf"^[^{CONTROL_CHARS}]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
NAME_MAX = 200
TEXT_MAX = 1000
EMAIL_PATTERN = rf"^[^@\s{CONTROL_CHARS}]{{1,64}}@[^@\s{CONTROL_CHARS}]+\.[^@\s{CONTROL_CHARS}]+$"
EMAIL_MAX = 254
URL_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#{CONTROL_CHARS}]+[^\s{CONTROL_CHARS}]*$"
URL_MAX = 2048


Clean = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, pattern=NAME_PATTERN)]
"""A trimmed one-line string with no control characters; give it a ``max_length`` where used."""

CleanText = Annotated[
    str, StringConstraints(strict=True, strip_whitespace=True, pattern=TEXT_PATTERN)
]
"""A trimmed multi-line string (tab and newlines allowed); give it a ``max_length`` where used."""

Id = Annotated[
    str,
    StringConstraints(
        strict=True, strip_whitespace=True, min_length=1, max_length=40, pattern=NAME_PATTERN
    ),
]
"""An object id (``org_…``): 1 to 40 characters, no control characters."""

ShortText = Annotated[
    str,
    StringConstraints(
        strict=True, strip_whitespace=True, max_length=NAME_MAX, pattern=NAME_PATTERN
    ),
]
"""A short optional label: up to 200 characters (may be empty), no control characters."""

Name = Annotated[
    str,
    StringConstraints(
        strict=True, strip_whitespace=True, min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN
    ),
]
"""A display name: 1 to 200 characters, trimmed, no control characters."""

Text = Annotated[
    str,
    StringConstraints(
        strict=True, strip_whitespace=True, max_length=TEXT_MAX, pattern=TEXT_PATTERN
    ),
]
"""Free text (a note, a description): up to 1,000 characters; tab and newlines allowed."""

Email = Annotated[
    str,
    StringConstraints(
        strict=True,
        strip_whitespace=True,
        min_length=3,
        max_length=EMAIL_MAX,
        pattern=EMAIL_PATTERN,
    ),
]
"""An email address: ``local@domain.tld``, no spaces or control characters."""

Url = Annotated[
    str,
    StringConstraints(
        strict=True, strip_whitespace=True, min_length=8, max_length=URL_MAX, pattern=URL_PATTERN
    ),
]
"""An ``http://`` or ``https://`` URL with a host, no spaces or control characters."""

SSH_KEY_MAX = 16_384  # an RSA-16384 public key in OpenSSH form is about 2.8 kB
SSH_KEYS_MAX = 20
SshKey = Annotated[
    str,
    StringConstraints(
        strict=True,
        strip_whitespace=True,
        min_length=1,
        max_length=SSH_KEY_MAX,
        pattern=NAME_PATTERN,
    ),
]
"""One OpenSSH public key line: at most 16 kB, no control characters."""


# ------------------------------------------------------------------------------------ numbers

COUNT_MAX = 1_000_000
PRIORITY_MAX = 1_000_000
HOURS_MAX = 1_000_000
SECONDS_MAX = 1_000_000_000
TOKENS_MAX = 10**12
AMOUNT_MAX = 10**12
AMOUNT_PLACES = 6  # what a stored amount keeps (NUMERIC(20, 6))


Count = Annotated[int, Field(strict=True, ge=0, le=COUNT_MAX)]
"""How many of something (GPUs, nodes): 0 to 1,000,000."""

Priority = Annotated[int, Field(strict=True, ge=-PRIORITY_MAX, le=PRIORITY_MAX)]
"""An ordering key: -1,000,000 to 1,000,000."""

# Durations are bounded both ways here; the service refuses a negative or too short one with
# its own code (``invalid_queue``, ``invalid_duration``), which clients already handle.
Hours = Annotated[int, Field(strict=True, ge=-HOURS_MAX, le=HOURS_MAX)]
"""A duration in whole hours: at most 1,000,000 either way (services apply term limits)."""

Seconds = Annotated[int, Field(strict=True, ge=-SECONDS_MAX, le=SECONDS_MAX)]
"""A duration in whole seconds: at most 10^9 either way (services apply tighter limits)."""

Tokens = Annotated[int, Field(strict=True, ge=0, le=TOKENS_MAX)]
"""A token count or token limit: 0 to 10^12."""


AMOUNT_PATTERN = r"^-?([0-9]{1,12}(\.[0-9]{1,6})?|1000000000000(\.0{1,6})?)$"
PRICE_PATTERN = AMOUNT_PATTERN.replace("^-?", "^", 1)
Amount = Annotated[
    Decimal,
    Field(ge=-AMOUNT_MAX, le=AMOUNT_MAX, decimal_places=AMOUNT_PLACES, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": -AMOUNT_MAX, "maximum": AMOUNT_MAX},
                {"type": "string", "pattern": AMOUNT_PATTERN, "maxLength": 21},
            ]
        }
    ),
]
"""A money amount: a decimal of at most 10^12 either way, at most 6 decimal places (the service
says which sign an amount may have, with its own error code)."""

Price = Annotated[
    Decimal,
    Field(ge=0, le=AMOUNT_MAX, decimal_places=AMOUNT_PLACES, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": AMOUNT_MAX},
                {"type": "string", "pattern": PRICE_PATTERN, "maxLength": 20},
            ]
        }
    ),
]
"""A unit price: a decimal 0 to 10^12 with at most 6 decimal places."""

Fraction = Annotated[
    Decimal,
    Field(ge=0, le=1, decimal_places=AMOUNT_PLACES, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": r"^[01](\.[0-9]{1,6})?$", "maxLength": 8},
            ]
        }
    ),
]
"""A share: a decimal 0 to 1 with at most 6 decimal places."""


# ----------------------------------------------------------------------------------- currency

CURRENCY_PATTERN = "^(" + "|".join(SUPPORTED_CURRENCIES) + ")$"
Currency = Annotated[str, StringConstraints(strict=True, pattern=CURRENCY_PATTERN)]
"""A currency the platform invoices in (``kernel.money.SUPPORTED_CURRENCIES``)."""

CurrencyCode = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[A-Z]{3}$"),
    WithJsonSchema({"type": "string", "enum": list(SUPPORTED_CURRENCIES)}),
]
"""An ISO 4217 code, documented as the supported set, for a service that refuses the others
with its own error (price books: ``unsupported_currency``, listing the supported)."""
