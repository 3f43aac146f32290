"""Resource namespaces on the client (``client.nodes``, ``client.orgs``, …).

Each context adds its resource classes in its own module and registers them in ``RESOURCES``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neocloud.client.base import Client

# attribute name -> "module:Class"
RESOURCES: dict[str, str] = {
    "fleet": "neocloud.client.fleet:FleetResource",
    "nodes": "neocloud.client.fleet:NodesResource",
    "orgs": "neocloud.client.tenancy:OrgsResource",
    "projects": "neocloud.client.tenancy:ProjectsResource",
    "users": "neocloud.client.tenancy:UsersResource",
    "keys": "neocloud.client.tenancy:KeysResource",
    "quotas": "neocloud.client.tenancy:QuotasResource",
    "audit": "neocloud.client.tenancy:AuditResource",
    "instance_types": "neocloud.client.compute:InstanceTypesResource",
    "instances": "neocloud.client.compute:InstancesResource",
    "clusters": "neocloud.client.compute:ClustersResource",
    "reservations": "neocloud.client.compute:ReservationsResource",
    "capacity": "neocloud.client.compute:CapacityResource",
    "economics": "neocloud.client.economics:EconomicsResource",
    "price_books": "neocloud.client.billing:PriceBooksResource",
    "usage": "neocloud.client.billing:UsageResource",
    "invoices": "neocloud.client.billing:InvoicesResource",
    "contracts": "neocloud.client.billing:ContractsResource",
    "credits": "neocloud.client.billing:CreditsResource",
    "billing_reports": "neocloud.client.billing:BillingReportsResource",
    "studio": "neocloud.client.studio:StudioResource",
}


class Resource:
    def __init__(self, client: Client) -> None:
        self._c = client


def attach(client: Client) -> None:
    for name, target in RESOURCES.items():
        module_name, _, cls_name = target.partition(":")
        module = importlib.import_module(module_name)
        setattr(client, name, getattr(module, cls_name)(client))
