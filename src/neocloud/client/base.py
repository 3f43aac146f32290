"""The SDK's entry point: ``Client``, a ``Transport`` with every resource as a typed attribute.

``ApiError`` and ``DEFAULT_URL`` are re-exported from ``neocloud.client.transport``.
"""

from __future__ import annotations

from typing import Any

import httpx

from neocloud.client.billing import (
    BillingReportsResource,
    ContractsResource,
    CreditsResource,
    InvoicesResource,
    PriceBooksResource,
    UsageResource,
)
from neocloud.client.compute import (
    CapacityResource,
    ClustersResource,
    ImagesResource,
    InstancesResource,
    InstanceTypesResource,
    ReservationsResource,
)
from neocloud.client.databases import DatabasesResource
from neocloud.client.economics import EconomicsResource
from neocloud.client.fleet import FleetResource, NodesResource
from neocloud.client.storage import FilesystemsResource, StoragePoolsResource
from neocloud.client.studio import StudioResource
from neocloud.client.tenancy import (
    AuditResource,
    KeysResource,
    OrgsResource,
    ProjectsResource,
    QuotasResource,
    SshKeysResource,
    UsersResource,
)
from neocloud.client.transport import DEFAULT_URL, ApiError, Transport

__all__ = ["DEFAULT_URL", "ApiError", "Client"]


class Client(Transport):
    """A connection to one neocloud API with one key, and its resources."""

    # fleet
    fleet: FleetResource
    nodes: NodesResource
    # tenancy
    orgs: OrgsResource
    projects: ProjectsResource
    users: UsersResource
    keys: KeysResource
    ssh_keys: SshKeysResource
    databases: DatabasesResource
    quotas: QuotasResource
    audit: AuditResource
    # compute
    instance_types: InstanceTypesResource
    instances: InstancesResource
    clusters: ClustersResource
    reservations: ReservationsResource
    capacity: CapacityResource
    images: ImagesResource
    # storage
    storage_pools: StoragePoolsResource
    filesystems: FilesystemsResource
    # economics
    economics: EconomicsResource
    # billing
    price_books: PriceBooksResource
    usage: UsageResource
    invoices: InvoicesResource
    contracts: ContractsResource
    credits: CreditsResource
    billing_reports: BillingReportsResource
    # studio
    studio: StudioResource

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        http: httpx.Client | None = None,
    ) -> None:
        """``http`` lets tests hand in an ``httpx.Client`` (e.g. Starlette's TestClient)."""
        super().__init__(base_url, api_key, timeout=timeout, retries=retries, http=http)
        self.fleet = FleetResource(self)
        self.nodes = NodesResource(self)
        self.orgs = OrgsResource(self)
        self.projects = ProjectsResource(self)
        self.users = UsersResource(self)
        self.keys = KeysResource(self)
        self.ssh_keys = SshKeysResource(self)
        self.databases = DatabasesResource(self)
        self.quotas = QuotasResource(self)
        self.audit = AuditResource(self)
        self.instance_types = InstanceTypesResource(self)
        self.instances = InstancesResource(self)
        self.clusters = ClustersResource(self)
        self.reservations = ReservationsResource(self)
        self.capacity = CapacityResource(self)
        self.images = ImagesResource(self)
        self.economics = EconomicsResource(self)
        self.storage_pools = StoragePoolsResource(self)
        self.filesystems = FilesystemsResource(self)
        self.price_books = PriceBooksResource(self)
        self.usage = UsageResource(self)
        self.invoices = InvoicesResource(self)
        self.contracts = ContractsResource(self)
        self.credits = CreditsResource(self)
        self.billing_reports = BillingReportsResource(self)
        self.studio = StudioResource(self)

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("health")
        return result

    def me(self) -> dict[str, Any]:
        """Who this key is (``GET /api/v1/me``): ``key_id``, ``user_id``, ``org_id``, ``role``
        (its effective role in the org), ``is_operator``, and the ``user`` and ``org`` objects."""
        result: dict[str, Any] = self.get("me")
        return result
