"""Studio benchmark: ``GET /api/v1/studio/usage`` over 100,000 logged requests of one org.

Aim (ours: issue #6 sets no figure): an answer a person waits for, under 0.5 s, for a month of
daily or hourly buckets by model; the widest grouping (every model x key x endpoint per hour) is
printed too.

The run fills ``studio_usage`` with ``--rows`` requests spread over 30 days (8 models, 20 keys,
3 endpoints) on SQLite (a temporary file) and, unless ``--no-postgres``, on a throwaway
PostgreSQL database (dropped at the end), then times, best of 3, for each shape:
``service`` (``studio.usage.usage_report``: the SQL and the buckets) and ``http`` (the same
through the app with an API key, JSON included). Each answer is first checked against sums
made here from the rows.

Rerun:  .venv/bin/python bench/studio/bench_usage.py [--rows N] [--no-postgres] [--url URL]
(``--url``: an admin URL of a PostgreSQL server; default ``NEOCLOUD_BENCH_POSTGRES_URL`` or
postgres@127.0.0.1:5432.)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.db.scratch import scratch_database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.tables import StudioUsageRow
from neocloud.studio.usage import parse_usage_query, usage_report
from neocloud.tenancy.service import bootstrap_operator
from neocloud.tenancy.tables import OrgRow

DEFAULT_URL = os.environ.get(
    "NEOCLOUD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(days=30)
SHAPES: list[tuple[str, list[str]]] = [
    ("1d", []),
    ("1d", ["model"]),
    ("1h", ["model"]),
    ("1d", ["model", "api_key_id", "endpoint"]),
    ("1h", ["model", "api_key_id", "endpoint"]),
]


def fill(db: Database, org_id: str, n: int) -> list[dict[str, Any]]:
    rnd = random.Random(6)
    endpoints = ["chat.completions", "completions", "embeddings"]
    rows = [
        {
            "id": f"su_{i}",
            "request_id": f"req-{i}",
            "org_id": org_id,
            "key_id": f"key_{rnd.randrange(20)}",
            "model": f"acme/model-{rnd.randrange(8)}",
            "endpoint": rnd.choice(endpoints),
            "prompt_tokens": rnd.randrange(4000),
            "completion_tokens": rnd.randrange(800),
            "aborted": rnd.random() < 0.02,
            "created_at": START
            + timedelta(seconds=rnd.randrange(30 * 86400), microseconds=rnd.randrange(10**6)),
        }
        for i in range(n)
    ]
    with db.transaction() as s:
        for at in range(0, n, 10_000):
            s.execute(sa.insert(StudioUsageRow), rows[at : at + 10_000])
    return rows


def expected(rows: list[dict[str, Any]], width_s: int, groups: list[str]) -> Counter[Any]:
    field = {"model": "model", "api_key_id": "key_id", "endpoint": "endpoint"}
    sums: Counter[Any] = Counter()
    for r in rows:
        bucket = int((r["created_at"] - START).total_seconds()) // width_s
        sums[(bucket, *(r[field[g]] for g in groups))] += r["prompt_tokens"]
    return sums


def got(body: dict[str, Any], groups: list[str]) -> Counter[Any]:
    sums: Counter[Any] = Counter()
    for i, bucket in enumerate(body["buckets"]):
        for res in bucket["results"]:
            sums[(i, *(res[g] for g in groups))] += res["input_tokens"]
    return sums


def best_of(n: int, fn: Any) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(db: Database, label: str, n: int) -> None:
    upgrade(db)
    clock = VirtualClock(END)
    key = bootstrap_operator(db=db, clock=clock)
    assert key is not None
    with db.transaction() as s:
        org = s.scalars(sa.select(OrgRow)).one()
        org_id = org.id
    t = time.perf_counter()
    rows = fill(db, org_id, n)
    print(f"\n{label}: {n:,} rows written in {time.perf_counter() - t:.1f} s")
    actor = Principal("key_bench", "usr_bench", org_id, Role.ADMIN, is_operator=True)
    app = create_app(settings=Settings(data_dir=Path(tempfile.mkdtemp())), db=db, clock=clock)
    with TestClient(app) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        print(f"{'width':>5} {'group_by':<30} {'results':>8} {'service':>9} {'http':>9}")
        for width, groups in SHAPES:
            params = {
                "start_time": "2026-03-01T00:00:00Z",
                "end_time": "2026-03-31T00:00:00Z",
                "bucket_width": width,
                "group_by": ",".join(groups),
            }
            body = http.get("/api/v1/studio/usage", params=params).json()
            width_s = {"1h": 3600, "1d": 86400}[width]
            assert got(body, groups) == expected(rows, width_s, groups), (width, groups)
            assert body["totals"]["num_model_requests"] == n
            query = parse_usage_query(
                now=END,
                start_time=params["start_time"],
                end_time=params["end_time"],
                bucket_width=width,
                group_by=groups,
            )
            service = best_of(3, lambda q=query: usage_report(db=db, actor=actor, query=q))
            over_http = best_of(3, lambda p=params: http.get("/api/v1/studio/usage", params=p))
            results = sum(len(b["results"]) for b in body["buckets"])
            print(
                f"{width:>5} {','.join(groups) or '-':<30} {results:>8,} "
                f"{service * 1000:>7.0f}ms {over_http * 1000:>7.0f}ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    print(f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print("aim (ours; the issue sets none): < 500 ms for 30 daily or hourly buckets by model")
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.from_url(f"sqlite:///{tmp}/bench.db")
        run(db, "SQLite", args.rows)
        db.dispose()
    if not args.no_postgres:
        with scratch_database(args.url, "neocloud_bench_usage") as url:
            db = Database.from_url(url)
            run(db, "PostgreSQL", args.rows)
            db.dispose()


if __name__ == "__main__":
    main()
