"""Contracts and credits (pure): golden cases and invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.billing.contracts import (
    Grant,
    apply_credits,
    backstop,
    draw_down,
    refundable,
    true_up,
)
from neocloud.kernel.money import Money

NOW = datetime(2026, 3, 1, tzinfo=UTC)
M = Money.of


def test_take_or_pay_true_up_golden() -> None:
    assert true_up(M("100000.00"), M("82345.67")) == M("17654.33")
    assert true_up(M("100000.00"), M("120000.00")) == M("0")


def test_prepaid_drawdown() -> None:
    d = draw_down(M("1000.00"), M("400.00"))
    assert (d.drawn, d.overage, d.balance) == (M("400.00"), M("0.00"), M("600.00"))
    d = draw_down(M("600.00"), M("1000.00"))
    assert (d.drawn, d.overage, d.balance) == (M("600.00"), M("400.00"), M("0.00"))


def test_backstop_pays_for_unsold_capacity() -> None:
    # 64 GPUs for 730 h, 40,000 GPU-hours sold, $2.10 for the unsold 6,720
    assert backstop(64, Decimal(40_000), Decimal(730), M("2.10")) == M("14112.00")
    assert backstop(64, Decimal(50_000), Decimal(730), M("2.10")) == M("0.00")


def test_credits_by_priority_then_earliest_expiry() -> None:
    grants = [
        Grant("cr_late", M("50"), 1, NOW + timedelta(days=30), paid=False),
        Grant("cr_soon", M("30"), 1, NOW + timedelta(days=5), paid=False),
        Grant("cr_never", M("100"), 1, None, paid=True),
        Grant("cr_first", M("10"), 0, None, paid=True),
        Grant("cr_expired", M("500"), 0, NOW, paid=False),
    ]
    out = apply_credits(M("100"), grants, NOW)
    assert out.applied == (
        ("cr_first", M("10")),
        ("cr_soon", M("30")),
        ("cr_late", M("50")),
        ("cr_never", M("10")),
    )
    assert out.due == M("0")
    assert apply_credits(M("-20"), grants, NOW).applied == ()  # a credit note takes no credit
    assert refundable(grants, NOW) == M("110")  # paid grants only, never promotional


@settings(deadline=None)
@given(
    st.decimals(min_value=-1000, max_value=100_000, places=2),
    st.lists(
        st.tuples(
            st.decimals(min_value=0, max_value=5000, places=2),
            st.integers(0, 3),
            st.one_of(st.none(), st.integers(-10, 60)),
        ),
        max_size=6,
    ),
)
def test_credits_never_overpay(due: Decimal, specs: list[tuple[Decimal, int, int | None]]) -> None:
    grants = [
        Grant(
            f"cr_{i}", Money(b), p, None if d is None else NOW + timedelta(days=d), paid=i % 2 == 0
        )
        for i, (b, p, d) in enumerate(specs)
    ]
    out = apply_credits(Money(due), grants, NOW)
    used = sum((m.amount for _, m in out.applied), Decimal(0))
    assert out.due.amount == due - used
    assert used <= max(due, Decimal(0))
    by_id = {g.id: g for g in grants}
    for gid, m in out.applied:
        assert Decimal(0) < m.amount <= by_id[gid].balance.amount
        assert by_id[gid].expires_at is None or by_id[gid].expires_at > NOW
