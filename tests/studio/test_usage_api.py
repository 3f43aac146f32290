"""``GET /api/v1/studio/usage``: an org's tokens per time bucket and group, summed by the
database from ``studio_usage``; checked against the same sums recomputed here from the rows."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock, rfc3339
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.tables import StudioUsageRow

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
MODELS = ("neocloud/echo", "acme/llama", "acme/qwen")
KEYS = ("key_a", "key_b", "key_c")
ENDPOINTS = ("chat.completions", "completions", "embeddings")
WIDTHS = {"1m": 60, "1h": 3600, "1d": 86400}


def _org(http: TestClient) -> str:
    return str(http.get("/api/v1/orgs").json()["data"][0]["id"])


_ids = itertools.count()


def _insert(db: Database, rows: list[dict[str, Any]]) -> None:
    with db.transaction() as s:
        for r in rows:
            n = next(_ids)
            s.add(StudioUsageRow(id=f"su_{n}", request_id=f"req-{n}", **r))


def _row(org: str, at: datetime, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "org_id": org,
        "key_id": "key_a",
        "model": "neocloud/echo",
        "endpoint": "chat.completions",
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "aborted": False,
        "created_at": at,
    }
    return base | kw


def _usage(http: TestClient, **params: Any) -> dict[str, Any]:
    answer = http.get("/api/v1/studio/usage", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


_rows = st.lists(
    st.fixed_dictionaries(
        {
            # Anywhere, or a second either side of a whole hour (where buckets start).
            "offset_s": st.one_of(
                st.integers(-3600, 3 * 86400 + 3600),
                st.builds(
                    lambda h, d: h * 3600 + d, st.integers(-1, 74), st.sampled_from([-1, 0, 1])
                ),
            ),
            "model": st.sampled_from(MODELS),
            "key_id": st.sampled_from(KEYS),
            "endpoint": st.sampled_from(ENDPOINTS),
            "prompt_tokens": st.integers(0, 5000),
            "completion_tokens": st.integers(0, 5000),
            "aborted": st.booleans(),
            "micros": st.sampled_from([0, 0, 1, 999_999]),
        }
    ),
    max_size=40,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=_rows,
    width=st.sampled_from(["1m", "1h", "1d"]),
    start_offset_s=st.sampled_from([0, 1, 1800, 86400 - 1]),
    span_s=st.integers(1, 2 * 86400),
    group_by=st.lists(st.sampled_from(["model", "api_key_id", "endpoint"]), unique=True),
    only_models=st.sampled_from([None, ["acme/llama"], ["neocloud/echo", "acme/qwen"]]),
)
def test_sums_per_bucket_and_group_match_the_rows(
    http: TestClient,
    db: Database,
    rows: list[dict[str, Any]],
    width: str,
    start_offset_s: int,
    span_s: int,
    group_by: list[str],
    only_models: list[str] | None,
) -> None:
    with db.transaction() as s:
        s.execute(sa.delete(StudioUsageRow))
    org = _org(http)
    data = [
        _row(
            org,
            T0 + timedelta(seconds=r["offset_s"], microseconds=r["micros"]),
            **{k: v for k, v in r.items() if k not in ("offset_s", "micros")},
        )
        for r in rows
    ]
    # Another org's requests in the same window never count.
    data.append(_row("org_other", T0 + timedelta(hours=1), prompt_tokens=10**6))
    _insert(db, data)
    start = T0 + timedelta(seconds=start_offset_s)
    if width == "1m":  # at most 1,000 buckets
        span_s = span_s % (1000 * 60) + 1
    end = start + timedelta(seconds=span_s)
    params: dict[str, Any] = {
        "start_time": rfc3339(start),
        "end_time": str(int(end.timestamp())),  # unix seconds are accepted too
        "bucket_width": width,
        "group_by": ",".join(group_by),
    }
    if only_models:
        params["models"] = only_models
    body = _usage(http, **params)

    w = timedelta(seconds=WIDTHS[width])
    expected: dict[int, dict[tuple[str, ...], list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0, 0, 0])
    )
    field = {"model": "model", "api_key_id": "key_id", "endpoint": "endpoint"}
    for r in data:
        at = r["created_at"]
        if r["org_id"] != org or not start <= at < end:
            continue
        if only_models and r["model"] not in only_models:
            continue
        sums = expected[(at - start) // w][tuple(r[field[g]] for g in group_by)]
        sums[0] += r["prompt_tokens"]
        sums[1] += r["completion_tokens"]
        sums[2] += 1
        sums[3] += int(r["aborted"])

    n_buckets = -(-(end - start) // w)
    assert len(body["buckets"]) == n_buckets
    got: dict[int, dict[tuple[str, ...], list[int]]] = {}
    for i, bucket in enumerate(body["buckets"]):
        assert bucket["start_time"] == rfc3339(start + i * w)
        assert bucket["end_time"] == rfc3339(min(start + (i + 1) * w, end))
        for res in bucket["results"]:
            # Only the grouped fields are present.
            assert set(res) & {"model", "api_key_id", "endpoint"} == set(group_by)
            key = tuple(res[g] for g in group_by)
            got.setdefault(i, {})[key] = [
                res["input_tokens"],
                res["output_tokens"],
                res["num_model_requests"],
                res["aborted_requests"],
            ]
    assert got == {i: dict(groups) for i, groups in expected.items()}
    totals = [sum(v[j] for g in expected.values() for v in g.values()) for j in range(4)]
    t = body["totals"]
    assert [
        t["input_tokens"],
        t["output_tokens"],
        t["num_model_requests"],
        t["aborted_requests"],
    ] == totals


def test_bucket_edges_start_is_in_end_is_out(http: TestClient, db: Database) -> None:
    org = _org(http)
    start, hour = T0 + timedelta(hours=10), timedelta(hours=1)
    _insert(
        db,
        [
            _row(org, start - timedelta(microseconds=1), prompt_tokens=1000),  # before: out
            _row(org, start, prompt_tokens=1),  # exactly the first bucket's start: bucket 0
            _row(org, start + hour - timedelta(microseconds=1), prompt_tokens=2),  # still 0
            _row(org, start + hour, prompt_tokens=4),  # exactly bucket 1's start: bucket 1
            _row(org, start + 2 * hour + timedelta(minutes=29), prompt_tokens=8),  # last, cut
            _row(org, start + 2 * hour + timedelta(minutes=30), prompt_tokens=2000),  # end: out
        ],
    )
    body = _usage(
        http,
        start_time=rfc3339(start),
        end_time=rfc3339(start + 2 * hour + timedelta(minutes=30)),
        bucket_width="1h",
    )
    inputs = [[r["input_tokens"] for r in b["results"]] for b in body["buckets"]]
    assert inputs == [[3], [4], [8]]
    assert body["buckets"][2]["end_time"] == "2026-03-01T12:30:00Z"  # the last bucket is cut
    assert body["totals"]["num_model_requests"] == 4
    assert (body["org_id"], body["bucket_width"], body["group_by"]) == (org, "1h", [])


def test_empty_buckets_are_listed_and_end_time_defaults_to_now(
    http: TestClient, db: Database, clock: VirtualClock
) -> None:
    org = _org(http)
    clock.set(T0 + timedelta(days=2, hours=5, microseconds=300))
    _insert(db, [_row(org, T0 + timedelta(days=2, hours=5))])
    body = _usage(http, start_time=rfc3339(T0))  # 1d buckets by default
    assert [b["start_time"] for b in body["buckets"]] == [
        "2026-03-01T00:00:00Z",
        "2026-03-02T00:00:00Z",
        "2026-03-03T00:00:00Z",
    ]
    assert body["end_time"] == "2026-03-03T05:00:01Z"  # now, rounded up to a whole second
    assert [len(b["results"]) for b in body["buckets"]] == [0, 0, 1]


def test_filters_by_key_and_repeated_group_by(http: TestClient, db: Database) -> None:
    org = _org(http)
    at = T0 + timedelta(minutes=5)
    _insert(
        db,
        [
            _row(org, at, key_id="key_a", model="m1", prompt_tokens=1),
            _row(org, at, key_id="key_b", model="m1", prompt_tokens=2),
            _row(org, at, key_id="key_b", model="m2", prompt_tokens=4, aborted=True),
            _row(org, at, key_id="key_c", model="m2", prompt_tokens=8),
        ],
    )
    body = _usage(
        http,
        start_time=rfc3339(T0),
        end_time=rfc3339(T0 + timedelta(hours=1)),
        group_by=["api_key_id", "model"],
        api_key_ids="key_b,key_c",
    )
    results = body["buckets"][0]["results"]
    assert [(r["api_key_id"], r["model"], r["input_tokens"]) for r in results] == [
        ("key_b", "m1", 2),
        ("key_b", "m2", 4),
        ("key_c", "m2", 8),
    ]
    assert [r["aborted_requests"] for r in results] == [0, 1, 0]
    assert "endpoint" not in results[0]


def test_a_chat_counts_after_the_metering_flush(
    app: FastAPI, http: TestClient, admin_key: str, clock: VirtualClock
) -> None:
    oai = openai.OpenAI(
        base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
    )
    out = oai.chat.completions.create(
        model="neocloud/echo", messages=[{"role": "user", "content": "a b"}], max_tokens=3
    )
    assert out.usage is not None
    key_id = http.get("/api/v1/keys").json()["data"][0]["id"]
    params = {"start_time": "2026-03-01T00:00:00Z", "group_by": "model,api_key_id,endpoint"}
    runtime: StudioRuntime = app.state.studio
    # Whatever the background flusher (every 1 s) has not written yet; on a slow machine it may
    # have written the record first, so the count before this flush is not asserted.
    runtime.usage.flush()
    clock.advance(1)
    body = _usage(http, **params)
    [result] = body["buckets"][0]["results"]
    assert result == {
        "object": "studio.usage.result",
        "input_tokens": out.usage.prompt_tokens,
        "output_tokens": out.usage.completion_tokens,
        "num_model_requests": 1,
        "aborted_requests": 0,
        "model": "neocloud/echo",
        "api_key_id": key_id,
        "endpoint": "chat.completions",
    }


def test_an_org_reads_its_own_usage_only(http: TestClient, db: Database, admin_key: str) -> None:
    admin = Client(api_key=admin_key, http=http, retries=0)
    operator_org = _org(http)
    tenant = admin.orgs.create("Acme", slug="acme", owner_email="owner@acme.example")
    owner = admin.users.list(tenant["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=tenant["id"], user_id=owner["id"])
    _insert(
        db,
        [
            _row(tenant["id"], T0, prompt_tokens=7),
            _row(operator_org, T0, prompt_tokens=100),
        ],
    )
    window = {"start_time": rfc3339(T0), "end_time": rfc3339(T0 + timedelta(days=1))}
    with TestClient(http.app, raise_server_exceptions=False) as tenant_http:
        tenant_http.headers["Authorization"] = f"Bearer {key['secret']}"
        own = _usage(tenant_http, **window)  # no org_id: the caller's own org
        assert (own["org_id"], own["totals"]["input_tokens"]) == (tenant["id"], 7)
        assert _usage(tenant_http, **window, org_id=tenant["id"])["totals"]["input_tokens"] == 7
        other = tenant_http.get("/api/v1/studio/usage", params={**window, "org_id": operator_org})
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "org_not_found"
    # Operator staff read any org, and an unknown one is not found.
    assert _usage(http, **window, org_id=tenant["id"])["totals"]["input_tokens"] == 7
    assert _usage(http, **window)["totals"]["input_tokens"] == 100
    missing = http.get("/api/v1/studio/usage", params={**window, "org_id": "org_nope"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "org_not_found")


MAR1, MAR2 = "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({}, "start_time", "missing_field"),
        ({"start_time": "yesterday"}, "start_time", "invalid_value"),
        ({"start_time": "2026-03-01T00:00:00.5Z"}, "start_time", "invalid_value"),
        ({"start_time": MAR2, "end_time": "nope"}, "end_time", "invalid_value"),
        ({"start_time": MAR2, "end_time": MAR2}, "end_time", "invalid_value"),
        ({"start_time": MAR2, "end_time": MAR1}, "end_time", "invalid_value"),
        ({"start_time": MAR1, "bucket_width": "2h"}, "bucket_width", "invalid_value"),
        ({"start_time": MAR1, "group_by": "model,user_id"}, "group_by", "invalid_value"),
        # 16 h 41 min of minutes: 1,001 buckets.
        (
            {"start_time": MAR1, "end_time": "2026-03-01T16:41:00Z", "bucket_width": "1m"},
            "bucket_width",
            "too_many_buckets",
        ),
        (
            {"start_time": MAR1, "models": ",".join(f"m{i}" for i in range(101))},
            "models",
            "invalid_value",
        ),
    ],
)
def test_bad_params_answer_400_naming_the_param(
    http: TestClient, params: dict[str, str], param: str, code: str
) -> None:
    answer = http.get("/api/v1/studio/usage", params=params)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert set(answer.json()) == {"error"}


def test_a_thousand_buckets_are_answered(http: TestClient) -> None:
    # 16 h 40 min of 1-minute buckets is exactly the limit; one more minute is refused above.
    body = _usage(
        http,
        start_time=MAR1,
        end_time="2026-03-01T16:40:00Z",
        bucket_width="1m",
    )
    assert len(body["buckets"]) == 1000
