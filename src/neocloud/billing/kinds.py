"""The names billing stores, defined once: contract kinds, invoice line kinds, invoice states.

Each is a ``StrEnum``: a member is its stored string (``LineKind.TRUE_UP == "true_up"``), so
rows, credit-note JSON and API output read the same as the plain strings did. Pure: no imports.
"""

from __future__ import annotations

from enum import StrEnum


class ContractKind(StrEnum):
    """What an operator records for an org (``ContractRow.kind``)."""

    COMMIT_SPEND = "commit_spend"  # an amount per month, trued up when short
    COMMIT_CAPACITY = "commit_capacity"  # GPUs x hours x rate, trued up when short
    PREPAID = "prepaid"  # paid upfront, drawn down by usage
    RESERVATION = "reservation"  # compute's reservation at the reserved price
    BACKSTOP = "backstop"  # a third party pays for unsold capacity: never an invoice line


class ReservationBilling(StrEnum):
    """When a reservation contract is charged (``ContractRow.billing``)."""

    UPFRONT = "upfront"  # once, in the month it starts
    MONTHLY = "monthly"  # each month for the part of it in that month


class LineKind(StrEnum):
    """An invoice line's (and a credit note line's) ``kind``."""

    USAGE = "usage"  # rated usage of the invoice's month
    ADJUSTMENT = "adjustment"  # late facts of an earlier, finalized month
    RESERVATION = "reservation"  # a reservation contract's charge
    RESERVED_USAGE = "reserved_usage"  # the usage that charge already pays (negative)
    TRUE_UP = "true_up"  # take-or-pay: a commitment's shortfall
    PREPAYMENT = "prepaid"  # a prepaid contract billed in the month it starts
    DRAWDOWN = "drawdown"  # usage paid from a prepaid balance (negative)
    CREDIT = "credit"  # a credit grant applied (negative)
    RESTORED = "restored"  # a credit note giving back credit or prepaid balance


class InvoiceState(StrEnum):
    """An invoice is a draft, rebuilt from the facts on demand, until it is finalized."""

    DRAFT = "draft"
    FINALIZED = "finalized"
