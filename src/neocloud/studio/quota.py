"""Who may call the studio how much: per-key rate limits and per-org budgets.

* Rate limits per key default to the settings' (``NEOCLOUD_STUDIO_REQUESTS_PER_MINUTE``,
  ``NEOCLOUD_STUDIO_TOKENS_PER_MINUTE``); an operator admin may override them per key. A
  refusal is 429 ``rate_limit_exceeded`` (retry later).
* An org may have a monthly token budget, or be suspended (it cannot pay). Either refusal is 429
  ``insufficient_quota`` with ``x-should-retry: false``: OpenAI's code for "check your plan and
  billing", which clients must not retry.

Both are read on the request path, so they are cached per process for ``ttl_s`` seconds (a
change made through this process applies at once, elsewhere within ``ttl_s``). An org's tokens
this month are the ``studio_usage`` rows flushed so far plus what this process metered since it
last read them, so the budget check never writes and never waits for a flush.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import InvalidRequest, NeocloudError, NotFound
from neocloud.studio.metering import UsageRecord
from neocloud.studio.ratelimit import Limiter, RateLimit
from neocloud.studio.tables import StudioKeyLimitRow, StudioOrgBudgetRow, StudioUsageRow
from neocloud.tenancy.tables import ApiKeyRow, OrgRow


class InsufficientQuota(NeocloudError):
    status = 429
    type = "insufficient_quota"
    default_code = "insufficient_quota"
    headers: ClassVar[dict[str, str]] = {"x-should-retry": "false"}


@dataclass(frozen=True, slots=True)
class KeyLimits:
    key_id: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    effective: RateLimit


@dataclass(frozen=True, slots=True)
class OrgBudget:
    org_id: str
    monthly_token_limit: int | None
    suspended: bool
    used_this_month: int = 0


@dataclass(slots=True)
class _OrgState:
    budget: OrgBudget
    month: tuple[int, int]
    used_at_load: int
    local_since: int
    loaded_at: float


def _month_start(at: datetime) -> datetime:
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class QuotaPolicy:
    """The studio's admission rules: per-key rate limits and per-org budgets, read from the
    database and cached (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        default: RateLimit,
        *,
        ttl_s: float = 10.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.clock = clock
        self.default = default
        self.ttl_s = ttl_s
        self.now = now
        self._keys: dict[str, tuple[RateLimit | None, float]] = {}
        self._orgs: dict[str, _OrgState] = {}
        self._lock = threading.Lock()

    # -- the request path -------------------------------------------------------------------

    def key_limit(self, key_id: str) -> RateLimit | None:
        """The key's override, or ``None`` for the limiter's default."""
        t = self.now()
        cached = self._keys.get(key_id)
        if cached is not None and t - cached[1] < self.ttl_s:
            return cached[0]
        with self.db.transaction() as s:
            row = s.get(StudioKeyLimitRow, key_id)
            limit = None if row is None else self._effective(row)
        self._keys[key_id] = (limit, t)
        return limit

    def admit(self, caller: Principal, limiter: Limiter, *, tokens: int) -> None:
        """The org may pay (else ``insufficient_quota``) and the key is within its rate limits
        (else ``rate_limit_exceeded``); only an admitted request takes from the buckets."""
        self.check_org(caller.org_id)
        limiter.acquire(caller.key_id, tokens=tokens, limit=self.key_limit(caller.key_id))

    def check_org(self, org_id: str) -> None:
        """Raise ``InsufficientQuota`` when the org is suspended or has spent its month."""
        state = self._org_state(org_id)
        budget = state.budget
        if budget.suspended:
            raise InsufficientQuota(
                "You exceeded your current quota: this organization's studio access is "
                "suspended. Check your plan and billing details.",
                details={"org_id": org_id, "reason": "suspended"},
            )
        limit = budget.monthly_token_limit
        if limit is not None:
            used = state.used_at_load + state.local_since
            if used >= limit:
                raise InsufficientQuota(
                    f"You exceeded your current quota: {used} of this month's {limit} tokens "
                    "are used. Check your plan and billing details.",
                    details={"org_id": org_id, "reason": "monthly_tokens", "limit": limit},
                )

    def note(self, record: UsageRecord) -> None:
        """Count a metered request against its org's month (until the next read)."""
        state = self._orgs.get(record.org_id)
        if state is not None:
            with self._lock:
                state.local_since += record.prompt_tokens + record.completion_tokens

    # -- operator changes -------------------------------------------------------------------

    def get_key_limits(self, *, actor: Principal, key_id: str) -> KeyLimits:
        actor.require_operator()
        with self.db.transaction() as s:
            if s.get(ApiKeyRow, key_id) is None:
                raise NotFound(f"no API key {key_id}", code="key_not_found", param="key_id")
            return self._key_limits(key_id, s.get(StudioKeyLimitRow, key_id))

    def set_key_limits(
        self,
        *,
        actor: Principal,
        key_id: str,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
    ) -> KeyLimits:
        """Override a key's limits; ``None`` falls back to the default for that bucket."""
        actor.require_operator(write=True)
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if value is not None and value < 1:
                raise InvalidRequest(f"{name} must be at least 1", code="invalid_value", param=name)
        with self.db.transaction() as s:
            if s.get(ApiKeyRow, key_id) is None:
                raise NotFound(f"no API key {key_id}", code="key_not_found", param="key_id")
            row = s.get(StudioKeyLimitRow, key_id)
            if row is None:
                row = StudioKeyLimitRow(key_id=key_id)
                s.add(row)
            row.requests_per_minute = requests_per_minute
            row.tokens_per_minute = tokens_per_minute
            row.updated_at = self.clock.now()
            out = self._key_limits(key_id, row)
        self._keys.pop(key_id, None)
        return out

    def get_org_budget(self, *, actor: Principal, org_id: str) -> OrgBudget:
        if not actor.is_operator and actor.org_id != org_id:  # an org reads its own only
            raise NotFound(f"no org {org_id}", code="org_not_found", param="org_id")
        self._orgs.pop(org_id, None)
        return self._org_state(org_id).budget

    def set_org_budget(
        self,
        *,
        actor: Principal,
        org_id: str,
        monthly_token_limit: int | None,
        suspended: bool,
    ) -> OrgBudget:
        actor.require_operator(write=True)
        if monthly_token_limit is not None and monthly_token_limit < 0:
            raise InvalidRequest(
                "monthly_token_limit must not be negative",
                code="invalid_value",
                param="monthly_token_limit",
            )
        with self.db.transaction() as s:
            if s.get(OrgRow, org_id) is None:
                raise NotFound(f"no org {org_id}", code="org_not_found", param="org_id")
            row = s.get(StudioOrgBudgetRow, org_id)
            if row is None:
                row = StudioOrgBudgetRow(org_id=org_id)
                s.add(row)
            row.monthly_token_limit = monthly_token_limit
            row.suspended = suspended
            row.updated_at = self.clock.now()
        self._orgs.pop(org_id, None)
        return self._org_state(org_id).budget

    # -- reading ----------------------------------------------------------------------------

    def _effective(self, row: StudioKeyLimitRow | None) -> RateLimit:
        if row is None:
            return self.default
        return RateLimit(
            row.requests_per_minute or self.default.requests_per_minute,
            row.tokens_per_minute or self.default.tokens_per_minute,
        )

    def _key_limits(self, key_id: str, row: StudioKeyLimitRow | None) -> KeyLimits:
        return KeyLimits(
            key_id,
            row.requests_per_minute if row else None,
            row.tokens_per_minute if row else None,
            self._effective(row),
        )

    def _org_state(self, org_id: str) -> _OrgState:
        t = self.now()
        today = self.clock.now()
        month = (today.year, today.month)
        state = self._orgs.get(org_id)
        if state is not None and t - state.loaded_at < self.ttl_s and state.month == month:
            return state
        with self.db.transaction() as s:
            row = s.get(StudioOrgBudgetRow, org_id)
            used = 0
            if row is not None and row.monthly_token_limit is not None:
                used = int(
                    s.scalar(
                        sa.select(
                            sa.func.coalesce(
                                sa.func.sum(
                                    StudioUsageRow.prompt_tokens + StudioUsageRow.completion_tokens
                                ),
                                0,
                            )
                        ).where(
                            StudioUsageRow.org_id == org_id,
                            StudioUsageRow.created_at >= _month_start(today),
                        )
                    )
                    or 0
                )
        budget = OrgBudget(
            org_id,
            row.monthly_token_limit if row else None,
            bool(row.suspended) if row else False,
            used,
        )
        state = _OrgState(budget, month, used, 0, t)
        self._orgs[org_id] = state
        return state
