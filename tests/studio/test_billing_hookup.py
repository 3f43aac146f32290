"""Metered studio usage lands on the tenant's invoice: billing ``tokens`` events, in batches,
idempotent on the request id when a flush is retried."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.billing.tables import UsageEventRow
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.studio.metering import BillingUsageSink, UsageBuffer, UsageRecord
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.tables import StudioUsageRow

APRIL = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
# A dollar per input token and two per output token, so a handful of tokens is visible in cents.
PRICES = {"neocloud/echo": {"input_per_1m": "1000000", "output_per_1m": "2000000"}}


@pytest.fixture
def http(app: FastAPI, admin_key: str, clock: VirtualClock) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {admin_key}"
        book = {"effective_from": "2026-04-01T00:00:00Z", "token_prices": PRICES}
        assert http.post("/api/v1/price-books", json=book).status_code == 201
        clock.set(APRIL)
        yield http


def _preview(http: TestClient) -> dict[str, Any]:
    org = http.get("/api/v1/orgs").json()["data"][0]["id"]
    answer = http.get("/api/v1/invoices/preview", params={"org_id": org, "period": "2026-04"})
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def _runtime(app: FastAPI) -> StudioRuntime:
    runtime: StudioRuntime = app.state.studio
    return runtime


def test_a_chat_shows_up_on_the_invoice_preview_after_a_flush(
    app: FastAPI, admin_key: str, http: TestClient, db: Database
) -> None:
    oai = openai.OpenAI(
        base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
    )
    out = oai.chat.completions.create(
        model="neocloud/echo", messages=[{"role": "user", "content": "a b"}], max_tokens=3
    )
    assert out.usage is not None
    prompt, completion = out.usage.prompt_tokens, out.usage.completion_tokens
    assert (prompt, completion) == (4, 3)
    # Nothing was written on the request path: the invoice knows nothing yet.
    assert _preview(http)["token_lines"] == []
    assert _runtime(app).usage.flush() == 1
    preview = _preview(http)
    lines = [(t["model"], t["batch"], t["amount"]["amount"]) for t in preview["token_lines"]]
    assert lines == [("neocloud/echo", False, f"{prompt * 1 + completion * 2}.00")]
    assert preview["total"]["amount"] == "10.00"
    with db.transaction() as s:
        event = s.scalars(sa.select(UsageEventRow)).one()
        log = s.scalars(sa.select(StudioUsageRow)).one()
    assert (event.source, event.event_id, event.type) == ("studio", out.id, "tokens")
    assert event.data["input_tokens"] == prompt
    assert event.data["output_tokens"] == completion
    assert (log.request_id, log.prompt_tokens, log.completion_tokens) == (out.id, 4, 3)


def _record(n: int, org: str, at: datetime) -> UsageRecord:
    return UsageRecord(
        request_id=f"chatcmpl-{n}",
        org_id=org,
        key_id="key_x",
        model="neocloud/echo",
        endpoint="chat.completions",
        prompt_tokens=n,
        completion_tokens=1,
        aborted=False,
        created_at=at,
    )


class _LogFailsOnce(BillingUsageSink):
    """Billing's write succeeds, then the studio's log write fails: a flush failed half-way."""

    def __init__(self, db: Database, clock: VirtualClock) -> None:
        super().__init__(db, clock)
        self.failed = False
        inner = self.request_log.write

        def write(records: list[UsageRecord]) -> None:
            if not self.failed:
                self.failed = True
                raise ConnectionError("database went away after billing's commit")
            inner(records)

        self.request_log.write = write  # type: ignore[method-assign]


def _orgs(db: Database, clock: VirtualClock, *slugs: str) -> list[str]:
    from neocloud.tenancy.tables import OrgRow

    ids = []
    with db.transaction() as s:
        for slug in slugs:
            s.add(
                OrgRow(
                    id=f"org_{slug}",
                    name=slug,
                    slug=slug,
                    is_operator=False,
                    created_at=clock.now(),
                    updated_at=clock.now(),
                )
            )
            ids.append(f"org_{slug}")
    return ids


def test_a_flush_retried_after_a_partial_failure_counts_nothing_twice(
    db: Database, clock: VirtualClock
) -> None:
    acme, globex = _orgs(db, clock, "acme", "globex")
    sink = _LogFailsOnce(db, clock)
    buffer = UsageBuffer(sink, batch_size=3)
    for n in range(1, 6):
        buffer.record(_record(n, acme if n % 2 else globex, clock.now()))
    assert buffer.flush() == 0  # billing committed, the log did not: the batch is kept
    assert buffer.pending == 5
    assert buffer.flush() == 5
    assert buffer.flush() == 0
    with db.transaction() as s:
        events = s.execute(
            sa.select(UsageEventRow.org_id, UsageEventRow.event_id).order_by(UsageEventRow.event_id)
        ).all()
        logged = s.scalar(sa.select(sa.func.count()).select_from(StudioUsageRow))
    assert [tuple(e) for e in events] == [
        (acme, "chatcmpl-1"),
        (globex, "chatcmpl-2"),
        (acme, "chatcmpl-3"),
        (globex, "chatcmpl-4"),
        (acme, "chatcmpl-5"),
    ]
    assert logged == 5
    # The same records written again (a flusher that crashed before popping them) change nothing.
    sink.write([_record(n, acme if n % 2 else globex, clock.now()) for n in range(1, 6)])
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(UsageEventRow)) == 5
        assert s.scalar(sa.select(sa.func.count()).select_from(StudioUsageRow)) == 5


def test_an_event_billing_refuses_for_good_does_not_block_the_rest(
    db: Database, clock: VirtualClock
) -> None:
    (acme,) = _orgs(db, clock, "acme")
    buffer = UsageBuffer(BillingUsageSink(db, clock))
    buffer.record(_record(1, acme, clock.now() - timedelta(days=60)))  # too late for billing
    buffer.record(_record(2, acme, clock.now()))
    assert buffer.flush() == 2
    assert buffer.pending == 0
    with db.transaction() as s:
        billed = s.scalars(sa.select(UsageEventRow.event_id)).all()
        logged = s.scalars(sa.select(StudioUsageRow.request_id)).all()
    assert billed == ["chatcmpl-2"]
    assert logged == ["chatcmpl-2"]
