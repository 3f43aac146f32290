"""All tables of all contexts, imported so that Alembic sees the whole schema."""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

from neocloud.db.base import Base

# Each context that owns tables lists its tables module here.
TABLE_MODULES = (
    "neocloud.db.tables",
    "neocloud.tenancy.tables",
    "neocloud.fleet.tables",
    "neocloud.compute.tables",
    "neocloud.billing.tables",
    "neocloud.databases.tables",
    "neocloud.studio.tables",
    "neocloud.storage.tables",
)


def all_metadata() -> MetaData:
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return Base.metadata
