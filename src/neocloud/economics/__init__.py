"""Operator economics: the fleet's P&L, debt cover and stress tests (pure; no I/O).

Plain data in, plain data out: a ``Scenario`` (cohorts, financing, opex, revenue, tax) is
projected month by month (``projection.project``) into P&L, cash flow and debt balances; ``kpis``
derives cover ratios, breakevens, returns and customer concentration; ``stress`` holds the
built-in stresses, the tornado and the vectorised Monte Carlo; ``report`` turns all of it into
JSON-able dicts; ``live`` builds a scenario from the platform's own records.

It runs on floats (numpy), not Decimal: a projection is an estimate, not a ledger, and the Monte
Carlo needs vectors. Reports round money to cents at the edge.
"""

from neocloud.economics.projection import Projection, project
from neocloud.economics.report import report, stress_report
from neocloud.economics.scenario import Scenario, deep_merge, load_yaml, parse_scenario

__all__ = [
    "Projection",
    "Scenario",
    "deep_merge",
    "load_yaml",
    "parse_scenario",
    "project",
    "report",
    "stress_report",
]
