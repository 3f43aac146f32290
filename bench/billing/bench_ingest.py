"""Billing benchmark: usage-event ingestion on PostgreSQL, with deduplication, in batches of 1,000.

Target (the billing issue): >= 20,000 events/s (Stripe's meter-event stream takes 10,000/s).

The run creates a throwaway database, migrates it, and sends ``--events`` events through
``billing.usage.record_usage_events`` (the function behind ``POST /api/v1/usage/events``) in
batches of 1,000, a share of them replays of earlier events (``--dup``: within a batch and across
batches). It checks the stored count and the duplicate count against what it sent, then, in the
same run, ``COPY``s the same rows into a scratch table shaped like ``usage_events`` (same columns
and indexes, the unique (org, source, id) constraint included) and prints both rates and their
ratio. The database is dropped at the end.

Rerun:  .venv/bin/python bench/billing/bench_ingest.py [--events N] [--dup F] [--url URL]
(``--url``: an admin URL of a PostgreSQL server; default ``NEOCLOUD_BENCH_POSTGRES_URL`` or
postgres@127.0.0.1:5432.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from neocloud.billing.usage import MAX_BATCH, TOKENS, UsageEvent, record_usage_events
from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.db.scratch import scratch_database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.ids import new_id

DEFAULT_URL = os.environ.get(
    "NEOCLOUD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
COLUMNS = ("id", "org_id", "source", "event_id", "type", "subject", "time", "data", "received_at")


def workload(n: int, dup: float, orgs: int, seed: int) -> list[tuple[str, list[UsageEvent]]]:
    """``n`` events in batches of 1,000 as (org, batch); about ``dup`` of them repeat an event
    sent before (half from the same batch, half from an earlier one)."""
    rng = random.Random(seed)
    sent: list[tuple[str, UsageEvent]] = []
    batches: list[tuple[str, list[UsageEvent]]] = []
    for b in range(0, n, MAX_BATCH):
        org = f"org_{rng.randrange(orgs):05d}"
        batch: list[UsageEvent] = []
        for i in range(b, min(n, b + MAX_BATCH)):
            if batch and rng.random() < dup:
                same_org = [e for o, e in sent[-5 * MAX_BATCH :] if o == org]
                batch.append(rng.choice(batch if rng.random() < 0.5 or not same_org else same_org))
                continue
            ev = UsageEvent(
                id=f"req-{i:09d}",
                source="studio/gateway-1",
                type=TOKENS,
                subject=f"prj_{rng.randrange(20):03d}",
                time=NOW - timedelta(seconds=rng.randrange(86_400 * 30)),
                data={
                    "model": rng.choice(("tiny-llama", "llama-3.1-8b", "qwen2.5-7b")),
                    "input_tokens": rng.randrange(1, 4000),
                    "output_tokens": rng.randrange(1, 1000),
                    "batch": rng.random() < 0.1,
                },
            )
            batch.append(ev)
        sent += [(org, e) for e in batch]
        batches.append((org, batch))
    return batches


def distinct(batches: list[tuple[str, list[UsageEvent]]]) -> int:
    return len({(org, e.source, e.id) for org, batch in batches for e in batch})


def copy_rows(db: Database, batches: list[tuple[str, list[UsageEvent]]]) -> float:
    """``COPY`` the distinct rows into a scratch table like ``usage_events``; seconds taken
    (the ids and JSON text are made inside the timed part, as the service makes them)."""
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE usage_events_copy (LIKE usage_events INCLUDING ALL)")
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for org, batch in batches:
        for e in batch:
            if (org, e.source, e.id) not in seen:
                seen.add((org, e.source, e.id))
                unique.append((org, e))
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        t0 = time.perf_counter()
        sql = f"COPY usage_events_copy ({', '.join(COLUMNS)}) FROM STDIN"
        with cur.copy(sql) as copy:
            for org, e in unique:
                copy.write_row(
                    (
                        new_id("use", at=NOW),
                        org,
                        e.source,
                        e.id,
                        e.type,
                        e.subject,
                        e.time,
                        json.dumps(e.data),
                        NOW,
                    )
                )
        raw.commit()
        elapsed = time.perf_counter() - t0
        cur.execute("SELECT count(*) FROM usage_events_copy")
        stored = (cur.fetchone() or (None,))[0]
    finally:
        raw.close()
    if stored != len(unique):
        sys.exit(f"INVALID: COPY stored {stored} rows, expected {len(unique)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--dup", type=float, default=0.05, help="share of replayed events")
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL admin URL")
    args = parser.parse_args()
    batches = workload(args.events, args.dup, args.orgs, args.seed)
    sent = sum(len(b) for _, b in batches)
    unique = distinct(batches)
    clock = VirtualClock(NOW)
    with scratch_database(args.url, "neocloud_bench_ingest") as url:
        db = Database.from_url(url)
        try:
            upgrade(db, "heads")
            accepted = duplicates = 0
            t0 = time.perf_counter()
            for org, batch in batches:
                result = record_usage_events(db=db, clock=clock, org_id=org, events=batch)
                accepted += result.accepted
                duplicates += result.duplicates
            ingest = time.perf_counter() - t0
            with db.engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT count(*) FROM usage_events")).scalar_one()
            if (accepted, duplicates, stored) != (unique, sent - unique, unique):
                sys.exit(
                    f"INVALID: accepted {accepted}, duplicates {duplicates}, stored {stored}; "
                    f"expected {unique}, {sent - unique}, {unique}"
                )
            copy = copy_rows(db, batches)
            pg = db.engine.dialect.server_version_info
        finally:
            db.dispose()
    rate_ingest = sent / ingest
    rate_copy = unique / copy
    version = ".".join(str(v) for v in pg or ())
    print(f"python {platform.python_version()} on {platform.machine()}, PostgreSQL {version}")
    print(
        f"events sent={sent} batches={len(batches)} (of <= {MAX_BATCH}) "
        f"stored={unique} duplicates={sent - unique} (counts checked)"
    )
    print(
        f"ingest (record_usage_events): {ingest:.2f} s = {rate_ingest:,.0f} events/s "
        f"(target >= 20,000)"
    )
    print(f"raw COPY of the same rows:    {copy:.2f} s = {rate_copy:,.0f} rows/s")
    print(f"ratio ingest/COPY: {rate_ingest / rate_copy:.2f}")


if __name__ == "__main__":
    main()
