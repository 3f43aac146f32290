"""Economics benchmark: a 10-year monthly projection of a 250,000-GPU fleet (50 cohorts, 20
tranches) and a 10,000-path Monte Carlo on it.

Targets (the economics issue): the projection in under 1 s; the Monte Carlo in under 10 s.
Each run first checks that its result is valid (debt repays, EBITDA - depreciation = EBIT,
probabilities in [0, 1]) and then times the median of several repeats.

Rerun:  make bench-economics     (or .venv/bin/python bench/economics/bench_economics.py)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import date
from typing import Any

import numpy as np

from neocloud.economics import Scenario, parse_scenario, project
from neocloud.economics.kpis import covers, returns
from neocloud.economics.projection import yearly
from neocloud.economics.stress import MonteCarloSpec, monte_carlo

MODELS = [
    ("H100", 10.2, 343_980.0, 2.0),
    ("H200", 10.8, 390_000.0, 2.6),
    ("B200", 14.3, 520_000.0, 3.8),
]


def big_fleet() -> Scenario:
    """250,000 GPUs: 50 cohorts of 625 8-GPU nodes, bought monthly over 50 months, with
    MACRS, straight-line and book tax depreciation; 20 tranches mixing annuity, straight-line
    and bullet, annual to monthly payments, delayed draws, fixed rates and SOFR + spread on a
    monthly curve (re-amortised at each reset); hourly classes per model, a few contracts;
    21% tax with an 80% loss offset limit and deferred tax; an economic-life terminal value."""
    cohorts: list[dict[str, Any]] = []
    for i in range(50):
        name, kw, capex, _ = MODELS[i % 3]
        year, month = divmod(i, 12)
        cohorts.append(
            {
                "name": f"c{i:02d}-{name}",
                "gpu_model": name,
                "nodes": 625,
                "gpus_per_node": 8,
                "capex_per_node": capex,
                "in_service": date(2026 + year, month + 1, 1),
                "book_life_years": 6,
                "economic_life_years": 5 + (i % 3),
                "salvage_fraction": 0.05,
                "kw_per_node": kw,
                "power_delay_months": i % 4,
                "tax_depreciation": ["macrs", "straight_line", "book"][i % 3],
                "tax_life_years": 5,
            }
        )
    kinds = ["annuity", "straight_line", "bullet"]
    tranches = [
        {
            "name": f"t{j:02d}",
            "principal": 0.45e9 * (1 + j % 3) / 2,
            **(
                {"floating": True, "reference": "sofr", "spread": 0.03 + 0.004 * j, "floor": 0.0}
                if j % 2 == 0
                else {"rate": 0.07 + 0.004 * j}
            ),
            "term_years": 3 + j % 5,
            "amortisation": kinds[j % 3],
            "payments_per_year": [1, 2, 4, 12][j % 4],
            "draw": date(2026 + j // 8, (j % 12) + 1, 1),
        }
        for j in range(20)
    ]
    classes = [
        {"name": f"{name} hourly", "gpu_model": name, "price_per_gpu_hour": price,
         "utilization": 0.75, "customers": {f"{name}-anchor": 0.3}}
        for name, _, _, price in MODELS
    ]  # fmt: skip
    contracts = [
        {"customer": f"lab-{k}", "gpus": 4000, "price_per_gpu_hour": 2.2, "months": 36,
         "start": date(2026, 1 + k, 1), "kind": ["take_or_pay", "prepaid", "backstop"][k % 3],
         "prepaid_fraction": 0.3, "backstop_price_per_gpu_hour": 1.0, "utilization": 0.7}
        for k in range(6)
    ]  # fmt: skip
    return parse_scenario(
        {
            "name": "250k-gpus",
            "start": date(2026, 1, 1),
            "horizon_years": 10,
            "periods": "monthly",
            "tax_rate": 0.21,
            "tax_loss_offset_limit": 0.8,
            "terminal_value": {"method": "economic_life"},
            "cohorts": cohorts,
            "reference_rates": {"sofr": {"monthly": [0.043 - 0.0002 * m for m in range(120)]}},
            "financing": tranches,
            "opex": {
                "pue": 1.25,
                "power_price_per_kwh": 0.08,
                "colocation_per_kw_month": 150,
                "staff_per_year": 40e6,
                "maintenance_fraction_per_year": 0.02,
            },
            "revenue": {"classes": classes, "contracts": contracts},
        }
    )


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    s = big_fleet()
    assert s.gpus == 250_000
    assert len(s.cohorts) == 50
    assert len(s.financing) == 20

    p = project(s)  # validity first
    assert p.revenue.shape == (120,)
    np.testing.assert_allclose(p.ebitda - p.ops.depreciation, p.ebit)
    repaid = sum(t.principal or 0.0 for t in s.financing)
    assert abs(float(p.principal_paid.sum()) - repaid) < 1e-3 * repaid
    np.testing.assert_allclose(yearly(p.tax), 0.21 * yearly(p.ebt), rtol=1e-9, atol=1e-3)
    assert float(np.abs(p.deferred_tax).sum()) > 0  # MACRS and straight-line cohorts
    assert p.terminal_value > 0
    mc = monte_carlo(s, MonteCarloSpec(paths=args.paths, seed=0))
    assert 0.0 <= mc.p_either_below_1 <= 1.0
    assert mc.paths == args.paths

    projection_s = _median_time(lambda: project(s), args.repeats)
    kpis_s = _median_time(lambda: (covers(project(s)), returns(project(s))), args.repeats)
    mc_s = _median_time(
        lambda: monte_carlo(s, MonteCarloSpec(paths=args.paths, seed=0)), max(1, args.repeats // 2)
    )
    print(
        f"economics benchmark ({platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__})"
    )
    print(
        f"fleet: {s.gpus:,} GPUs, {len(s.cohorts)} cohorts, {len(s.financing)} tranches, 120 months"
    )
    rows = [
        ("10-year monthly projection", projection_s, 1.0),
        ("projection + cover ratios + IRR/NPV", kpis_s, 1.0),
        (f"Monte Carlo, {args.paths:,} paths", mc_s, 10.0),
    ]
    print(f"{'measurement':<40} {'figure':>10} {'target':>10}  result")
    for name, seconds, target in rows:
        verdict = "met" if seconds < target else "MISSED"
        print(f"{name:<40} {seconds * 1000:>8.1f}ms {'< ' + str(target) + ' s':>10}  {verdict}")
    print(
        f"(Monte Carlo: P(DSCR < 1 in any year) {mc.p_dscr_below_1:.1%}, "
        f"P(EBIT/interest < 1) {mc.p_interest_cover_below_1:.1%})"
    )
    return 0 if all(seconds < target for _, seconds, target in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
