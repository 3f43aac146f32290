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


class Tranche(_Model):
    """One loan. ``principal`` is absolute; else ``ltv`` x capex. An ``ltv`` tranche without a
    ``draw`` date is drawn as capex is paid (one draw per purchase month, each repaid over the
    term from its own draw); with a date, or with a ``principal``, it is drawn once then."""

    name: str = Field(min_length=1, max_length=100)
    principal: float | None = Field(None, ge=0)
    ltv: float | None = Field(None, ge=0, le=1)
    rate: float = Field(ge=0, le=1, description="all-in annual rate (base + spread if floating)")
    floating: bool = False
    term_years: float = Field(gt=0, le=40)
    amortisation: Amortisation = Amortisation.ANNUITY
    payments_per_year: int = Field(1, description="1, 2, 4 or 12")
    draw: date | None = Field(None, description="delayed draw date (default: the start)")

    @model_validator(mode="after")
    def _check(self) -> Tranche:
        if (self.principal is None) == (self.ltv is None):
            raise ValueError("give exactly one of principal and ltv")
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
    cohorts: list[Cohort] = Field(min_length=1)
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
        return Scenario.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise ValidationFailed(
            f"scenario field {where or '(root)'}: {first['msg']}", param=where
        ) from None


def load_yaml(text: str, *, source: str = "scenario") -> dict[str, Any]:
    """Parse one YAML document holding a mapping (parsing only: reading files is the caller's)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{source} is not valid YAML: {exc}", param=source) from None
    if not isinstance(data, dict):
        raise ValidationFailed(f"{source} must be a YAML mapping", param=source)
    return data
