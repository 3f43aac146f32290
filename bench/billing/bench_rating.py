"""Billing benchmark: rating one month for 10,000 orgs and 1,000,000 allocation intervals.

Target (the billing issue): under 60 s. The run first checks its result against an independent
sum (total GPU-seconds billed equals the clipped interval time minus failed time, computed
directly) and that rating again gives identical lines, then reports the time.

Rerun:  .venv/bin/python bench/billing/bench_rating.py [--orgs N] [--intervals N] [--seed N]
        [--price-change]   (a second price book version from the 16th: intervals split there)
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from datetime import timedelta
from decimal import Decimal

from neocloud.billing.pricebook import default_price_book
from neocloud.billing.rating import (
    ON_DEMAND,
    RESERVED,
    SPOT,
    Interval,
    Outage,
    Period,
    PriceBook,
    rate,
)
from neocloud.fleet.catalog import CATALOG

MONTH = Period.month("2026-11")


def facts(orgs: int, n: int, seed: int) -> tuple[list[Interval], list[Outage]]:
    rng = random.Random(seed)
    models = [m.id for m in CATALOG]
    span = int((MONTH.end - MONTH.start).total_seconds())
    out = []
    for i in range(n):
        start = MONTH.start + timedelta(seconds=rng.randrange(-86_400, span))
        length = rng.randrange(60, 14 * 86_400)
        out.append(
            Interval(
                f"alc_{i}",
                f"org_{rng.randrange(orgs)}",
                None,
                f"node_{rng.randrange(n // 8 + 1)}",
                rng.choice(models),
                rng.choice((ON_DEMAND, ON_DEMAND, SPOT, RESERVED)),
                rng.choice((1, 2, 4, 8)),
                start,
                None if rng.random() < 0.05 else start + timedelta(seconds=length),
            )
        )
    outages = [
        Outage(f"node_{rng.randrange(n // 8 + 1)}", t, t + timedelta(hours=rng.randrange(1, 48)))
        for t in (MONTH.start + timedelta(seconds=rng.randrange(span)) for _ in range(n // 100))
    ]
    return out, outages


def expected_gpu_seconds(intervals: list[Interval], outages: list[Outage]) -> Decimal:
    """Independent oracle: per interval, clipped time minus each (merged) outage overlap."""
    by_node: dict[str, list[tuple[float, float]]] = {}
    for o in outages:
        assert o.end is not None
        by_node.setdefault(o.node_id, []).append((o.start.timestamp(), o.end.timestamp()))
    merged: dict[str, list[tuple[float, float]]] = {}
    for node, spans in by_node.items():
        acc: list[tuple[float, float]] = []
        for a, b in sorted(spans):
            if acc and a <= acc[-1][1]:
                acc[-1] = (acc[-1][0], max(acc[-1][1], b))
            else:
                acc.append((a, b))
        merged[node] = acc
    lo, hi = MONTH.start.timestamp(), MONTH.end.timestamp()
    total = 0
    for iv in intervals:
        a = max(iv.start.timestamp(), lo)
        b = hi if iv.end is None else min(iv.end.timestamp(), hi)
        if b <= a:
            continue
        secs = b - a - sum(max(0.0, min(b, y) - max(a, x)) for x, y in merged.get(iv.node_id, ()))
        total += round(secs) * iv.gpus
    return Decimal(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orgs", type=int, default=10_000)
    parser.add_argument("--intervals", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--price-change", action="store_true", help="a new price book version mid-month"
    )
    args = parser.parse_args()
    intervals, outages = facts(args.orgs, args.intervals, args.seed)
    first = default_price_book()
    book: PriceBook | list[PriceBook] = first
    if args.price_change:  # 10% cheaper from the 16th: every interval across it splits
        later = {
            sku: (p * Decimal("0.9")).quantize(Decimal("0.0001"))
            for sku, p in first.gpu_hour.items()
        }
        book = [first, PriceBook("pb_mid", later, effective_from=MONTH.start + timedelta(days=15))]
    t0, c0 = time.perf_counter(), time.process_time()
    lines = rate(intervals, book, (), MONTH, outages=outages)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    billed = sum((ln.gpu_seconds for ln in lines), Decimal(0))
    want = expected_gpu_seconds(intervals, outages)
    if billed != want:
        sys.exit(f"INVALID: billed {billed} GPU-seconds, expected {want}")
    if rate(intervals, book, (), MONTH, outages=outages) != lines:
        sys.exit("INVALID: rating twice gave different lines")
    print(f"python {platform.python_version()} on {platform.machine()}")
    versions = 2 if args.price_change else 1
    print(
        f"orgs={args.orgs} intervals={args.intervals} outages={len(outages)} lines={len(lines)} "
        f"price book versions in the month={versions}"
    )
    print(f"rate one month: {elapsed:.2f} s   (target < 60 s; CPU time {cpu:.2f} s)")


if __name__ == "__main__":
    main()
