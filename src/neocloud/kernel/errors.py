"""One error hierarchy for the whole platform.

Services raise these; the API maps each to its HTTP status and to the body
``{"error": {"type", "code", "message", "param"}}`` in one place. ``details`` carries the
machine-readable reasons a caller can act on (allowed transitions, usage and limit, …).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar


class NeocloudError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(NeocloudError):
    """The request is malformed or a value is out of range (the caller must change it)."""

    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class ValidationFailed(InvalidRequest):
    """A body, query or file failed schema validation; ``param`` names the field."""

    status = 422
    default_code = "validation_failed"


class AuthenticationFailed(NeocloudError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(NeocloudError):
    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFound(NeocloudError):
    status = 404
    type = "not_found_error"
    default_code = "not_found"


class Conflict(NeocloudError):
    """The request is valid but clashes with the current state (retrying as-is will not help)."""

    status = 409
    type = "conflict_error"
    default_code = "conflict"


class IllegalTransition(Conflict):
    """A lifecycle change that the state machine forbids; names the states that are allowed."""

    default_code = "illegal_transition"

    def __init__(
        self,
        kind: str,
        current: str,
        target: str,
        allowed: Iterable[str],
        *,
        action: str | None = None,
    ) -> None:
        allowed_list = sorted(allowed)
        what = action or f"move to {target}"
        allowed_text = ", ".join(allowed_list) if allowed_list else "none"
        super().__init__(
            f"cannot {what}: {kind} is {current}; from {current} it may go to: {allowed_text}",
            details={"current": current, "requested": target, "allowed": allowed_list},
        )


class QuotaExceeded(NeocloudError):
    status = 403
    type = "quota_error"
    default_code = "quota_exceeded"


class RateLimited(NeocloudError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class PayloadTooLarge(InvalidRequest):
    status = 413
    default_code = "payload_too_large"


class Unavailable(NeocloudError):
    status = 503
    type = "service_unavailable"
    default_code = "unavailable"
