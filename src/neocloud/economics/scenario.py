"""The inputs of a projection: cohorts, financing, opex, revenue, tax (a scenario).

A scenario is plain data. It is parsed from a mapping (a YAML document or an API body) with the
same validation everywhere, so an error names the field (``cohorts.0.nodes``) whether it came
from a file or from HTTP. Money amounts here are floats in the scenario's currency: a projection
is an estimate over years, not a ledger, so it runs on floats (and numpy, for the vectorised
Monte Carlo) and reports round to cents at the edge. Billing, which is a ledger, uses Decimal.

Units: money in currency units, power in kW per node, prices per GPU-hour, rates as fractions
per year (0.11 is 11%), lives in years, dates as calendar dates (only year and month count: the
engine runs in whole months).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neocloud.kernel.errors import ValidationFailed


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Amortisation(StrEnum):
    ANNUITY = "annuity"  # level payments (principal + interest)
    STRAIGHT_LINE = "straight_line"  # equal principal, falling interest
    BULLET = "bullet"  # interest only, principal at maturity


class ContractKind(StrEnum):
    TAKE_OR_PAY = "take_or_pay"  # the customer pays for its GPUs whether it uses them or not
    PREPAID = "prepaid"  # as take-or-pay, with part of the contract value paid up front
    BACKSTOP = "backstop"  # used hours at the price; a backstop party pays unused hours


class Periods(StrEnum):
    ANNUAL = "annual"
    MONTHLY = "monthly"


class TaxDepreciation(StrEnum):
    BOOK = "book"  # as the books: no temporary difference, no deferred tax
    STRAIGHT_LINE = "straight_line"  # full cost over tax_life_years, monthly from in service
    MACRS = "macrs"  # 200% declining balance, half-year convention, switching to straight line


class TerminalMethod(StrEnum):
    NONE = "none"  # the fleet is worth nothing at the horizon
    SALVAGE = "salvage"  # cohorts still in service sold for their salvage value
    ECONOMIC_LIFE = "economic_life"  # cost falling straight-line to salvage over economic life
    BOOK_VALUE = "book_value"  # the cohorts' net book value
    EXIT_MULTIPLE = "exit_multiple"  # a multiple of the last twelve months' EBITDA


class Cohort(_Model):
    """Nodes of one GPU model bought together."""

    name: str = Field(min_length=1, max_length=100)
    gpu_model: str = Field(min_length=1, max_length=64)
    nodes: int = Field(ge=0)
    gpus_per_node: int = Field(ge=1, le=1024)
    # A number, or its parts ({node: 310000, switches: 13500, …}) which are summed.
    capex_per_node: float | dict[str, float]
    in_service: date
    book_life_years: float = Field(gt=0, le=30)
    economic_life_years: float = Field(gt=0, le=30)
    salvage_fraction: float = Field(0.0, ge=0, le=1)
    kw_per_node: float = Field(ge=0)
    # Months the cohort waits for power after purchase: capex and debt on time, revenue late.
    power_delay_months: int = Field(0, ge=0, le=120)
    # Tax depreciation, from the in-service month; ``book`` unless given (no deferred tax).
    tax_depreciation: TaxDepreciation = TaxDepreciation.BOOK
    tax_life_years: float | None = Field(None, gt=0, le=40, description="default: book life")
    bonus_depreciation: float = Field(0.0, ge=0, le=1, description="share of cost expensed")

    @property
    def node_capex(self) -> float:
        if isinstance(self.capex_per_node, dict):
            return float(sum(self.capex_per_node.values()))
        return float(self.capex_per_node)

    @property
    def capex(self) -> float:
        return self.node_capex * self.nodes

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class RateStep(_Model):
    start: date
    rate: float = Field(ge=-0.05, le=1)


class ReferenceCurve(_Model):
    """A reference rate (SOFR, EURIBOR) month by month, as annual fractions: ``monthly`` lists
    one rate per month from the scenario's start (the last one holds after it); ``steps`` sets
    a rate from each date on (the first step's rate also holds before its date)."""

    monthly: list[float] | None = Field(None, min_length=1, max_length=1200)
    steps: list[RateStep] | None = Field(None, min_length=1, max_length=1200)

    @model_validator(mode="after")
    def _check(self) -> ReferenceCurve:
        if (self.monthly is None) == (self.steps is None):
            raise ValueError("give exactly one of monthly and steps")
        if self.monthly is not None and any(not -0.05 <= r <= 1 for r in self.monthly):
            raise ValueError("monthly rates must lie between -0.05 and 1")
        if self.steps is not None and any(
            a.start >= b.start for a, b in zip(self.steps, self.steps[1:], strict=False)
        ):
            raise ValueError("steps must be in date order, one per date")
        return self


class Tranche(_Model):
    """One loan. ``principal`` is absolute; else ``ltv`` x capex. An ``ltv`` tranche without a
    ``draw`` date is drawn as capex is paid (one draw per purchase month, each repaid over the
    term from its own draw); with a date, or with a ``principal``, it is drawn once then.

    Fixed: ``rate``. Floating: ``reference`` (a curve of the scenario's ``reference_rates``)
    plus ``spread``, the reference floored at ``floor`` if given, fixed at the start of each
    payment period (a term rate set in advance); an annuity is re-amortised at each reset. A
    floating tranche without a reference keeps ``rate`` as its all-in rate."""

    name: str = Field(min_length=1, max_length=100)
    principal: float | None = Field(None, ge=0)
    ltv: float | None = Field(None, ge=0, le=1)
    rate: float | None = Field(None, ge=0, le=1, description="fixed (or all-in floating) rate")
    floating: bool = False
    reference: str | None = Field(None, min_length=1, max_length=64)
    spread: float = Field(0.0, ge=-0.05, le=1)
    floor: float | None = Field(None, ge=-0.05, le=1, description="on the reference rate")
    term_years: float = Field(gt=0, le=40)
    amortisation: Amortisation = Amortisation.ANNUITY
    payments_per_year: int = Field(1, description="1, 2, 4 or 12")
    draw: date | None = Field(None, description="delayed draw date (default: the start)")

    @model_validator(mode="after")
    def _check(self) -> Tranche:
        if (self.principal is None) == (self.ltv is None):
            raise ValueError("give exactly one of principal and ltv")
        if self.reference is None and self.rate is None:
            raise ValueError("give a rate, or a reference rate and a spread")
        if self.reference is not None and (self.rate is not None or not self.floating):
            raise ValueError("a tranche on a reference rate is floating: set floating, no rate")
        if self.payments_per_year not in (1, 2, 4, 12):
            raise ValueError("payments_per_year must be 1, 2, 4 or 12")
        months = self.term_years * 12
        if abs(months - round(months)) > 1e-6 or round(months) % (12 // self.payments_per_year):
            raise ValueError("term_years must be a whole number of payment periods")
        return self


class Opex(_Model):
    pue: float = Field(1.0, ge=1, le=5)
    power_price_per_kwh: float = Field(0.0, ge=0)
    colocation_per_kw_month: float = Field(0.0, ge=0, description="on IT kW (before PUE)")
    staff_per_year: float = Field(0.0, ge=0)
    maintenance_fraction_per_year: float = Field(0.0, ge=0, le=1, description="of capex")


class RevenueClass(_Model):
    """Capacity sold by the hour: a ``share`` of the uncontracted GPUs, at a price and a use."""

    name: str = Field(min_length=1, max_length=100)
    price_per_gpu_hour: float = Field(ge=0)
    utilization: float = Field(ge=0, le=1)
    share: float = Field(1.0, ge=0, le=1)
    gpu_model: str | None = None
    # Named customers' shares of this class's revenue; the rest is many small customers.
    customers: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> RevenueClass:
        if any(v < 0 for v in self.customers.values()) or sum(self.customers.values()) > 1 + 1e-9:
            raise ValueError("customer shares must be non-negative and sum to at most 1")
        return self


class Contract(_Model):
    """A term contract for ``gpus`` GPUs over ``months`` from ``start``."""

    customer: str = Field(min_length=1, max_length=100)
    kind: ContractKind = ContractKind.TAKE_OR_PAY
    gpus: int = Field(ge=0)
    price_per_gpu_hour: float = Field(ge=0)
    start: date | None = None
    months: int = Field(ge=1, le=600)
    gpu_model: str | None = None
    utilization: float = Field(1.0, ge=0, le=1, description="backstop: the share used")
    backstop_price_per_gpu_hour: float = Field(0.0, ge=0)
    prepaid_fraction: float = Field(0.0, ge=0, le=1, description="prepaid: paid at the start")


class Revenue(_Model):
    classes: list[RevenueClass] = Field(default_factory=list)
    contracts: list[Contract] = Field(default_factory=list)


class TerminalValue(_Model):
    """What the fleet is worth at the horizon's end: counted in project and equity IRR and NPV
    (equity after repaying the debt still owed) and reported separately. An asset sale is taxed
    on its gain over the remaining tax basis; an exit multiple (a sale of the business) is not
    taxed here."""

    method: TerminalMethod = TerminalMethod.NONE
    ebitda_multiple: float | None = Field(None, gt=0, le=100)

    @model_validator(mode="after")
    def _check(self) -> TerminalValue:
        if (self.method is TerminalMethod.EXIT_MULTIPLE) != (self.ebitda_multiple is not None):
            raise ValueError("ebitda_multiple goes with (and only with) method exit_multiple")
        return self


class Scenario(_Model):
    name: str = Field("scenario", min_length=1, max_length=200)
    description: str = ""
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    start: date
    horizon_years: int = Field(ge=1, le=40)
    periods: Periods = Periods.ANNUAL
    hours_per_year: float = Field(8760.0, gt=0, le=8784)
    discount_rate: float = Field(0.10, gt=-1, le=1)
    tax_rate: float = Field(0.0, ge=0, lt=1)
    # Losses carried forward offset at most this share of a year's taxable profit (US: 0.8).
    tax_loss_offset_limit: float = Field(1.0, gt=0, le=1)
    tax_losses_brought_forward: float = Field(0.0, ge=0)
    # Recognise a deferred tax asset on losses carried forward (false: a full valuation
    # allowance, so losses lower the P&L tax only when they are used).
    deferred_tax_on_losses: bool = True
    terminal_value: TerminalValue = Field(default_factory=TerminalValue)
    cohorts: list[Cohort] = Field(min_length=1)
    reference_rates: dict[str, ReferenceCurve] = Field(default_factory=dict)
    financing: list[Tranche] = Field(default_factory=list)
    opex: Opex = Field(default_factory=Opex)
    revenue: Revenue = Field(default_factory=Revenue)

    @property
    def capex(self) -> float:
        return sum(c.capex for c in self.cohorts)

    @property
    def gpus(self) -> int:
        return sum(c.gpus for c in self.cohorts)

    def month_of(self, when: date) -> int:
        """Whole months from the start to ``when`` (negative: before the start)."""
        return (when.year - self.start.year) * 12 + when.month - self.start.month


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge key by key; lists of named items (cohorts,
    tranches, classes by ``name``; contracts by ``customer``) merge item by item, new names
    appended; other lists and values replace."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        elif isinstance(value, list) and isinstance(current, list):
            merged[key] = _merge_named(current, value)
        else:
            merged[key] = value
    return merged


def _item_key(items: list[Any]) -> str | None:
    for key in ("name", "customer"):
        if items and all(isinstance(i, Mapping) and key in i for i in items):
            return key
    return None


def _merge_named(base: list[Any], override: list[Any]) -> list[Any]:
    key = _item_key(base)
    if key is None or _item_key(override) != key:
        return override
    result = [dict(i) for i in base]
    index = {item[key]: n for n, item in enumerate(result)}
    for item in override:
        if item[key] in index:
            result[index[item[key]]] = deep_merge(result[index[item[key]]], item)
        else:
            result.append(dict(item))
    return result


def parse_scenario(data: Mapping[str, Any]) -> Scenario:
    """Validate a scenario mapping; ``ValidationFailed`` names the first bad field."""
    body = {k: v for k, v in data.items() if k != "base"}
    try:
        scenario = Scenario.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise ValidationFailed(
            f"scenario field {where or '(root)'}: {first['msg']}", param=where
        ) from None
    for i, tranche in enumerate(scenario.financing):
        if tranche.reference is not None and tranche.reference not in scenario.reference_rates:
            raise ValidationFailed(
                f"tranche {tranche.name}: no reference rate {tranche.reference!r} in "
                "reference_rates",
                param=f"financing.{i}.reference",
            )
    return scenario


def load_yaml(text: str, *, source: str = "scenario") -> dict[str, Any]:
    """Parse one YAML document holding a mapping (parsing only: reading files is the caller's)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{source} is not valid YAML: {exc}", param=source) from None
    if not isinstance(data, dict):
        raise ValidationFailed(f"{source} must be a YAML mapping", param=source)
    return data
