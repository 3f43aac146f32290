"""Placement: where requests go on the fleet, and when. Pure: plain data in, plain data out.

``PlacementEngine`` holds a snapshot (nodes with their topology path, bookings as intervals)
and an incremental free-capacity index per GPU model and topology domain, and answers
``place``, ``offerings``, ``preempt``, ``replace`` and ``release`` without scanning the fleet.
"""

from neocloud.placement.engine import PlacementEngine
from neocloud.placement.model import (
    DEFAULT_LEVELS,
    Booking,
    BookingClass,
    GangRequest,
    NoCapacity,
    NodeSnapshot,
    Offering,
    OfferingRequest,
    Placement,
    Preemption,
    Replacement,
    Request,
    Resources,
    SliceRequest,
)
from neocloud.placement.policies import POLICIES, UnknownPolicy, get_policy

__all__ = [
    "DEFAULT_LEVELS",
    "POLICIES",
    "Booking",
    "BookingClass",
    "GangRequest",
    "NoCapacity",
    "NodeSnapshot",
    "Offering",
    "OfferingRequest",
    "Placement",
    "PlacementEngine",
    "Preemption",
    "Replacement",
    "Request",
    "Resources",
    "SliceRequest",
    "UnknownPolicy",
    "get_policy",
]
