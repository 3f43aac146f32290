"""Rating is pure: golden cases and invariants (hypothesis), no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.billing.rating import (
    ON_DEMAND,
    RESERVED,
    SPOT,
    Interval,
    Outage,
    Period,
    PriceBook,
    ReservedContract,
    Sku,
    TokenRate,
    TokenUsage,
    billable_seconds,
    rate,
    rate_tokens,
    total,
)
from neocloud.kernel.money import Money

NOV = Period.month("2026-11")
T0 = NOV.start
H100 = "H100-SXM-80GB"
BOOK = PriceBook(
    "pb_test",
    {
        Sku(H100, ON_DEMAND): Decimal("2.95"),
        Sku(H100, SPOT): Decimal("1.77"),
        Sku(H100, RESERVED, "1m"): Decimal("2.50"),
        Sku(H100, RESERVED, "1y"): Decimal("2.10"),
    },
)


def iv(
    id_: str,
    start: datetime,
    end: datetime | None,
    *,
    gpus: int = 8,
    cls: str = ON_DEMAND,
    org: str = "org_a",
    node: str = "node_1",
    rsv: str | None = None,
) -> Interval:
    return Interval(id_, org, "prj_a", node, H100, cls, gpus, start, end, rsv)


def test_golden_8_gpus_11862_seconds_at_2_95() -> None:
    lines = rate([iv("alc_1", T0, T0 + timedelta(seconds=11_862))], BOOK, (), NOV)
    assert [ln.amount for ln in lines] == [Money.of("77.76")]
    assert lines[0].gpu_seconds == 8 * 11_862
    assert lines[0].fact_ids == ("alc_1",)


def test_golden_64_gpus_730_hours_reserved_1y() -> None:
    dec = Period.month("2026-12")  # 744 h: the 730 h fit inside
    start = dec.start
    facts = [iv("alc_1", start, start + timedelta(hours=730), gpus=64, cls=RESERVED, rsv="rsv_1")]
    lines = rate(facts, BOOK, [ReservedContract("rsv_1", "1y")], dec)
    assert lines[0].sku.code == f"{H100}.reserved.1y"
    assert lines[0].amount == Money.of("98112.00")


def test_reserved_without_contract_is_priced_at_one_month() -> None:
    facts = [iv("alc_1", T0, T0 + timedelta(hours=1), gpus=1, cls=RESERVED, rsv="rsv_9")]
    assert rate(facts, BOOK, (), NOV)[0].amount == Money.of("2.50")


def test_clipped_to_the_period_and_open_intervals_run_to_as_of() -> None:
    before = iv("alc_1", T0 - timedelta(hours=5), T0 + timedelta(hours=1), gpus=1)
    running = iv("alc_2", NOV.end - timedelta(hours=2), None, gpus=1)
    lines = rate([before, running], BOOK, (), NOV)
    assert lines[0].gpu_seconds == 3 * 3600
    as_of = NOV.end - timedelta(hours=1, minutes=30)
    assert rate([before, running], BOOK, (), NOV, as_of=as_of)[0].gpu_seconds == 3600 + 1800


def test_failed_time_is_excluded() -> None:
    fact = iv("alc_1", T0, T0 + timedelta(hours=10), gpus=2)
    outage = Outage("node_1", T0 + timedelta(hours=4), T0 + timedelta(hours=7))
    other_node = Outage("node_2", T0, None)
    lines = rate([fact], BOOK, (), NOV, outages=[outage, other_node])
    assert lines[0].gpu_seconds == 2 * 7 * 3600


def test_one_line_per_org_project_sku_sorted_and_rounding_configurable() -> None:
    facts = [
        iv("alc_2", T0, T0 + timedelta(seconds=1), gpus=1, org="org_b"),
        iv("alc_1", T0, T0 + timedelta(seconds=1), gpus=1, cls=SPOT),
        iv("alc_3", T0, T0 + timedelta(seconds=1), gpus=1, cls=SPOT),
    ]
    lines = rate(facts, BOOK, (), NOV)
    assert [(ln.org_id, ln.sku.cls, ln.fact_ids) for ln in lines] == [
        ("org_a", SPOT, ("alc_1", "alc_3")),
        ("org_b", ON_DEMAND, ("alc_2",)),
    ]
    # 2 s of spot at 1.77/h = 0.000983…: a cent only if rounding says so
    assert lines[0].amount == Money.of("0.00")
    half = PriceBook("pb_h", {Sku(H100, ON_DEMAND): Decimal("18")})  # 1 s = 0.005
    one = [iv("alc_9", T0, T0 + timedelta(seconds=1), gpus=1)]
    assert rate(one, half, (), NOV)[0].amount == Money.of("0.01")
    assert rate(one, half, (), NOV, rounding=ROUND_HALF_EVEN)[0].amount == Money.of("0.00")


def test_unpriced_sku_and_conflicting_facts_are_refused() -> None:
    other = Interval("alc_1", "org_a", None, "node_1", "B200", ON_DEMAND, 1, T0, None)
    with pytest.raises(LookupError, match=r"B200\.on_demand"):
        rate([other], BOOK, (), NOV)
    a = iv("alc_1", T0, T0 + timedelta(hours=1))
    with pytest.raises(ValueError, match="conflicting"):
        rate([a, iv("alc_1", T0, T0 + timedelta(hours=2))], BOOK, (), NOV)


def test_period_month_parsing() -> None:
    dec = Period.month("2026-12")
    assert (dec.start, dec.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="YYYY-MM"):
        Period.month("2026/12")


# -- invariants -------------------------------------------------------------------------------

SECONDS = st.integers(min_value=-5 * 86_400, max_value=35 * 86_400)
MICROS = st.integers(min_value=0, max_value=999_999)


@st.composite
def intervals(draw: st.DrawFn, n: int = 1) -> list[Interval]:
    out = []
    for i in range(n):
        a, b = sorted((draw(SECONDS), draw(SECONDS)))
        start = T0 + timedelta(seconds=a, microseconds=draw(MICROS))
        end = None if draw(st.booleans()) and i == 0 else T0 + timedelta(seconds=b)
        cls = draw(st.sampled_from([ON_DEMAND, SPOT, RESERVED]))
        out.append(
            iv(
                f"alc_{i}",
                start,
                end,
                gpus=draw(st.integers(1, 72)),
                cls=cls,
                node=draw(st.sampled_from(["node_1", "node_2"])),
            )
        )
    return out


@st.composite
def outages(draw: st.DrawFn) -> list[Outage]:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        a, b = sorted((draw(SECONDS), draw(SECONDS)))
        out.append(
            Outage(
                draw(st.sampled_from(["node_1", "node_2"])),
                T0 + timedelta(seconds=a),
                None if draw(st.booleans()) else T0 + timedelta(seconds=b),
            )
        )
    return out


@settings(deadline=None)  # rating is fast; a loaded CI machine is not
@given(intervals(3), outages())
def test_rating_twice_and_refeeding_facts_gives_identical_lines(
    facts: list[Interval], down: list[Outage]
) -> None:
    once = rate(facts, BOOK, (), NOV, outages=down)
    assert rate(list(reversed(facts)), BOOK, (), NOV, outages=down) == once
    assert rate(facts + facts, BOOK, (), NOV, outages=down + down) == once


@settings(deadline=None)
@given(intervals(1), st.floats(0.0, 1.0), outages())
def test_splitting_an_interval_never_changes_the_total(
    facts: list[Interval], where: float, down: list[Outage]
) -> None:
    whole = facts[0]
    end = whole.end or NOV.end
    cut = whole.start + (end - whole.start) * where
    first = Interval(**{**_fields(whole), "id": "alc_x", "end": cut})
    second = Interval(**{**_fields(whole), "id": "alc_y", "start": cut})
    one = rate([whole], BOOK, (), NOV, outages=down)
    two = rate([first, second], BOOK, (), NOV, outages=down)
    # same line (org, project, SKU), exact same GPU time: the amount is rounded once either way
    assert [(ln.sku, ln.gpu_seconds, ln.amount) for ln in one] == [
        (ln.sku, ln.gpu_seconds, ln.amount) for ln in two
    ]


@settings(deadline=None)
@given(intervals(1), outages())
def test_billed_seconds_are_the_interval_minus_failed_time(
    facts: list[Interval], down: list[Outage]
) -> None:
    fact = facts[0]
    # brute force hour by hour on an hour grid: an independent oracle
    grid = Interval(
        **{
            **_fields(fact),
            "start": _hour(fact.start),
            "end": None if fact.end is None else _hour(fact.end),
        }
    )
    down = [
        Outage(o.node_id, _hour(o.start), None if o.end is None else _hour(o.end)) for o in down
    ]
    expected = 0
    t = max(grid.start, NOV.start)
    stop = NOV.end if grid.end is None else min(grid.end, NOV.end)
    while t < stop:
        failed = any(
            o.node_id == grid.node_id and o.start <= t and (o.end is None or t < o.end)
            for o in down
        )
        expected += 0 if failed else 3600
        t += timedelta(hours=1)
    lines = rate([grid], BOOK, (), NOV, outages=down)
    billed = sum((ln.gpu_seconds for ln in lines), Decimal(0))
    assert billed == expected * grid.gpus
    assert total(lines) >= Money.zero()


def test_billable_seconds_without_overlap_is_zero() -> None:
    fact = iv("alc_1", T0 - timedelta(hours=2), T0 - timedelta(hours=1))
    assert billable_seconds(fact, (), NOV.start, NOV.end) == 0


def _fields(v: Interval) -> dict[str, object]:
    return {f: getattr(v, f) for f in Interval.__slots__}


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def test_rating_imports_only_the_standard_library_and_kernel() -> None:
    import ast
    import inspect

    import neocloud.billing.rating as module

    tree = ast.parse(inspect.getsource(module))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    neocloud = {n for n in names if n.startswith("neocloud")}
    assert neocloud <= {"neocloud.kernel.money"}
    assert not names & {"sqlalchemy", "fastapi", "httpx"}


def test_tokens_priced_per_million_once_per_event_with_batch_discount() -> None:
    from neocloud.billing.rating import TokenRate, TokenUsage, rate_tokens

    prices = {"llama": TokenRate(Decimal("0.20"), Decimal("0.60"), Decimal("0.50"))}
    t = T0 + timedelta(hours=1)
    events = [
        TokenUsage("e1", "org_a", "llama", t, 1_000_000, 0),
        TokenUsage("e2", "org_a", "llama", t, 0, 500_000),
        TokenUsage("e3", "org_a", "llama", t, 1_000_000, 1_000_000, batch=True),
        TokenUsage("e0", "org_a", "llama", T0 - timedelta(seconds=1), 9, 9),  # October
    ]
    lines = rate_tokens(events + events[:1], prices, NOV)
    assert [
        (ln.batch, ln.input_tokens, ln.output_tokens, ln.amount, ln.fact_ids) for ln in lines
    ] == [
        (False, 1_000_000, 500_000, Money.of("0.50"), ("e1", "e2")),
        (True, 1_000_000, 1_000_000, Money.of("0.40"), ("e3",)),
    ]
    with pytest.raises(LookupError, match="mistral"):
        rate_tokens([TokenUsage("e9", "org_a", "mistral", t, 1, 1)], prices, NOV)


# -- price changes within a month -------------------------------------------------------------

CHANGE = datetime(2026, 11, 16, tzinfo=UTC)
LLAMA_V1 = TokenRate(Decimal("0.20"), Decimal("0.60"), Decimal("0.50"))
LLAMA_V2 = TokenRate(Decimal("0.10"), Decimal("0.40"), Decimal("0.50"))
V1 = PriceBook(
    "pb_v1",
    {Sku(H100, ON_DEMAND): Decimal("2.95"), Sku(H100, SPOT): Decimal("1.77")},
    effective_from=datetime(2026, 1, 1, tzinfo=UTC),
    tokens={"llama": LLAMA_V1},
)
V2 = PriceBook(
    "pb_v2",
    {Sku(H100, ON_DEMAND): Decimal("2.50"), Sku(H100, SPOT): Decimal("1.77")},
    effective_from=CHANGE,
    tokens={"llama": LLAMA_V2},
)


def test_a_mid_month_price_change_splits_the_interval_golden() -> None:
    """8 GPUs from Nov 10 to Nov 20; the on-demand price drops from $2.95 to $2.50 on Nov 16;
    the node is failed from 22:00 on the 15th to 02:00 on the 16th (2 h either side)."""
    a1 = iv("a1", datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC))
    spot = iv("s1", datetime(2026, 11, 15, tzinfo=UTC), None, cls=SPOT, gpus=1)
    outage = Outage("node_1", CHANGE - timedelta(hours=2), CHANGE + timedelta(hours=2))
    lines = rate([a1, spot], [V2, V1], (), NOV, outages=[outage])
    # Before: 6 days less 2 h = 142 h x 8 GPUs x $2.95; after: 4 days less 2 h = 94 h x 8 x $2.50.
    assert [
        (ln.sku.code, ln.unit_price, ln.gpu_seconds, ln.amount, ln.fact_ids) for ln in lines
    ] == [
        (
            f"{H100}.on_demand",
            Decimal("2.95"),
            Decimal(142 * 3600 * 8),
            Money.of("3351.20"),
            ("a1",),
        ),
        (
            f"{H100}.on_demand",
            Decimal("2.50"),
            Decimal(94 * 3600 * 8),
            Money.of("1880.00"),
            ("a1",),
        ),
        # Spot's price did not change: one line across the change (16 days less 4 h).
        (
            f"{H100}.spot",
            Decimal("1.77"),
            Decimal((16 * 24 - 4) * 3600),
            Money.of("672.60"),
            ("s1",),
        ),
    ]
    assert total(lines) == Money.of("5903.80")
    assert rate([a1, spot], [V1, V2], (), NOV, outages=[outage]) == lines  # order of versions
    assert rate([spot, a1, a1], [V2, V1], (), NOV, outages=[outage]) == lines  # facts, replays


def test_versions_outside_the_period_change_nothing() -> None:
    fact = iv("a1", T0, T0 + timedelta(hours=10))
    later = PriceBook("pb_dec", {}, effective_from=NOV.end)
    assert rate([fact], [V1, later], (), NOV) == rate([fact], V1, (), NOV)
    with pytest.raises(LookupError, match="no price book"):
        rate([fact], [V2], (), NOV)  # nothing in force at the month's start
    with pytest.raises(ValueError, match="same instant"):
        rate([fact], [V1, V2, PriceBook("pb_x", {}, effective_from=CHANGE)], (), NOV)


def test_an_open_interval_is_rated_to_as_of_across_the_change() -> None:
    fact = iv("a1", CHANGE - timedelta(hours=1), None, gpus=1)
    lines = rate([fact], [V1, V2], (), NOV, as_of=CHANGE + timedelta(hours=3))
    assert [(ln.unit_price, ln.gpu_seconds, ln.amount) for ln in lines] == [
        (Decimal("2.95"), Decimal(3600), Money.of("2.95")),
        (Decimal("2.50"), Decimal(3 * 3600), Money.of("7.50")),
    ]
    before = rate([fact], [V1, V2], (), NOV, as_of=CHANGE - timedelta(minutes=30))
    assert [(ln.unit_price, ln.gpu_seconds) for ln in before] == [(Decimal("2.95"), Decimal(1800))]


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 30 * 86_400 - 1),
    length=st.integers(1, 40 * 86_400),
    change=st.integers(1, 30 * 86_400 - 1),
    gpus=st.sampled_from((1, 2, 4, 8)),
)
def test_a_split_bills_every_second_once_and_at_the_price_in_force(
    start: int, length: int, change: int, gpus: int
) -> None:
    at = T0 + timedelta(seconds=change)
    v2 = PriceBook("pb_v2", {Sku(H100, ON_DEMAND): Decimal("2.50")}, effective_from=at)
    fact = iv(
        "a1", T0 + timedelta(seconds=start), T0 + timedelta(seconds=start + length), gpus=gpus
    )
    split = rate([fact], [V1, v2], (), NOV)
    whole = rate([fact], V1, (), NOV)
    assert sum(ln.gpu_seconds for ln in split) == sum(ln.gpu_seconds for ln in whole)
    end = min(start + length, 30 * 86_400)
    expect = {
        Decimal("2.95"): max(0, min(end, change) - start) * gpus,
        Decimal("2.50"): max(0, end - max(start, change)) * gpus,
    }
    assert {ln.unit_price: ln.gpu_seconds for ln in split} == {
        p: Decimal(s) for p, s in expect.items() if s > 0
    }
    assert rate([fact], [v2, V1], (), NOV) == split


def test_token_usage_is_priced_by_the_version_in_force_at_each_event() -> None:
    events = [
        TokenUsage("t1", "org_a", "llama", CHANGE - timedelta(seconds=1), 1_000_000, 1_000_000),
        TokenUsage("t2", "org_a", "llama", CHANGE, 1_000_000, 1_000_000),
        TokenUsage("t3", "org_a", "llama", CHANGE + timedelta(days=1), 1_000_000, 0, batch=True),
    ]
    lines = rate_tokens(events, [V2, V1], NOV)
    assert [(ln.batch, ln.rate, ln.amount, ln.fact_ids) for ln in lines] == [
        (False, LLAMA_V1, Money.of("0.80"), ("t1",)),
        (False, LLAMA_V2, Money.of("0.50"), ("t2",)),
        (True, LLAMA_V2, Money.of("0.05"), ("t3",)),
    ]
    assert rate_tokens(list(reversed(events)), [V1, V2], NOV) == lines
