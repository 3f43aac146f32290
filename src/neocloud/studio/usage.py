"""An org's studio token usage over time, read from the per-request log ``studio_usage``.

The window ``[start, end)`` is cut into buckets of one width (``1m``, ``1h``, ``1d``) counted
from ``start``: bucket *i* is ``[start + i·width, start + (i+1)·width)``, the last one cut at
``end``. A request belongs to the bucket its ``created_at`` falls in, so a request made exactly
at a bucket's start is in that bucket and one made at ``end`` is outside the window. Within a
bucket the requests are summed per group (any of ``model``, ``api_key_id``, ``endpoint``).

The sums are computed by the database (one ``GROUP BY`` on the bucket number and the groups),
so the work grows with the number of groups, not of requests; windows of more than
``MAX_BUCKETS`` buckets are refused. Times are whole seconds: the bucket number is computed
from epoch seconds, identically on SQLite and PostgreSQL.

Paging, as OpenAI's usage API pages: ``limit`` buckets per answer (at most ``PAGE_LIMITS`` of
the width: 31 days, 168 hours, 1,440 minutes); ``has_more`` and ``next_page``, a cursor to pass
back as ``page`` for the next buckets. Each page is its own query over its own time range, so a
page costs what its buckets hold, and ``totals`` sum that page. Without ``limit`` the whole
window comes in one answer (at most ``MAX_BUCKETS`` buckets), as before paging existed.

Operator staff may ask for every org at once (``org_id=all``): summed, or per org with
``group_by=org_id``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError

from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import ensure_utc
from neocloud.kernel.errors import InvalidRequest, PermissionDenied
from neocloud.studio.tables import StudioUsageRow
from neocloud.tenancy.access import org_row, require_read
from neocloud.web.fields import UtcTime

MAX_BUCKETS = 1000
MAX_FILTER_VALUES = 100
ALL_ORGS = "all"
_PAGE = re.compile(r"^bucket_(\d{1,4})$")


class BucketWidth(StrEnum):
    MINUTE = "1m"
    HOUR = "1h"
    DAY = "1d"

    @property
    def seconds(self) -> int:
        return {"1m": 60, "1h": 3600, "1d": 86400}[self.value]

    @property
    def page_limit(self) -> int:
        """The most buckets one page holds (OpenAI's bounds for each width)."""
        return {"1m": 1440, "1h": 168, "1d": 31}[self.value]


class GroupBy(StrEnum):
    MODEL = "model"
    API_KEY_ID = "api_key_id"
    ENDPOINT = "endpoint"
    ORG_ID = "org_id"


_GROUP_COLUMNS = {
    GroupBy.MODEL: StudioUsageRow.model,
    GroupBy.API_KEY_ID: StudioUsageRow.key_id,
    GroupBy.ENDPOINT: StudioUsageRow.endpoint,
    GroupBy.ORG_ID: StudioUsageRow.org_id,
}


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A validated usage question; ``org_id`` ``None`` means the caller's own org."""

    start: datetime
    end: datetime
    width: BucketWidth = BucketWidth.DAY
    group_by: tuple[GroupBy, ...] = ()
    models: tuple[str, ...] = ()
    api_key_ids: tuple[str, ...] = ()
    org_id: str | None = None  # ``ALL_ORGS``: every org (operator staff)
    limit: int | None = None  # buckets per page; None: the whole window
    first_bucket: int = 0  # where this page starts (from ``page``)

    @property
    def bucket_count(self) -> int:
        return math.ceil((self.end - self.start).total_seconds() / self.width.seconds)

    @property
    def page_end(self) -> int:
        """The bucket after this page's last."""
        if self.limit is None:
            return self.bucket_count
        return min(self.bucket_count, self.first_bucket + self.limit)

    @property
    def next_page(self) -> str | None:
        return f"bucket_{self.page_end}" if self.page_end < self.bucket_count else None


@dataclass(frozen=True, slots=True)
class UsageResult:
    """Sums over one group of one bucket; a group field is ``None`` when not grouped by."""

    input_tokens: int = 0
    output_tokens: int = 0
    num_model_requests: int = 0
    aborted_requests: int = 0
    model: str | None = None
    api_key_id: str | None = None
    endpoint: str | None = None
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class UsageBucket:
    start: datetime
    end: datetime
    results: list[UsageResult] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UsageReport:
    org_id: str
    query: UsageQuery
    buckets: list[UsageBucket]
    totals: UsageResult


# -- reading the question ------------------------------------------------------------------

_TIME = TypeAdapter(UtcTime)  # bounded: an offset past year 1 or 9999 is a 400, not a 500


def _time(value: str, param: str) -> datetime:
    """RFC 3339 (a time without an offset is UTC) or unix seconds, in whole seconds."""
    try:
        when = ensure_utc(_TIME.validate_python(value.strip()))
    except ValidationError:
        raise InvalidRequest(
            f"{param} must be an RFC 3339 time or unix seconds, not {value!r}",
            code="invalid_value",
            param=param,
        ) from None
    if when.microsecond:
        raise InvalidRequest(f"{param} must be a whole second", code="invalid_value", param=param)
    return when


def _values(raw: Iterable[str] | None) -> list[str]:
    """Repeated and comma-separated query values, blanks dropped, first occurrence kept."""
    out: list[str] = []
    for item in raw or ():
        for part in item.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _bounded(values: list[str], param: str) -> tuple[str, ...]:
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidRequest(
            f"{param} takes at most {MAX_FILTER_VALUES} values",
            code="invalid_value",
            param=param,
        )
    return tuple(values)


def _window(
    start_time: str | None, end_time: str | None, now: datetime
) -> tuple[datetime, datetime]:
    if start_time is None or not start_time.strip():
        raise InvalidRequest("start_time is required", code="missing_field", param="start_time")
    start = _time(start_time, "start_time")
    if end_time is None:
        end = ensure_utc(now).replace(microsecond=0)
        if now.microsecond:
            end += timedelta(seconds=1)
    else:
        end = _time(end_time, "end_time")
    if end <= start:
        raise InvalidRequest(
            "end_time must be after start_time", code="invalid_value", param="end_time"
        )
    return start, end


def _groups(group_by: Sequence[str] | None) -> tuple[GroupBy, ...]:
    groups: list[GroupBy] = []
    for name in _values(group_by):
        try:
            groups.append(GroupBy(name))
        except ValueError:
            raise InvalidRequest(
                f"group_by takes model, api_key_id, endpoint and org_id, not {name!r}",
                code="invalid_value",
                param="group_by",
            ) from None
    return tuple(groups)


def parse_usage_query(
    *,
    now: datetime,
    start_time: str | None,
    end_time: str | None = None,
    bucket_width: str | None = None,
    group_by: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    api_key_ids: Sequence[str] | None = None,
    org_id: str | None = None,
    limit: int | None = None,
    page: str | None = None,
) -> UsageQuery:
    """Check a usage question as it came in (strings); each refusal is a 400 naming its param.

    ``end_time`` defaults to ``now`` rounded up to the next whole second."""
    start, end = _window(start_time, end_time, now)
    try:
        width = BucketWidth(bucket_width or BucketWidth.DAY)
    except ValueError:
        raise InvalidRequest(
            f"bucket_width must be one of 1m, 1h, 1d, not {bucket_width!r}",
            code="invalid_value",
            param="bucket_width",
        ) from None
    query = UsageQuery(
        start=start,
        end=end,
        width=width,
        group_by=_groups(group_by),
        models=_bounded(_values(models), "models"),
        api_key_ids=_bounded(_values(api_key_ids), "api_key_ids"),
        org_id=org_id,
        limit=limit,
    )
    if query.bucket_count > MAX_BUCKETS:
        raise InvalidRequest(
            f"the window holds {query.bucket_count} buckets of {width.value}; at most "
            f"{MAX_BUCKETS} are answered: shorten it or use a wider bucket_width",
            code="too_many_buckets",
            param="bucket_width",
            details={"buckets": query.bucket_count, "max_buckets": MAX_BUCKETS},
        )
    if limit is not None and not 1 <= limit <= width.page_limit:
        raise InvalidRequest(
            f"limit: 1 to {width.page_limit} buckets of {width.value} per page",
            code="invalid_value",
            param="limit",
        )
    if page is not None:
        found = _PAGE.match(page)
        if found is None or int(found.group(1)) >= query.bucket_count:
            raise InvalidRequest(
                f"page: {page!r} is not a page of this window (pass next_page as it came)",
                code="invalid_value",
                param="page",
            )
        query = replace(query, first_bucket=int(found.group(1)), limit=limit or width.page_limit)
    return query


# -- answering it --------------------------------------------------------------------------


def _epoch_seconds(dialect: str) -> sa.ColumnElement[int]:
    """``created_at`` as whole unix seconds (rounded down) on either backend."""
    if dialect == "sqlite":
        # SQLite keeps UTC as naive text, 'YYYY-MM-DD HH:MM:SS.ffffff'. The fraction is cut off
        # before strftime reads it: SQLite rounds it to milliseconds, which would move
        # 10:59:59.9999 into the next second (and the next bucket).
        seconds = sa.func.substr(StudioUsageRow.created_at, 1, 19)
        return sa.cast(sa.func.strftime("%s", seconds), sa.BigInteger)
    return sa.cast(sa.func.floor(sa.extract("epoch", StudioUsageRow.created_at)), sa.BigInteger)


def usage_report(*, db: Database, actor: Principal, query: UsageQuery) -> UsageReport:
    """Token usage of ``query.org_id`` (default: the actor's org) per bucket and group.

    Operator staff may read any org, or all at once (``ALL_ORGS``); anyone else only their own
    (another org's id answers 404 ``org_not_found``, as for every read of another org).
    Only the buckets of the query's page are read."""
    org_id = query.org_id or actor.org_id
    every = org_id == ALL_ORGS
    if every and not actor.is_operator:
        raise PermissionDenied(
            "only operator staff may read every org's usage", code="operator_only", param="org_id"
        )
    if not every:
        require_read(actor, org_id)
    width = query.width.seconds
    start_s = int(query.start.timestamp())
    page_start = query.start + timedelta(seconds=width * query.first_bucket)
    page_end = min(query.end, query.start + timedelta(seconds=width * query.page_end))
    with db.transaction() as s:
        if not every:
            org_row(s, org_id)
        bucket = ((_epoch_seconds(db.dialect) - start_s) // width).label("bucket")
        groups = [_GROUP_COLUMNS[g].label(g.value) for g in query.group_by]
        stmt = (
            sa.select(
                bucket,
                *groups,
                sa.func.sum(StudioUsageRow.prompt_tokens).label("input_tokens"),
                sa.func.sum(StudioUsageRow.completion_tokens).label("output_tokens"),
                sa.func.count().label("requests"),
                sa.func.sum(sa.case((StudioUsageRow.aborted, 1), else_=0)).label("aborted"),
            )
            .where(
                StudioUsageRow.created_at >= page_start,
                StudioUsageRow.created_at < page_end,
            )
            .group_by(bucket, *groups)
        )
        if not every:
            stmt = stmt.where(StudioUsageRow.org_id == org_id)
        if query.models:
            stmt = stmt.where(StudioUsageRow.model.in_(query.models))
        if query.api_key_ids:
            stmt = stmt.where(StudioUsageRow.key_id.in_(query.api_key_ids))
        rows = s.execute(stmt).all()
    return _report(org_id, query, rows)


def _report(org_id: str, query: UsageQuery, rows: Sequence[Any]) -> UsageReport:
    names = [g.value for g in query.group_by]
    per_bucket: dict[int, list[tuple[tuple[str, ...], UsageResult]]] = defaultdict(list)
    totals = [0, 0, 0, 0]
    for row in rows:
        bucket, *labels = row[: 1 + len(names)]
        tokens_in, tokens_out, requests, aborted = (int(v or 0) for v in row[1 + len(names) :])
        for i, v in enumerate((tokens_in, tokens_out, requests, aborted)):
            totals[i] += v
        result = UsageResult(
            tokens_in, tokens_out, requests, aborted, **dict(zip(names, labels, strict=True))
        )
        per_bucket[int(bucket)].append((tuple(labels), result))
    width = timedelta(seconds=query.width.seconds)
    buckets = []
    for i in range(query.first_bucket, query.page_end):
        start = query.start + i * width
        # Sorted here, not by the database: PostgreSQL's collation may order text differently.
        results = [r for _, r in sorted(per_bucket.get(i, []), key=lambda pair: pair[0])]
        buckets.append(UsageBucket(start, min(start + width, query.end), results))
    total = UsageResult(totals[0], totals[1], totals[2], totals[3])
    return UsageReport(org_id, query, buckets, total)
