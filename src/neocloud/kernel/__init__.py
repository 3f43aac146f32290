"""The kernel: ids, clock, money, errors and settings. Depends on nothing else in neocloud."""

from neocloud.kernel.clock import Clock, SystemClock, VirtualClock, ensure_utc, rfc3339
from neocloud.kernel.errors import (
    AuthenticationFailed,
    Conflict,
    IllegalTransition,
    InvalidRequest,
    NeocloudError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    Unavailable,
    ValidationFailed,
)
from neocloud.kernel.ids import is_id, new_id, parse_id
from neocloud.kernel.money import Money, to_decimal
from neocloud.kernel.settings import Settings, load_settings

__all__ = [
    "AuthenticationFailed",
    "Clock",
    "Conflict",
    "IllegalTransition",
    "InvalidRequest",
    "Money",
    "NeocloudError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "Settings",
    "SystemClock",
    "Unavailable",
    "ValidationFailed",
    "VirtualClock",
    "ensure_utc",
    "is_id",
    "load_settings",
    "new_id",
    "parse_id",
    "rfc3339",
    "to_decimal",
]
