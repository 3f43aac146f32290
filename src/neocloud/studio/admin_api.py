"""The studio under ``/api/v1/studio`` with the platform's conventions (not OpenAI's): per-key
rate limits and per-org budgets (operator admins set them), and an org's token usage over time.

The model registry is ``models_api``; the OpenAI-compatible API under ``/v1`` is ``api``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from neocloud.studio.quota import KeyLimits, OrgBudget
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.schemas import (
    KeyLimitsIn,
    KeyLimitsOut,
    OrgBudgetIn,
    OrgBudgetOut,
    UsageBucketOut,
    UsageOut,
    UsageResultOut,
    UsageTotalsOut,
)
from neocloud.studio.usage import UsageReport, UsageResult, parse_usage_query, usage_report
from neocloud.web.deps import Caller, Ctx
from neocloud.web.schemas import ERROR_RESPONSES

admin_router = APIRouter(prefix="/studio", tags=["studio"], responses=ERROR_RESPONSES)


def _runtime(request: Request) -> StudioRuntime:
    runtime: StudioRuntime = request.app.state.studio
    return runtime


def _limits_out(k: KeyLimits) -> KeyLimitsOut:
    return KeyLimitsOut(
        key_id=k.key_id,
        requests_per_minute=k.requests_per_minute,
        tokens_per_minute=k.tokens_per_minute,
        effective_requests_per_minute=k.effective.requests_per_minute,
        effective_tokens_per_minute=k.effective.tokens_per_minute,
    )


def _budget_out(b: OrgBudget) -> OrgBudgetOut:
    return OrgBudgetOut(
        org_id=b.org_id,
        monthly_token_limit=b.monthly_token_limit,
        suspended=b.suspended,
        used_this_month=b.used_this_month,
    )


@admin_router.get("/keys/{key_id}/limits", response_model=KeyLimitsOut)
def get_key_limits(key_id: str, request: Request, caller: Caller) -> KeyLimitsOut:
    """A key's studio rate limits (operator staff)."""
    return _limits_out(_runtime(request).policy.get_key_limits(actor=caller, key_id=key_id))


@admin_router.put("/keys/{key_id}/limits", response_model=KeyLimitsOut)
def set_key_limits(
    key_id: str, body: KeyLimitsIn, request: Request, caller: Caller
) -> KeyLimitsOut:
    """Override a key's requests and tokens per minute (operator admins); other API processes
    apply it within 10 s."""
    limits = _runtime(request).policy.set_key_limits(
        actor=caller,
        key_id=key_id,
        requests_per_minute=body.requests_per_minute,
        tokens_per_minute=body.tokens_per_minute,
    )
    return _limits_out(limits)


@admin_router.get("/orgs/{org_id}/budget", response_model=OrgBudgetOut)
def get_org_budget(org_id: str, request: Request, caller: Caller) -> OrgBudgetOut:
    """An org's studio budget and its tokens this month (the org itself or operator staff)."""
    return _budget_out(_runtime(request).policy.get_org_budget(actor=caller, org_id=org_id))


@admin_router.put("/orgs/{org_id}/budget", response_model=OrgBudgetOut)
def set_org_budget(
    org_id: str, body: OrgBudgetIn, request: Request, caller: Caller
) -> OrgBudgetOut:
    """Set an org's monthly token budget or suspend it (operator admins): past the budget or
    while suspended its calls are refused with 429 ``insufficient_quota``."""
    budget = _runtime(request).policy.set_org_budget(
        actor=caller,
        org_id=org_id,
        monthly_token_limit=body.monthly_token_limit,
        suspended=body.suspended,
    )
    return _budget_out(budget)


_Values = Annotated[
    list[str] | None, Query(description="Repeat the parameter or separate values with commas")
]


@admin_router.get("/usage", response_model=UsageOut, response_model_exclude_none=True)
def get_usage(
    ctx: Ctx,
    caller: Caller,
    start_time: Annotated[
        str | None,
        Query(
            description="Required. RFC 3339 or unix seconds, inclusive",
            examples=["2026-03-01T00:00:00Z"],
        ),
    ] = None,
    end_time: Annotated[
        str | None, Query(description="RFC 3339 or unix seconds, exclusive (default: now)")
    ] = None,
    bucket_width: Annotated[str | None, Query(description="1m, 1h or 1d (default)")] = None,
    group_by: _Values = None,
    models: _Values = None,
    api_key_ids: _Values = None,
    org_id: Annotated[
        str | None,
        Query(max_length=40, description="Default: your org; `all`: every org (operator staff)"),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=1440,
            description="Buckets per page (at most 31 of 1d, 168 of 1h, 1440 of 1m); "
            "default: the whole window in one answer",
        ),
    ] = None,
    page: Annotated[
        str | None, Query(max_length=32, description="`next_page` of the previous answer")
    ] = None,
) -> UsageOut:
    """Tokens and requests per time bucket, grouped by any of ``model``, ``api_key_id``,
    ``endpoint`` and ``org_id``; an org reads its own, operator staff any or ``all``. Every
    bucket of the window (or of the page, with ``limit``) is listed, empty ones with no
    results; at most 1,000 buckets in a window."""
    query = parse_usage_query(
        now=ctx.clock.now(),
        start_time=start_time,
        end_time=end_time,
        bucket_width=bucket_width,
        group_by=group_by,
        models=models,
        api_key_ids=api_key_ids,
        org_id=org_id,
        limit=limit,
        page=page,
    )
    return _usage_out(usage_report(db=ctx.db, actor=caller, query=query))


def _usage_out(report: UsageReport) -> UsageOut:
    def result(r: UsageResult) -> UsageResultOut:
        return UsageResultOut(
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            num_model_requests=r.num_model_requests,
            aborted_requests=r.aborted_requests,
            model=r.model,
            api_key_id=r.api_key_id,
            endpoint=r.endpoint,
            org_id=r.org_id,
        )

    q, t = report.query, report.totals
    return UsageOut(
        org_id=report.org_id,
        has_more=q.next_page is not None,
        next_page=q.next_page,
        start_time=q.start,
        end_time=q.end,
        bucket_width=q.width.value,
        group_by=[g.value for g in q.group_by],
        buckets=[
            UsageBucketOut(
                start_time=b.start, end_time=b.end, results=[result(r) for r in b.results]
            )
            for b in report.buckets
        ],
        totals=UsageTotalsOut(
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            num_model_requests=t.num_model_requests,
            aborted_requests=t.aborted_requests,
        ),
    )
