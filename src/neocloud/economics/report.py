"""Reports as plain JSON-able data: money rounded to cents at this edge only (the engine runs on
floats; see ``scenario``), ratios to four places, ``None`` where a figure is undefined."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neocloud.economics.finance import npv
from neocloud.economics.kpis import breakevens, concentration, covers, returns
from neocloud.economics.projection import (
    Array,
    Projection,
    equity_flows,
    project,
    project_flows,
    yearly,
)
from neocloud.economics.scenario import Periods, Scenario
from neocloud.economics.stress import (
    STRESSES,
    MonteCarloSpec,
    Stress,
    get_stress,
    monte_carlo,
    run_stresses,
    tornado,
)

PL_LINES = (
    "revenue",
    "power",
    "colocation",
    "other_opex",
    "ebitda",
    "depreciation",
    "ebit",
    "interest",
    "ebt",
    "current_tax",
    "deferred_tax",
    "tax",
    "net_income",
    "tax_depreciation",
)
CASH_LINES = (
    "cfads",
    "capex",
    "salvage",
    "draws",
    "interest_paid",
    "principal_paid",
    "debt_service",
    "project_cash_flow",
    "equity_cash_flow",
)


def cents(value: float) -> float:
    return round(float(value), 2) + 0.0  # + 0.0 turns -0.0 into 0.0


def ratio4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _lines(p: Projection) -> dict[str, Array]:
    return {
        "revenue": p.revenue,
        "power": p.ops.power,
        "colocation": p.ops.colocation,
        "other_opex": p.ops.other_opex,
        "ebitda": p.ebitda,
        "depreciation": p.ops.depreciation,
        "ebit": p.ebit,
        "interest": p.interest,
        "ebt": p.ebt,
        "current_tax": p.current_tax,
        "deferred_tax": p.deferred_tax,
        "tax": p.tax,
        "tax_depreciation": p.tax_depreciation,
        "net_income": p.net_income,
        "cfads": p.cfads,
        "capex": p.ops.capex,
        "salvage": p.ops.salvage,
        "draws": p.draws,
        "interest_paid": p.interest_paid,
        "principal_paid": p.principal_paid,
        "debt_service": p.debt_service,
        "project_cash_flow": p.project_cash_flow,
        "equity_cash_flow": p.equity_cash_flow,
    }


def _rows(p: Projection, *, annual: bool) -> list[dict[str, Any]]:
    lines = _lines(p)
    if annual:
        lines = {k: yearly(v) for k, v in lines.items()}
        balance = p.debt_balance[11::12]
        deferred = p.deferred_tax_balance[11::12]
        gpus = p.ops.gpus[11::12]
    else:
        balance, deferred, gpus = p.debt_balance, p.deferred_tax_balance, p.ops.gpus
    c = covers(p)
    rows = []
    for i in range(balance.shape[0]):
        row: dict[str, Any] = {"year" if annual else "month": i + 1}
        if not annual:
            row["year"] = i // 12 + 1
        row["gpus_in_service"] = int(gpus[i])
        row.update({k: cents(v[i]) for k, v in lines.items()})
        row["debt_balance"] = cents(balance[i])
        row["deferred_tax_liability"] = cents(deferred[i])
        if annual:
            row["dscr"] = ratio4(c.dscr[i])
            row["ebitda_interest_cover"] = ratio4(c.ebitda_interest_cover[i])
            row["ebit_interest_cover"] = ratio4(c.ebit_interest_cover[i])
        rows.append(row)
    return rows


def assumptions(s: Scenario) -> dict[str, Any]:
    debt = sum(
        t.principal if t.principal is not None else (t.ltv or 0.0) * s.capex for t in s.financing
    )
    return {
        "currency": s.currency,
        "start": s.start.isoformat(),
        "horizon_years": s.horizon_years,
        "gpus": s.gpus,
        "nodes": sum(c.nodes for c in s.cohorts),
        "capex": cents(s.capex),
        "capex_per_node": {c.name: cents(c.node_capex) for c in s.cohorts},
        "debt": cents(debt),
        "debt_share_of_capex": ratio4(debt / s.capex) if s.capex else None,
        "book_life_years": {c.name: c.book_life_years for c in s.cohorts},
        "economic_life_years": {c.name: c.economic_life_years for c in s.cohorts},
        "discount_rate": s.discount_rate,
        "tax_rate": s.tax_rate,
        "tax_depreciation": {c.name: c.tax_depreciation.value for c in s.cohorts},
        "tax_loss_offset_limit": s.tax_loss_offset_limit,
        "rates": {
            t.name: (
                {"reference": t.reference, "spread": t.spread, "floor": t.floor}
                if t.reference is not None
                else {"rate": t.rate, "floating": t.floating}
            )
            for t in s.financing
        },
        "terminal_value_method": s.terminal_value.method.value,
    }


def kpis(p: Projection, *, with_breakevens: bool = True) -> dict[str, Any]:
    c = covers(p)
    r = returns(p)
    out: dict[str, Any] = {
        "min_dscr": ratio4(c.min_dscr),
        "min_ebitda_interest_cover": ratio4(c.min_ebitda_interest_cover),
        "min_ebit_interest_cover": ratio4(c.min_ebit_interest_cover),
        "project_irr": ratio4(r.project_irr),
        "project_irr_monthly_flows": ratio4(r.project_irr_monthly),
        "equity_irr": ratio4(r.equity_irr),
        "equity_irr_monthly_flows": ratio4(r.equity_irr_monthly),
        "npv": cents(r.npv),
        "equity_npv": cents(r.equity_npv),
        "payback_years": ratio4(r.payback_years),
        "terminal_value": {
            "method": p.scenario.terminal_value.method.value,
            "value": cents(r.terminal_value),
            "tax": cents(r.terminal_value_tax),
            "present_value": cents(r.terminal_value_pv),
            "share_of_npv": ratio4(r.terminal_value_pv / r.npv) if abs(r.npv) > 1e-6 else None,
            "project_irr_without": ratio4(r.project_irr_without_terminal),
            "equity_irr_without": ratio4(r.equity_irr_without_terminal),
            "npv_without": cents(r.npv_without_terminal),
            "equity_npv_without": cents(r.equity_npv_without_terminal),
        },
    }
    if with_breakevens:
        b = breakevens(p)
        out["breakeven_utilization_year1"] = {
            "cash": ratio4(b.cash),
            "full_cost": ratio4(b.full_cost),
            "debt_service": ratio4(b.debt_service),
        }
        out["breakeven_price_per_gpu_hour"] = (
            None if b.price_at_npv_zero is None else round(b.price_at_npv_zero, 4)
        )
    return out


def _concentration(p: Projection) -> dict[str, Any]:
    conc = concentration(p)
    out: dict[str, Any] = {
        "basis": "year-one revenue; unnamed revenue counts as many small customers",
        "customers": {k: ratio4(v) for k, v in conc.shares.items()},
        "top1": ratio4(conc.top1),
        "top2": ratio4(conc.top2),
        "hhi": round(conc.hhi, 1),
        "largest": conc.largest,
        "without_largest": None,
    }
    if conc.largest is not None:
        q = project(p.scenario, without=(conc.largest,))
        out["without_largest"] = summary(q, label=f"without {conc.largest}")
    return out


def summary(p: Projection, *, label: str) -> dict[str, Any]:
    """One line for side-by-side comparisons."""
    c = covers(p)
    r = returns(p)
    return {
        "scenario": label,
        "revenue_year1": cents(p.revenue[:12].sum()),
        "ebitda_year1": cents(p.ebitda[:12].sum()),
        "ebit_year1": cents(p.ebit[:12].sum()),
        "net_income_year1": cents(p.net_income[:12].sum()),
        "net_income_total": cents(p.net_income.sum()),
        "min_dscr": ratio4(c.min_dscr),
        "min_ebit_interest_cover": ratio4(c.min_ebit_interest_cover),
        "years_ebit_negative": int(np.sum(yearly(p.ebit) < 0)),
        "project_irr": ratio4(r.project_irr),
        "equity_irr": ratio4(r.equity_irr),
        "npv": cents(r.npv),
    }


def report(
    s: Scenario, *, stresses: Sequence[str] = (), notes: Sequence[str] = ()
) -> dict[str, Any]:
    """The full report of one scenario, with the named stresses applied on top of it, in order."""
    applied: list[Stress] = [get_stress(name) for name in stresses]
    p = _apply(s, applied)
    return {
        "object": "economics.report",
        "scenario": p.scenario.name,
        "description": p.scenario.description,
        "stresses_applied": [x.name for x in applied],
        "periods": p.scenario.periods.value,
        "assumptions": assumptions(p.scenario),
        "annual": _rows(p, annual=True),
        "monthly": _rows(p, annual=False) if p.scenario.periods is Periods.MONTHLY else None,
        "kpis": kpis(p),
        "concentration": _concentration(p),
        "what_if": what_if(p),
        "notes": [
            "Figures are estimates on floats, rounded to cents here; billing's ledgers use "
            "Decimal.",
            "Annual figures are sums of the monthly engine's months; IRR and NPV use annual "
            "periods (capex at the start, flows at year ends) unless marked monthly.",
            *notes,
        ],
    }


def what_if(p: Projection) -> list[dict[str, Any]]:
    """This projection beside each built-in stress applied on top of it: year-one lines, cover
    and returns (the short book life shows the same cash with a different EBIT)."""
    rows = [summary(p, label="as reported")]
    for name, x in STRESSES.items():
        rows.append(summary(x.run(p.scenario), label=name))
    return rows


def _apply(s: Scenario, applied: Sequence[Stress]) -> Projection:
    return run_stresses(s, applied) if applied else project(s)


def tornado_report(s: Scenario, *, pct: float = 0.2) -> dict[str, Any]:
    """Project NPV with each input moved by ``pct`` down and up (lives by a year)."""
    base = project(s)
    return {
        "metric": "npv",
        "base_npv": cents(npv(s.discount_rate, project_flows(base, annual=True))),
        "base_equity_npv": cents(npv(s.discount_rate, equity_flows(base, annual=True))),
        "bars": [
            {
                "input": b.input,
                "low": b.low_label,
                "high": b.high_label,
                "npv_low": cents(b.npv_low),
                "npv_high": cents(b.npv_high),
                "equity_npv_low": cents(b.equity_npv_low),
                "equity_npv_high": cents(b.equity_npv_high),
                "min_dscr_low": ratio4(b.min_dscr_low),
                "min_dscr_high": ratio4(b.min_dscr_high),
            }
            for b in tornado(s, pct=pct)
        ],
    }


def stress_report(
    s: Scenario, *, paths: int = 10_000, seed: int = 0, pct: float = 0.2
) -> dict[str, Any]:
    """The base case beside every built-in stress, a tornado on NPV, and a Monte Carlo."""
    rows = [summary(project(s), label="base")]
    for name, x in STRESSES.items():
        row = summary(x.run(s), label=name)
        row["description"] = x.description
        rows.append(row)
    mc = monte_carlo(s, MonteCarloSpec(paths=paths, seed=seed))
    return {
        "object": "economics.stress",
        "scenario": s.name,
        "stresses": rows,
        "tornado": tornado_report(s, pct=pct),
        "monte_carlo": {
            "paths": mc.paths,
            "seed": mc.seed,
            "p_dscr_below_1": mc.p_dscr_below_1,
            "p_ebit_interest_cover_below_1": mc.p_interest_cover_below_1,
            "p_either_below_1": mc.p_either_below_1,
            "p_npv_negative": mc.p_npv_negative,
            "min_dscr": {k: ratio4(v) for k, v in mc.min_dscr_percentiles.items()},
            "npv": {k: cents(v) for k, v in mc.npv_percentiles.items()},
            "shocks": "price: log random walk, 15%/yr; utilization: ±10 pts/yr; power price: "
            "20% lognormal level; floating rates: ±200 bp level",
        },
    }
