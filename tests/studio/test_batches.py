"""``/v1/batches`` through the official ``openai`` client: the whole lifecycle, the batch price,
cancels in every state, expiry, a worker killed mid-batch, yielding to online traffic, and the
errors (wrong purpose, another org's file, lines for another endpoint) in OpenAI's shapes.

The 1,000-request batch runs on the suite's deterministic engine (``neocloud/echo``, what the
studio tests serve instead of the built-in torch models); ``test_builtin_model_batch`` runs a
small batch on the real built-in tiny Llama when torch is installed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.billing.tables import UsageEventRow
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.batches.domain import request_id
from neocloud.studio.batches.worker import BatchWorker
from neocloud.studio.engines.fake import fake_catalog
from neocloud.studio.runtime import StudioRuntime

from .test_files import batch_line, client, jsonl, org_key

APRIL = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
# A dollar per input token and two per output token: the batch half is visible in cents.
PRICES = {"neocloud/echo": {"input_per_1m": "1000000", "output_per_1m": "2000000"}}


@pytest.fixture
def app(settings: Settings, db: Database, clock: VirtualClock) -> FastAPI:
    # The tests drive the worker themselves (``run_once``), one step at a time.
    settings = settings.model_copy(update={"studio_batch_worker": False})
    app = create_app(settings=settings, db=db, clock=clock)
    app.state.studio.catalog = fake_catalog()
    return app


@pytest.fixture
def web(app: FastAPI, admin_key: str, clock: VirtualClock) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as http:
        auth = {"Authorization": f"Bearer {admin_key}"}
        book = {"effective_from": "2026-04-01T00:00:00Z", "token_prices": PRICES}
        assert http.post("/api/v1/price-books", json=book, headers=auth).status_code == 201
        clock.set(APRIL)
        yield http


@pytest.fixture
def oai(web: TestClient, admin_key: str) -> openai.OpenAI:
    return client(web, admin_key)


def _worker(app: FastAPI) -> BatchWorker:
    runtime: StudioRuntime = app.state.studio
    return runtime.batches


def _drain(app: FastAPI) -> None:
    worker = _worker(app)
    for _ in range(50):
        if not worker.run_once():
            return
    raise AssertionError("the worker never ran out of work")


def _upload(oai: openai.OpenAI, *lines: object) -> str:
    return oai.files.create(file=("in.jsonl", jsonl(*lines)), purpose="batch").id


def _lines(oai: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(x) for x in oai.files.content(file_id).text.splitlines()]


def _events(db: Database) -> list[UsageEventRow]:
    with db.transaction() as s:
        return list(s.scalars(sa.select(UsageEventRow).order_by(UsageEventRow.event_id)))


def test_a_thousand_requests_complete_one_line_each_at_the_batch_price(
    oai: openai.OpenAI, app: FastAPI, web: TestClient, admin_key: str, db: Database
) -> None:
    file_id = _upload(oai, *(batch_line(n) for n in range(1000)))
    batch = oai.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"project": "eval"},
    )
    assert batch.status == "validating"
    assert batch.metadata == {"project": "eval"}
    assert batch.expires_at == batch.created_at + 24 * 3600
    # Batch requests are not online traffic: an exhausted online bucket does not stop them.
    runtime: StudioRuntime = app.state.studio
    runtime.policy.admit = _refuse  # type: ignore[method-assign]
    _drain(app)
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (1000, 1000, 0)
    assert done.error_file_id is None
    assert done.in_progress_at is not None
    assert done.finalizing_at is not None
    assert done.completed_at is not None
    out = _lines(oai, done.output_file_id)
    assert [line["custom_id"] for line in out] == [f"req-{n}" for n in range(1000)]
    first = out[0]
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["id"] == first["response"]["request_id"] == request_id(batch.id, "req-0")
    body = first["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].startswith("hi 0")
    assert oai.files.retrieve(done.output_file_id or "").purpose == "batch_output"
    # Billed once per request, as batch usage, rated at half the online price.
    events = _events(db)
    assert len(events) == 1000
    assert all(e.data["batch"] is True for e in events)
    tokens_in = sum(e.data["input_tokens"] for e in events)
    tokens_out = sum(e.data["output_tokens"] for e in events)
    org = web.get("/api/v1/orgs", headers={"Authorization": f"Bearer {admin_key}"}).json()
    preview = web.get(
        "/api/v1/invoices/preview",
        params={"org_id": org["data"][0]["id"], "period": "2026-04"},
        headers={"Authorization": f"Bearer {admin_key}"},
    ).json()
    lines = [(t["model"], t["batch"], t["amount"]["amount"]) for t in preview["token_lines"]]
    full = Decimal(tokens_in * 1 + tokens_out * 2)
    assert lines == [("neocloud/echo", True, f"{full / 2:.2f}")]


def _refuse(*_: object, **__: object) -> None:
    raise AssertionError("a batch request went through online admission")


def test_list_pages_with_a_cursor(oai: openai.OpenAI, clock: VirtualClock) -> None:
    file_id = _upload(oai, batch_line(1))
    made = []
    for _ in range(3):
        clock.advance(timedelta(seconds=1))
        made.append(
            oai.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
        )
    page = oai.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2]
    assert page.has_more
    rest = oai.batches.list(limit=2, after=page.data[-1].id)
    assert [b.id for b in rest.data] == [made[0]]
    assert [b.id for b in oai.batches.list()] == made[::-1]


def test_cancel_in_every_state(oai: openai.OpenAI, app: FastAPI, db: Database) -> None:
    worker = _worker(app)

    def create(n: int = 40) -> str:
        file_id = _upload(oai, *(batch_line(i) for i in range(n)))
        return oai.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id

    # validating: cancelled at once, nothing ran
    first = create()
    cancelled = oai.batches.cancel(first)
    assert cancelled.status == "cancelled"
    assert cancelled.cancelling_at is not None
    assert cancelled.cancelled_at is not None
    assert not worker.run_once()  # nothing to do: it is done
    # in_progress: the worker stops after the chunk in hand; what ran is in the output, the
    # rest in the error file as batch_cancelled; billed only what ran
    second = create()
    worker.hook = _cancel_after_first_chunk(oai, second)
    _drain(app)
    worker.hook = None
    ended = oai.batches.retrieve(second)
    assert ended.status == "cancelled"
    assert ended.request_counts is not None
    ran = ended.request_counts.completed
    assert ran == worker.options.chunk
    assert ended.request_counts.failed == 40 - ran
    errors = _lines(oai, ended.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert all(e["response"] is None for e in errors)
    assert len(_lines(oai, ended.output_file_id)) == ran
    assert len(_events(db)) == ran
    # finalizing: a cancel there still ends it cancelled, with every result kept
    third = create(3)
    worker.hook = _cancel_when_finalizing(oai, third)
    _drain(app)
    worker.hook = None
    assert oai.batches.retrieve(third).status == "cancelled"
    assert len(_lines(oai, oai.batches.retrieve(third).output_file_id)) == 3
    # a batch done already is a 409 naming the batch
    for done in (first, second, third):
        with pytest.raises(openai.ConflictError) as caught:
            oai.batches.cancel(done)
        assert caught.value.code == "batch_not_cancellable"
    fourth = create(1)
    _drain(app)
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(fourth)  # completed


def _cancel_after_first_chunk(oai: openai.OpenAI, batch_id: str) -> Any:
    def hook(stage: str, _next: int) -> None:
        if stage == "recorded" and oai.batches.retrieve(batch_id).status == "in_progress":
            assert oai.batches.cancel(batch_id).status == "cancelling"
            assert oai.batches.cancel(batch_id).status == "cancelling"  # twice is fine

    return hook


def _cancel_when_finalizing(oai: openai.OpenAI, batch_id: str) -> Any:
    def hook(stage: str, _next: int) -> None:
        if stage == "finalizing":
            assert oai.batches.cancel(batch_id).status == "cancelling"

    return hook


def test_expiry_after_the_window(oai: openai.OpenAI, app: FastAPI, clock: VirtualClock) -> None:
    worker = _worker(app)
    file_id = _upload(oai, *(batch_line(i) for i in range(40)))
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    def late(stage: str, _next: int) -> None:
        if stage == "recorded":
            clock.advance(timedelta(hours=25))

    worker.hook = late
    _drain(app)
    ended = oai.batches.retrieve(batch.id)
    assert ended.status == "expired"
    assert ended.expired_at is not None
    assert ended.request_counts is not None
    assert ended.request_counts.completed == worker.options.chunk
    errors = _lines(oai, ended.error_file_id)
    assert len(errors) == 40 - worker.options.chunk
    assert errors[0]["error"]["code"] == "batch_expired"


class _Killed(BaseException):
    """A worker dying on the spot (not an error it could handle)."""


@pytest.mark.parametrize("stage", ["billed", "recorded"])
def test_a_worker_killed_mid_batch_resumes_without_double_billing(
    oai: openai.OpenAI, app: FastAPI, db: Database, clock: VirtualClock, stage: str
) -> None:
    file_id = _upload(oai, *(batch_line(i) for i in range(50)))
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    worker = _worker(app)
    ran: list[str] = []
    engine = app.state.studio.catalog.text_engines["echo"]
    real_stream = engine.stream

    def counting(prompt_ids: list[int], sampling: Any) -> Any:
        ran.append("x")
        return real_stream(prompt_ids, sampling)

    engine.stream = counting

    def die(at: str, next_index: int) -> None:
        if at == stage and next_index == 32:
            raise _Killed

    worker.hook = die
    with pytest.raises(_Killed):
        worker.run_once()
    worker.hook = None
    assert oai.batches.retrieve(batch.id).status == "in_progress"
    assert not worker.run_once()  # the dead worker's lease still holds
    clock.advance(timedelta(seconds=worker.options.lease_ttl_s + 1))
    _drain(app)
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed"
    out = _lines(oai, done.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"req-{i}" for i in range(50))
    events = _events(db)
    assert len(events) == 50  # one usage event per request, whatever was redone
    # Killed after billing a chunk but before recording it: that one chunk ran again.
    redone = worker.options.chunk if stage == "billed" else 0
    assert len(ran) == 50 + redone


def test_batches_yield_to_online_traffic(oai: openai.OpenAI, app: FastAPI) -> None:
    file_id = _upload(oai, *(batch_line(i) for i in range(20)))
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    worker = _worker(app)
    busy = iter([True, True, True])
    progress: list[int] = []

    def online_busy() -> bool:
        row = oai.batches.retrieve(batch.id)
        assert row.request_counts is not None
        progress.append(row.request_counts.completed)
        return next(busy, False)

    worker.online_busy = online_busy
    worker.paused = 0
    _drain(app)
    assert worker.paused == 3
    assert progress[:4] == [0, 0, 0, 0]  # nothing ran while online traffic was busy
    assert oai.batches.retrieve(batch.id).status == "completed"


def test_the_online_rate_is_what_batches_watch(app: FastAPI, oai: openai.OpenAI) -> None:
    runtime: StudioRuntime = app.state.studio
    before = runtime.online.rate()
    for _ in range(3):
        oai.chat.completions.create(
            model="neocloud/echo", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
    assert runtime.online.rate() == before + 3


def test_errors_are_openai_shaped(web: TestClient, admin_key: str, oai: openai.OpenAI) -> None:
    tune = oai.files.create(
        file=(
            "t.jsonl",
            jsonl(
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "content": "b"},
                    ]
                }
            ),
        ),
        purpose="fine-tune",
    )
    with pytest.raises(openai.BadRequestError) as caught:
        oai.batches.create(
            input_file_id=tune.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert caught.value.code == "invalid_file_purpose"
    assert caught.value.param == "input_file_id"
    mine = _upload(oai, batch_line(1))
    other = client(web, org_key(web, admin_key, "globex"))
    with pytest.raises(openai.NotFoundError) as caught_nf:
        other.batches.create(
            input_file_id=mine, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert caught_nf.value.code == "file_not_found"
    assert caught_nf.value.param == "input_file_id"
    batch = oai.batches.create(
        input_file_id=mine, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for call in (lambda: other.batches.retrieve(batch.id), lambda: other.batches.cancel(batch.id)):
        with pytest.raises(openai.NotFoundError) as caught_b:
            call()
        assert caught_b.value.code == "batch_not_found"
    assert list(other.batches.list()) == []
    bad: list[tuple[dict[str, Any], str]] = [
        ({"endpoint": "/v1/completions"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"input_file_id": ""}, "input_file_id"),
    ]
    for change, param in bad:
        args: dict[str, Any] = {
            "input_file_id": mine,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **change,
        }
        with pytest.raises(openai.BadRequestError) as caught_p:
            oai.batches.create(**args)
        assert caught_p.value.param == param


def test_lines_for_another_endpoint_fail_the_batch_with_line_numbers(
    oai: openai.OpenAI, app: FastAPI
) -> None:
    file_id = _upload(oai, *(batch_line(i, url="/v1/embeddings") for i in range(3)))
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    _drain(app)
    failed = oai.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.failed_at is not None
    assert failed.errors is not None
    assert failed.errors.data is not None
    first = failed.errors.data[0]
    assert (first.code, first.line, first.param) == ("invalid_url", 1, "url")
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(batch.id)


def test_a_request_refused_lands_in_the_error_file(oai: openai.OpenAI, app: FastAPI) -> None:
    good = batch_line(0)
    unknown = {
        **batch_line(1),
        "body": {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    }
    bad_param = {**batch_line(2), "body": {"model": "neocloud/echo", "messages": [], "n": 1}}
    tools = {
        **batch_line(3),
        "body": {
            "model": "neocloud/echo",
            "messages": [{"role": "user", "content": "x"}],
            "n": 2,
        },
    }
    file_id = _upload(oai, good, unknown, bad_param, tools)
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    _drain(app)
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 3)
    errors = {e["custom_id"]: e["response"] for e in _lines(oai, done.error_file_id)}
    assert errors["req-1"]["status_code"] == 404
    assert errors["req-1"]["body"]["error"]["code"] == "model_not_found"
    assert errors["req-2"]["status_code"] == 400
    assert errors["req-2"]["body"]["error"]["param"] == "messages"
    assert errors["req-3"]["body"]["error"]["param"] == "n"


def test_embeddings_batch(oai: openai.OpenAI, app: FastAPI) -> None:
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "neocloud/hash-embed", "input": f"text {i}"},
        }
        for i in range(5)
    ]
    batch = oai.batches.create(
        input_file_id=_upload(oai, *lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    _drain(app)
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed"
    out = _lines(oai, done.output_file_id)
    assert len(out[0]["response"]["body"]["data"][0]["embedding"]) == 384


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_the_server_runs_batches_by_itself(
    settings: Settings, db: Database, clock: VirtualClock, admin_key: str
) -> None:
    """With ``studio_batch_worker`` on (the default) the server's own worker thread runs a
    batch to its end, its requests on the server's event loop."""
    app = create_app(settings=settings, db=db, clock=clock)
    app.state.studio.catalog = fake_catalog()
    with TestClient(app) as http:
        oai = client(http, admin_key)
        file_id = _upload(oai, *(batch_line(i) for i in range(10)))
        batch = oai.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        import time

        deadline = time.monotonic() + 30
        while oai.batches.retrieve(batch.id).status != "completed":
            assert time.monotonic() < deadline, "the server's worker did not finish the batch"
            time.sleep(0.05)
        assert len(_lines(oai, oai.batches.retrieve(batch.id).output_file_id)) == 10
