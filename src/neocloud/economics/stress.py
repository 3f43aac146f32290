"""Stress tests: the built-in stresses, a tornado of one-at-a-time swings, and a seeded,
vectorised Monte Carlo of the years in which DSCR or interest cover falls below 1."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil

import numpy as np

from neocloud.economics.finance import npv
from neocloud.economics.kpis import concentration, covers
from neocloud.economics.projection import (
    Array,
    Projection,
    debt_schedule,
    equity_flows,
    project,
    project_flows,
    tax_basis,
    tax_years,
    yearly,
)
from neocloud.economics.scenario import Cohort, Scenario, TerminalMethod
from neocloud.kernel.errors import InvalidRequest

Edit = Callable[[Scenario], Scenario]


def with_cohorts(s: Scenario, edit: Callable[[Cohort], dict[str, object]]) -> Scenario:
    return s.model_copy(update={"cohorts": [c.model_copy(update=edit(c)) for c in s.cohorts]})


def with_classes(s: Scenario, field: str, factor: float, cap: float | None = None) -> Scenario:
    classes = []
    for c in s.revenue.classes:
        value = getattr(c, field) * factor
        classes.append(c.model_copy(update={field: min(value, cap) if cap else value}))
    return s.model_copy(update={"revenue": s.revenue.model_copy(update={"classes": classes})})


def with_opex(s: Scenario, field: str, factor: float, floor: float = 0.0) -> Scenario:
    value = max(getattr(s.opex, field) * factor, floor)
    return s.model_copy(update={"opex": s.opex.model_copy(update={field: value})})


def scale_rates(s: Scenario, factor: float) -> Scenario:
    """Every tranche's all-in rate times ``factor``: fixed rates, and for floating tranches on
    a reference both the reference curves and the spreads (and floors)."""
    tranches = []
    for t in s.financing:
        if t.rate is not None:
            tranches.append(t.model_copy(update={"rate": min(t.rate * factor, 1.0)}))
        else:
            floor = None if t.floor is None else t.floor * factor
            tranches.append(t.model_copy(update={"spread": t.spread * factor, "floor": floor}))
    curves = {}
    for name, curve in s.reference_rates.items():
        if curve.monthly is not None:
            curves[name] = curve.model_copy(update={"monthly": [r * factor for r in curve.monthly]})
        else:
            steps = [x.model_copy(update={"rate": x.rate * factor}) for x in curve.steps or []]
            curves[name] = curve.model_copy(update={"steps": steps})
    return s.model_copy(update={"financing": tranches, "reference_rates": curves})


def scale_capex(s: Scenario, factor: float) -> Scenario:
    def edit(c: Cohort) -> dict[str, object]:
        if isinstance(c.capex_per_node, dict):
            return {"capex_per_node": {k: v * factor for k, v in c.capex_per_node.items()}}
        return {"capex_per_node": c.capex_per_node * factor}

    return with_cohorts(s, edit)


def scale_leverage(s: Scenario, factor: float) -> Scenario:
    tranches = []
    for t in s.financing:
        if t.principal is not None:
            tranches.append(t.model_copy(update={"principal": t.principal * factor}))
        else:
            tranches.append(t.model_copy(update={"ltv": min((t.ltv or 0.0) * factor, 1.0)}))
    return s.model_copy(update={"financing": tranches})


@dataclass(frozen=True)
class Stress:
    name: str
    description: str
    edit: Edit
    lose_largest_customer: bool = False
    rate_shift: float = 0.0

    def run(self, s: Scenario) -> Projection:
        return run_stresses(s, [self])


def run_stresses(s: Scenario, stresses: Sequence[Stress]) -> Projection:
    """Project ``s`` with every stress applied (edits in order, rate shifts added up)."""
    edited = s
    for stress in stresses:
        edited = stress.edit(edited)
    without: tuple[str, ...] = ()
    if any(x.lose_largest_customer for x in stresses):
        largest = concentration(project(s)).largest
        without = (largest,) if largest else ()
    return project(edited, without=without, rate_shift=sum(x.rate_shift for x in stresses))


def _same(s: Scenario) -> Scenario:
    return s


STRESSES: dict[str, Stress] = {
    stress.name: stress
    for stress in (
        Stress(
            "price_collapse",
            "hourly prices fall 40% (contract prices hold)",
            lambda s: with_classes(s, "price_per_gpu_hour", 0.6),
        ),
        Stress(
            "utilization_drop",
            "hourly utilization falls by a quarter (80% → 60%)",
            lambda s: with_classes(s, "utilization", 0.75),
        ),
        Stress(
            "short_book_life",
            "book life 4 years instead of 6 (Nebius vs CoreWeave): same cash, less EBIT",
            lambda s: with_cohorts(s, lambda c: {"book_life_years": min(c.book_life_years, 4.0)}),
        ),
        Stress(
            "faster_obsolescence",
            "economic life 2 years shorter: revenue stops early, book value written off",
            lambda s: with_cohorts(
                s, lambda c: {"economic_life_years": max(c.economic_life_years - 2.0, 1.0)}
            ),
        ),
        Stress(
            "rate_shock",
            "+300 bp on every tranche (floating: the reference curve shifts; fixed: as if "
            "financed today)",
            _same,
            rate_shift=0.03,
        ),
        Stress(
            "lose_top_customer",
            "the largest customer leaves: its revenue stops, its capacity stays unsold",
            _same,
            lose_largest_customer=True,
        ),
        Stress(
            "delayed_power",
            "power arrives 6 months late: capex and debt on time, revenue and opex late",
            lambda s: with_cohorts(s, lambda c: {"power_delay_months": c.power_delay_months + 6}),
        ),
    )
}


def get_stress(name: str) -> Stress:
    try:
        return STRESSES[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown stress {name!r}; built-in stresses: {', '.join(STRESSES)}",
            code="unknown_stress",
            param="stress",
        ) from None


# --- tornado -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TornadoBar:
    input: str
    low_label: str
    high_label: str
    npv_low: float
    npv_high: float
    equity_npv_low: float
    equity_npv_high: float
    min_dscr_low: float | None
    min_dscr_high: float | None

    @property
    def swing(self) -> float:
        return abs(self.npv_high - self.npv_low)


def _life(field: str, years: float) -> Edit:
    def edit(s: Scenario) -> Scenario:
        edited = with_cohorts(s, lambda c: {field: max(getattr(c, field) + years, 1.0)})
        if field == "economic_life_years" and years > 0:  # let the longer life show
            edited = edited.model_copy(update={"horizon_years": s.horizon_years + ceil(years)})
        return edited

    return edit


def _inputs(pct: float) -> list[tuple[str, str, str, Edit, Edit]]:
    lo, hi = 1.0 - pct, 1.0 + pct
    tag = f"{pct:.0%}"
    return [
        (
            "price",
            f"-{tag}",
            f"+{tag}",
            lambda s: with_classes(s, "price_per_gpu_hour", lo),
            lambda s: with_classes(s, "price_per_gpu_hour", hi),
        ),
        (
            "utilization",
            f"-{tag}",
            f"+{tag} (max 100%)",
            lambda s: with_classes(s, "utilization", lo),
            lambda s: with_classes(s, "utilization", hi, cap=1.0),
        ),
        ("capex", f"-{tag}", f"+{tag}", lambda s: scale_capex(s, lo), lambda s: scale_capex(s, hi)),
        (
            "power price",
            f"-{tag}",
            f"+{tag}",
            lambda s: with_opex(s, "power_price_per_kwh", lo),
            lambda s: with_opex(s, "power_price_per_kwh", hi),
        ),
        (
            "PUE",
            f"-{tag} (min 1.0)",
            f"+{tag}",
            lambda s: with_opex(s, "pue", lo, floor=1.0),
            lambda s: with_opex(s, "pue", hi),
        ),
        (
            "colocation",
            f"-{tag}",
            f"+{tag}",
            lambda s: with_opex(s, "colocation_per_kw_month", lo),
            lambda s: with_opex(s, "colocation_per_kw_month", hi),
        ),
        (
            "interest rate",
            f"-{tag}",
            f"+{tag}",
            lambda s: scale_rates(s, lo),
            lambda s: scale_rates(s, hi),
        ),
        (
            "leverage",
            f"-{tag}",
            f"+{tag} (max 100% LTV)",
            lambda s: scale_leverage(s, lo),
            lambda s: scale_leverage(s, hi),
        ),
        (
            "economic life",
            "-1 year",
            "+1 year",
            _life("economic_life_years", -1.0),
            _life("economic_life_years", 1.0),
        ),
        (
            "book life",
            "-1 year",
            "+1 year",
            _life("book_life_years", -1.0),
            _life("book_life_years", 1.0),
        ),
    ]


def tornado(s: Scenario, *, pct: float = 0.2) -> list[TornadoBar]:
    """Project NPV (and equity NPV at the same rate, and minimum DSCR) with each input moved
    down and up on its own, widest project-NPV swing first (financing inputs move only the
    equity figures). Lives move by a year; a longer economic life extends the horizon."""
    bars = []
    for name, low_label, high_label, low, high in _inputs(pct):
        p_low, p_high = project(low(s)), project(high(s))
        rate = s.discount_rate
        bars.append(
            TornadoBar(
                name,
                low_label,
                high_label,
                npv(rate, project_flows(p_low, annual=True)),
                npv(rate, project_flows(p_high, annual=True)),
                npv(rate, equity_flows(p_low, annual=True)),
                npv(rate, equity_flows(p_high, annual=True)),
                covers(p_low).min_dscr,
                covers(p_high).min_dscr,
            )
        )
    return sorted(bars, key=lambda b: b.swing, reverse=True)


# --- Monte Carlo ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MonteCarloSpec:
    """Shocks per path. Prices follow a random walk in logs (per year); utilization moves by
    an absolute amount each year around its base; power price is one lognormal level per path;
    floating rates move by one normal shift per path (fixed-rate debt does not move)."""

    paths: int = 10_000
    seed: int = 0
    price_drift: float = 0.0
    price_volatility: float = 0.15
    utilization_sd: float = 0.10
    power_price_sd: float = 0.20
    rate_shift_sd: float = 0.02


@dataclass(frozen=True)
class MonteCarloResult:
    paths: int
    seed: int
    p_dscr_below_1: float
    p_interest_cover_below_1: float  # EBIT interest cover
    p_either_below_1: float
    min_dscr_percentiles: dict[str, float | None]
    npv_percentiles: dict[str, float]
    p_npv_negative: float


def monte_carlo(s: Scenario, spec: MonteCarloSpec | None = None) -> MonteCarloResult:
    """Vectorised over paths: one projection's operations are re-priced per path and year."""
    spec = spec or MonteCarloSpec()
    if spec.paths < 1:
        raise InvalidRequest("paths must be at least 1", param="paths")
    rng = np.random.default_rng(spec.seed)
    base = project(s)
    years = base.years
    ops = base.ops
    n = spec.paths
    price = np.exp(
        np.cumsum(rng.normal(spec.price_drift, spec.price_volatility, (n, years)), axis=1)
    )
    u_ref = _mean_utilization(s)
    shift = rng.normal(0.0, spec.utilization_sd, (n, years))
    use = np.clip(u_ref + shift, 0.0, 1.0) / u_ref if u_ref > 0 else np.ones((n, years))
    power_level = np.exp(rng.normal(0.0, spec.power_price_sd, (n, 1)))
    rates = rng.normal(0.0, spec.rate_shift_sd, n)

    revenue = yearly(ops.contract_revenue) + yearly(ops.class_revenue) * price * use
    opex = yearly(ops.power) * power_level + yearly(ops.colocation + ops.other_opex)
    ebitda = revenue - opex
    ebit = ebitda - yearly(ops.depreciation)
    sched = debt_schedule(s, rates_shift=rates, shift_fixed=False)
    interest = yearly(sched.interest_expense)
    service = yearly(sched.debt_service)
    taxable = ebit - interest - yearly(tax_basis(s).difference)  # see projection.project
    tax = tax_years(s, taxable).current
    cfads = ebitda + yearly(ops.receipts - ops.revenue) - tax
    owing = service > 1e-6
    charged = interest > 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        dscr = np.where(owing, cfads / service, np.inf)
        cover = np.where(charged, ebit / interest, np.inf)
    min_dscr = dscr.min(axis=1)
    dscr_breach = min_dscr < 1.0
    cover_breach = cover.min(axis=1) < 1.0

    flows = np.tile(project_flows(base, annual=True), (n, 1))
    flows[:, 1:] += cfads - yearly(base.cfads)
    if s.terminal_value.method is TerminalMethod.EXIT_MULTIPLE:  # moves with the last EBITDA
        multiple = s.terminal_value.ebitda_multiple or 0.0
        flows[:, -1] += multiple * (ebitda[:, -1] - float(base.ebitda[-12:].sum()))
    discount = (1.0 + s.discount_rate) ** -np.arange(years + 1, dtype=np.float64)
    values = flows @ discount
    finite = min_dscr[np.isfinite(min_dscr)]
    return MonteCarloResult(
        paths=n,
        seed=spec.seed,
        p_dscr_below_1=float(dscr_breach.mean()),
        p_interest_cover_below_1=float(cover_breach.mean()),
        p_either_below_1=float((dscr_breach | cover_breach).mean()),
        min_dscr_percentiles=_percentiles(finite) if finite.size else dict.fromkeys(_PCT),
        npv_percentiles={k: float(v) for k, v in _percentiles(values).items() if v is not None},
        p_npv_negative=float((values < 0).mean()),
    )


_PCT = ("p5", "p50", "p95")


def _percentiles(values: Array) -> dict[str, float | None]:
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"p5": float(p5), "p50": float(p50), "p95": float(p95)}


def _mean_utilization(s: Scenario) -> float:
    weights = [c.share * c.price_per_gpu_hour for c in s.revenue.classes]
    if not weights or sum(weights) == 0:
        return 0.0
    return sum(w * c.utilization for w, c in zip(weights, s.revenue.classes, strict=True)) / sum(
        weights
    )
