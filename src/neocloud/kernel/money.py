"""Money on ``Decimal``: never floats, one currency per value, rounding said out loud.

Amounts are bounded: what the platform stores (``NUMERIC(20, 6)``: 14 digits before the point)
is what it computes with. An amount past that bound, or a rounding the decimal context cannot
represent, is ``AmountOutOfRange`` (409 ``amount_out_of_range``, and a ``ValueError`` so schema
validation turns it into a 422), never a bare ``decimal.InvalidOperation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from neocloud.kernel.errors import Conflict

_CENT = Decimal("0.01")
# Exclusive bound on an amount's size: 10^14 in any currency, what ``NUMERIC(20, 6)`` stores.
MAX_AMOUNT = Decimal(10) ** 14
# The currencies prices, invoices and agreements may be in (ISO 4217).
SUPPORTED_CURRENCIES: tuple[str, ...] = ("USD",)


class AmountOutOfRange(Conflict, ValueError):
    """An amount (or a figure computed from stored facts) is too large to represent.

    A ``Conflict``: the request is well formed but the data it reads cannot be billed as it
    stands (409); ``details`` name the amount and, where known, the org. A ``ValueError`` too,
    so a request body carrying such an amount fails validation (422) like any bad value."""

    default_code = "amount_out_of_range"


def check_amount(value: Decimal, *, what: str = "amount") -> Decimal:
    """``value`` if it is finite and its size is below ``MAX_AMOUNT``; else ``AmountOutOfRange``."""
    if not value.is_finite() or abs(value) >= MAX_AMOUNT:
        raise AmountOutOfRange(
            f"{what} {value} is out of range: amounts are below {MAX_AMOUNT:,} in size",
            details={"amount": str(value), "max_amount": format(MAX_AMOUNT, "f")},
        )
    return value


def quantize_amount(
    value: Decimal, quantum: Decimal = Decimal("0.01"), rounding: str = ROUND_HALF_UP
) -> Decimal:
    """``value`` rounded to ``quantum`` (default: the cent), checked against ``MAX_AMOUNT``:
    the one place a billing figure is rounded, so an unrepresentable one is a domain error."""
    check_amount(value)
    try:
        return value.quantize(quantum, rounding=rounding)
    except InvalidOperation:
        raise AmountOutOfRange(
            f"amount {value} cannot be rounded to {quantum}",
            details={"amount": str(value), "quantum": str(quantum)},
        ) from None


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str = "USD"

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            object.__setattr__(self, "amount", to_decimal(self.amount))
        if not self.amount.is_finite():
            raise ValueError("money must be a finite amount")
        check_amount(self.amount)
        if len(self.currency) != 3 or not self.currency.isalpha() or not self.currency.isupper():
            raise ValueError(
                f"currency must be a three-letter ISO 4217 code, not {self.currency!r}"
            )

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str = "USD") -> Money:
        return cls(to_decimal(amount), currency)

    @classmethod
    def zero(cls, currency: str = "USD") -> Money:
        return cls(Decimal(0), currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, factor: int | Decimal) -> Money:
        if isinstance(factor, float):
            raise TypeError("multiply money by Decimal or int, never float")
        return Money(self.amount * Decimal(factor), self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def rounded(self, quantum: Decimal = _CENT, rounding: str = ROUND_HALF_UP) -> Money:
        """Round once, at the edge (an invoice line), never in the middle of a computation."""
        return Money(quantize_amount(self.amount, quantum, rounding), self.currency)

    def to_wire(self) -> dict[str, str]:
        """``{"amount": "12.34", "currency": "USD"}``: a decimal string, never a float."""
        return {"amount": format(self.amount, "f"), "currency": self.currency}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Money:
        return cls(to_decimal(data["amount"]), str(data.get("currency", "USD")))

    def __str__(self) -> str:
        return f"{format(self.amount, 'f')} {self.currency}"


def to_decimal(value: object) -> Decimal:
    """Parse ``value`` as an exact decimal; floats are refused because they are not exact."""
    if isinstance(value, (bool, float)):
        raise TypeError("money amounts are decimal strings or integers, not floats")
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal amount") from None
