"""`from workers.selector import Selector, Strategy, NoCapacity`: the selector's public names, a
fixed interface of the project (DESIGN.md), re-exported from `workers.capacity.selector`."""

from workers.capacity.selector import (
    INBOUND_STRATEGY,
    CapacityStoreUnavailable,
    Cast,
    CastMember,
    Lease,
    NoCapacity,
    Selector,
    Strategy,
)

__all__ = [
    "INBOUND_STRATEGY",
    "CapacityStoreUnavailable",
    "Cast",
    "CastMember",
    "Lease",
    "NoCapacity",
    "Selector",
    "Strategy",
]
