"""SDK resource for operator economics: ``client.economics`` (projections, stress, live)."""

from __future__ import annotations

import json
from typing import Any

from neocloud.client.resources import Resource

Obj = dict[str, Any]


def _plain(scenario: Obj) -> Obj:
    """Dates (as YAML parses them) as ISO strings, so the body is plain JSON."""
    result: Obj = json.loads(json.dumps(scenario, default=str))
    return result


class EconomicsResource(Resource):
    def project(self, scenario: Obj, *, stresses: list[str] | None = None) -> Obj:
        """The report of one scenario (a mapping as in ``examples/economics/*.yaml``)."""
        result: Obj = self._c.post(
            "economics/projections", {"scenario": _plain(scenario), "stresses": stresses or []}
        )
        return result

    def stress(self, scenario: Obj, *, paths: int = 10_000, seed: int = 0, pct: float = 0.2) -> Obj:
        result: Obj = self._c.post(
            "economics/stress",
            {"scenario": _plain(scenario), "paths": paths, "seed": seed, "pct": pct},
        )
        return result

    def live(
        self,
        *,
        utilization: float | None = None,
        window_days: int = 30,
        forward_years: int = 5,
        price: float | None = None,
        ltv: float = 0.7,
        rate: float = 0.11,
        stresses: list[str] | None = None,
    ) -> Obj:
        """The platform's own fleet projected forward; utilization measured from allocations
        over the trailing window unless given."""
        result: Obj = self._c.get(
            "economics/live",
            utilization=utilization,
            window_days=window_days,
            forward_years=forward_years,
            price=price,
            ltv=ltv,
            rate=rate,
            stress=stresses or None,
        )
        return result
