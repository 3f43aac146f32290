"""Time value of money: NPV, IRR (robust, ``None`` where undefined), payback.

Cash flows are sequences indexed by period: ``flows[0]`` happens now, ``flows[t]`` at the end
of period ``t``. Rates are per period.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Flows = Sequence[float] | npt.NDArray[np.float64]

# IRR search range per period: -99% .. +1000%. A grid finds every sign change of NPV(r), then
# bisection polishes each root; no Newton step can run off to a spurious root.
_LOW, _HIGH = -0.99, 10.0
_GRID = np.concatenate(
    [np.linspace(_LOW, 1.0, 2000, endpoint=False), np.geomspace(1.0, _HIGH, 400)]
)


def npv(rate: float, flows: Flows) -> float:
    """Net present value at ``rate`` per period, ``flows[0]`` undiscounted."""
    values = np.asarray(flows, dtype=np.float64)
    with np.errstate(over="ignore"):
        discount = (1.0 + rate) ** -np.arange(values.size, dtype=np.float64)
        return float(values @ discount)


def _npv_grid(
    values: npt.NDArray[np.float64], rates: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    # Scaled by the largest flow so that long series neither overflow nor underflow.
    periods = np.arange(values.size, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        factors = (1.0 + rates[:, None]) ** -periods[None, :]
        result: npt.NDArray[np.float64] = factors @ values
    return result


def irr(flows: Flows, *, guess: float = 0.1) -> float | None:
    """The internal rate of return per period, or ``None`` when there is none.

    ``None`` when the flows never change sign or NPV(r) has no root in (-99%, +1000%). When
    there are several roots (flows that change sign more than once), the one nearest ``guess``
    is returned, as numpy-financial does.
    """
    values = np.asarray(flows, dtype=np.float64)
    if values.size < 2 or not (np.any(values > 0) and np.any(values < 0)):
        return None
    scale = float(np.max(np.abs(values)))
    values = values / scale
    grid = _GRID
    npvs = _npv_grid(values, grid)
    roots: list[float] = []
    for i in range(grid.size - 1):
        a, b = npvs[i], npvs[i + 1]
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        if a == 0.0:
            roots.append(float(grid[i]))
        elif (a < 0.0) != (b < 0.0) and b != 0.0:
            roots.append(_bisect(values, float(grid[i]), float(grid[i + 1]), float(a)))
    if npvs[-1] == 0.0:
        roots.append(float(grid[-1]))
    if not roots:
        return None
    return min(roots, key=lambda r: abs(r - guess))


def _bisect(values: npt.NDArray[np.float64], low: float, high: float, f_low: float) -> float:
    for _ in range(200):
        mid = 0.5 * (low + high)
        f_mid = npv(mid, values)
        if f_mid == 0.0 or high - low < 1e-14:
            return mid
        if (f_mid < 0.0) == (f_low < 0.0):
            low, f_low = mid, f_mid
        else:
            high = mid
    return 0.5 * (low + high)


def annualize(rate: float | None, periods_per_year: int) -> float | None:
    """A per-period rate as an effective annual rate."""
    if rate is None:
        return None
    return float((1.0 + rate) ** periods_per_year - 1.0)


def payback_periods(flows: Flows) -> float | None:
    """Periods until cumulative cash turns non-negative for good, interpolated within the
    period; ``None`` if it never does within the flows."""
    values = np.asarray(flows, dtype=np.float64)
    cumulative = np.cumsum(values)
    if cumulative[-1] < 0:
        return None
    negative = np.nonzero(cumulative < 0)[0]
    if negative.size == 0:
        return 0.0
    last = int(negative[-1])  # cumulative < 0 at the end of period `last`, >= 0 after
    step = values[last + 1]
    return float(last + (-cumulative[last] / step if step else 1.0))


def annuity_payment(principal: float, rate: float, periods: int) -> float:
    """Level payment that repays ``principal`` over ``periods`` at ``rate`` per period."""
    if periods <= 0:
        raise ValueError("periods must be positive")
    if rate == 0:
        return principal / periods
    return principal * rate / (1.0 - (1.0 + rate) ** -periods)
