"""Placement: where requests go on the fleet, and when. Pure: plain data in, plain data out.

``PlacementEngine(nodes, levels=DEFAULT_LEVELS, policy="default", seed=0, horizon=30 days,
bookings=())`` holds a snapshot (``NodeSnapshot``: GPU model and count, vCPU, RAM, topology
path, eligibility; ``Booking``: ``[start, end)`` intervals of a class and owner) and an
incremental free-capacity index per GPU model and topology domain. Every decision is handed
``now`` (seconds) and reads the index, never the whole fleet:

- ``place(SliceRequest | GangRequest, now=, dry_run=False, allow_preemption=False)`` →
  ``Placement`` or ``NoCapacity`` (reason, code, details, earliest feasible start); a slice of
  ``milli_gpu`` 1-999 shares one GPU of a node with other fractions (its booking names the
  shared GPU in ``gpu_index``), never over-committing it at any instant;
- ``offerings(OfferingRequest, now=)`` → up to k ``Offering`` (start, end, fabric, nodes),
  including starts in a gap between future bookings when the whole duration fits there;
- ``preempt(request, now=)`` → the cheapest spot bookings to evict (``Preemption``), a what-if;
- ``replace(allocation_id, failed_node_id, now=)`` → ``Replacement`` near the failed node;
- ``extend(allocation_id, new_end, now=)`` → the same nodes for longer, all or nothing;
- ``release(allocation_id, now=, node_ids=None)``, ``fail_node``, ``restore_node``,
  ``add_booking`` (load existing state), ``advance(now)``.

Policies are named (``first_fit``, ``random``, ``best_fit``, ``fgd``, ``default``); ``default``
(and ``fgd``) place a gang with a fixed window by best fit in time (``timefit``): on the nodes
whose bookings hug the window, idle nodes last;
``get_policy`` raises ``UnknownPolicy`` (an ``InvalidRequest`` and a ``ValueError``).

Admission of reservations is separate and pure (``placement.admission``): ``decide(policy,
AdmissionRequest, now=, fill=PoolFill, forecast=DemandForecast, fits=, steer_s=)`` admits, steers
to a nearby start, or declines with a reason, by first come first served (``fcfs``) or by bid
prices per pool hour learnt from recent demand (``bid_price``).

Inside, the engine is a facade: ``state.FleetState`` holds the snapshot (nodes, topology,
calendars, index, policy, horizon, now, allocations) and the operations every decision module
shares (``window``, ``node_fits``, ``released``, ``add``/``remove``/``commit``); ``gangs`` turns
a gang request into a shape and a view of the nodes free for it; ``gang_placement``,
``single_node``, ``offerings``, ``preemption``, ``replacement`` and ``extension`` decide on it.
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
