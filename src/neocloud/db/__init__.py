"""Database access: engine and transactions, the declarative base, migrations, the leader lease."""

from neocloud.db.base import Base
from neocloud.db.engine import Database, make_engine
from neocloud.db.lease import LeaderLease, lease_holder
from neocloud.db.types import Amount, Json, UtcDateTime

__all__ = [
    "Amount",
    "Base",
    "Database",
    "Json",
    "LeaderLease",
    "UtcDateTime",
    "lease_holder",
    "make_engine",
]
