"""``GET /api/v1/studio/usage`` pages its buckets as OpenAI's usage API does (``limit``,
``page``, ``has_more``, ``next_page``), each page read on its own; operator staff read every
org at once, summed or grouped by org."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from neocloud.db.engine import Database
from neocloud.kernel.clock import rfc3339

from .test_files import org_key
from .test_usage_api import T0, _insert, _org, _row, _usage


def _pages(http: TestClient, **params: Any) -> list[dict[str, Any]]:
    pages = [_usage(http, **params)]
    while pages[-1]["has_more"]:
        pages.append(_usage(http, **params, page=pages[-1]["next_page"]))
    return pages


def test_pages_cover_the_window_once(http: TestClient, db: Database) -> None:
    org = _org(http)
    _insert(
        db, [_row(org, T0 + timedelta(hours=h, minutes=5), model=f"m{h % 3}") for h in range(50)]
    )
    window = {
        "start_time": rfc3339(T0),
        "end_time": rfc3339(T0 + timedelta(hours=50)),
        "bucket_width": "1h",
        "group_by": "model",
    }
    whole = _usage(http, **window)
    assert (whole["has_more"], whole.get("next_page")) == (False, None)  # null: left out
    pages = _pages(http, **window, limit=24)
    assert [len(p["buckets"]) for p in pages] == [24, 24, 2]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert pages[0]["next_page"] == "bucket_24"
    assert [b for p in pages for b in p["buckets"]] == whole["buckets"]
    assert [p["totals"]["num_model_requests"] for p in pages] == [24, 24, 2]


def test_bad_limits_and_pages_name_the_param(http: TestClient) -> None:
    base = {"start_time": rfc3339(T0), "end_time": rfc3339(T0 + timedelta(days=40))}
    for params, param in (
        ({"limit": 32}, "limit"),  # 1d pages hold at most 31
        ({"limit": 0}, "limit"),
        ({"page": "bucket_40"}, "page"),
        ({"page": "next"}, "page"),
    ):
        answer = http.get("/api/v1/studio/usage", params={**base, **params})
        assert answer.status_code in (400, 422), answer.text
        assert answer.json()["error"]["param"] == param


def test_operators_read_every_org_summed_or_by_org(
    http: TestClient, db: Database, admin_key: str
) -> None:
    mine = _org(http)
    other_key = org_key(http, admin_key, "globex")
    other = http.get("/api/v1/me", headers={"Authorization": f"Bearer {other_key}"}).json()[
        "org_id"
    ]
    _insert(db, [_row(mine, T0 + timedelta(minutes=1)), _row(other, T0 + timedelta(minutes=2))])
    _insert(db, [_row(other, T0 + timedelta(minutes=3), prompt_tokens=5)])
    window = {"start_time": rfc3339(T0), "end_time": rfc3339(T0 + timedelta(days=1))}
    summed = _usage(http, **window, org_id="all")
    assert summed["org_id"] == "all"
    assert summed["totals"]["input_tokens"] == 25
    by_org = _usage(http, **window, org_id="all", group_by="org_id")
    got = {r["org_id"]: r["input_tokens"] for r in by_org["buckets"][0]["results"]}
    assert got == {mine: 10, other: 15}
    tenant = http.get(
        "/api/v1/studio/usage",
        params={**window, "org_id": "all"},
        headers={"Authorization": f"Bearer {other_key}"},
    )
    assert tenant.status_code == 403
    assert tenant.json()["error"]["code"] == "operator_only"
