"""The isolation matrix: every operation of the OpenAPI document by every kind of caller.

The operations are enumerated from the app's OpenAPI document (``/api/v1`` and ``/v1``), so a new
endpoint without a row in ``RULES`` fails this test. Each row says what the operation needs and
how to build its path, query and body from the fixture org's objects (``World``), often a fresh
object per call so a destructive operation allowed to one caller leaves the next one something
to act on. Callers (``CALLERS``): the owner of another org (``outsider``), the fixture org's
``viewer``, ``member``, ``admin`` and ``owner``, operator ``staff`` (a member of the operator
org), the ``operator`` admin, no key (``anon``) and a ``revoked`` key.

Expected answers:
* ``anon`` and ``revoked``: 401 on everything but the public health check;
* a role in the fixture org (``need`` viewer, member, admin, owner): the fixture org's members
  at or above it are served, those below get ``below`` (403, or 404 where the object is not
  theirs to see at all); the outsider gets 404 on the fixture org's objects (``scope="org"``) and
  is served on operations that act in its own org (``scope="own"``); operator staff read every
  org, write none; the operator admin is served everywhere;
* ``staff``: operator staff and admins only (403 to every tenant, whatever the id);
* ``operator``: operator admins only;
* ``agent``: a node's agent token only (the heartbeat): every API key, the operator's too, 401;
* ``any``: every authenticated caller, each over its own org's things.

"Served" means an answer that is not 401, 403 or 404 and not a 5xx. No answer to a caller
outside the fixture org (outsider, no key, revoked key) contains any of the fixture org's ids,
names or emails that the request did not itself carry (a leak). The counts are printed (shown
with ``-s``) and written to ``isolation-matrix-<database>.json`` under pytest's tmp dir;
docs/security.md quotes them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.db.engine import Database
from neocloud.studio.engines.fake import fake_catalog

CALLERS = (
    "outsider",
    "viewer",
    "member",
    "admin",
    "owner",
    "staff",
    "operator",
    "anon",
    "revoked",
)
TENANT_ROLES = ("viewer", "member", "admin", "owner")
RANK = {role: rank for rank, role in enumerate(TENANT_ROLES)}
SERVED = "served"
H100 = "H100-SXM-80GB"

FLEET = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x:
    gpu_model: h100
    gpu_count: 8
    vcpus: 224
    ram_gib: 2048
    nvme_tib: 30
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - name: us-east-1a-ib01
        template: h100-8x
        blocks: 2
        racks_per_block: 2
        nodes_per_rack: 2
"""


class World:
    """The fixture org ("bravo") and its objects, another org ("alpha"), the operator's keys."""

    def __init__(self, http: TestClient, admin_key: str) -> None:
        self.http = http
        self.secrets: dict[str, str | None] = {"operator": admin_key, "anon": None}
        self.counter = itertools.count()
        self.markers: set[str] = set()  # the fixture org's ids, names and emails
        self.build()

    # -- calls ---------------------------------------------------------------------------------

    def call(
        self,
        caller: str,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        secret = self.secrets[caller]
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return self.http.request(method, path, params=query, json=body, headers=headers)

    def ok(self, caller: str, method: str, path: str, body: Any = None, **query: str) -> Any:
        answer = self.call(caller, method, "/api/v1/" + path, query=query or None, body=body)
        assert answer.status_code < 300, (method, path, answer.text)
        return answer.json() if answer.content else None

    def unique(self, stem: str) -> str:
        return f"{stem}-{next(self.counter)}"

    # -- the fixture --------------------------------------------------------------------------

    def build(self) -> None:
        self.ok("operator", "POST", "fleet/imports", {"spec": FLEET})
        self.b = self.ok(
            "operator",
            "POST",
            "orgs",
            {"name": "Bravo Corp", "slug": "bravo", "owner_email": "owner@bravo.example"},
        )["id"]
        a = self.ok(
            "operator",
            "POST",
            "orgs",
            {"name": "Alpha", "slug": "alpha", "owner_email": "owner@alpha.example"},
        )["id"]
        self.operator_org = self.ok("operator", "GET", "me")["org"]["id"]
        users = self.ok("operator", "GET", f"orgs/{self.b}/users")["data"]
        self.users = {"owner": users[0]["id"]}
        self.keys: dict[str, str] = {}
        self.key_for("owner", self.b, self.users["owner"])
        self.key_for("outsider", a, self.ok("operator", "GET", f"orgs/{a}/users")["data"][0]["id"])
        for role in ("viewer", "member", "admin"):
            self.users[role] = self.new_member(role)
            self.key_for(role, self.b, self.users[role])
        staff = self.ok(
            "operator",
            "POST",
            f"orgs/{self.operator_org}/users",
            {"email": "staff@operator.example", "role": "member"},
        )["id"]
        self.key_for("staff", self.operator_org, staff)
        self.key_for("revoked", self.b, self.users["owner"])
        # Used once first, so the gateway's principal cache holds it when it is revoked.
        assert self.call("revoked", "GET", "/v1/models").status_code == 200
        self.ok("operator", "POST", f"keys/{self.keys['revoked']}/revoke")
        self.worker = self.new_member("member")
        self.worker_key = self.ok(
            "operator", "POST", "keys", {"name": "worker", "org_id": self.b, "user_id": self.worker}
        )["id"]
        book = {"effective_from": "2026-03-01T12:00:00Z", "gpu_prices": {f"{H100}.on_demand": "2"}}
        self.ok("operator", "POST", "price-books", book)
        for org in (self.b, a, self.operator_org):
            self.ok("operator", "PUT", f"orgs/{org}/quotas/{H100}", {"limit_gpus": 1000})
        self.project = self.ok(
            "owner", "POST", f"orgs/{self.b}/projects", {"name": "bravo-secret-project"}
        )["id"]
        self.instance = self.new_instance()
        self.cluster = self.new_cluster()
        self.reservation = self.new_reservation()
        self.image = self.new_image()
        self.invoice = self.ok(
            "operator", "POST", "invoices", {"org_id": self.b, "period": "2026-02"}
        )["id"]
        self.contract = self.ok(
            "operator",
            "POST",
            "contracts",
            {
                "org_id": self.b,
                "kind": "commit_spend",
                "amount": "100",
                "start_at": "2026-03-01T00:00:00Z",
                "end_at": "2027-03-01T00:00:00Z",
            },
        )["id"]
        self.credit = self.ok("operator", "POST", "credits", {"org_id": self.b, "amount": "25"})[
            "id"
        ]
        self.node = self.ok("operator", "GET", "nodes", limit="100")["data"][-1]["id"]
        models = self.ok("operator", "GET", "studio/models")["data"]
        self.model = models[0]["id"]
        self.markers |= {
            self.b,
            "Bravo Corp",
            "bravo.example",
            self.project,
            "bravo-secret-project",
        }
        self.markers |= {self.instance, self.cluster, self.reservation, self.invoice}
        self.markers |= {self.contract, self.credit, self.worker_key, *self.users.values()}
        self.markers |= {self.keys[c] for c in TENANT_ROLES}

    def key_for(self, caller: str, org: str, user: str) -> None:
        made = self.ok("operator", "POST", "keys", {"name": caller, "org_id": org, "user_id": user})
        self.secrets[caller] = made["secret"]
        self.keys[caller] = made["id"]

    def new_member(self, role: str = "member") -> str:
        email = f"{self.unique(role)}@bravo.example"
        user: str = self.ok(
            "operator", "POST", f"orgs/{self.b}/users", {"email": email, "role": role}
        )["id"]
        self.markers.add(user)
        return user

    def new_instance(self) -> str:
        made: str = self.ok("owner", "POST", "instances", {"instance_type": "1xH100"})["id"]
        self.markers.add(made)
        return made

    def new_cluster(self) -> str:
        made: str = self.ok("owner", "POST", "clusters", {"gpu_model": H100, "node_count": 1})["id"]
        self.markers.add(made)
        return made

    def new_offering(self) -> str:
        offers = self.ok("owner", "POST", "reservations/offerings", OFFERINGS)["data"]
        self.markers.add(offers[0]["id"])
        return str(offers[0]["id"])

    def new_reservation(self) -> str:
        made: str = self.ok("owner", "POST", "reservations", {"offering_id": self.new_offering()})[
            "id"
        ]
        self.markers.add(made)
        return made

    def new_image(self) -> str:
        """An image of the operator's catalog (not the default, so it can be retired)."""
        body = {"name": self.unique("img"), "os": "Ubuntu 22.04", "drivers": ["sim"]}
        made: str = self.ok("operator", "POST", "images", body)["name"]
        return made

    def new_quota(self) -> str:
        self.ok("operator", "PUT", f"orgs/{self.b}/quotas/A100-SXM-80GB", {"limit_gpus": 1})
        return "A100-SXM-80GB"

    def new_model(self) -> str:
        body = {
            "id": self.unique("ops/model"),
            "upstream_urls": ["http://10.0.0.5:8000/v1"],
            **PRICES,
        }
        return str(self.ok("operator", "POST", "studio/models", body)["id"])


PRICES = {"input_price_per_m": "0.10", "output_price_per_m": "0.30"}
OFFERINGS = {"gpu_model": "H100", "node_count": 1, "duration_hours": 24}
P = Callable[[World], dict[str, str]]
B = Callable[[World], Any]


@dataclass(frozen=True)
class Rule:
    need: str  # "public", "any", a tenant role, "staff", "operator" or "agent"
    scope: str = "org"  # "org": names the fixture org's things; "own": acts in the caller's org
    path: P = field(default=lambda w: {})
    query: P = field(default=lambda w: {})
    body: B | None = None
    below: int = 403  # what a fixture-org member under ``need`` gets
    outsider: int | None = None  # what the other org's owner gets, if not the default
    staff: int | str | None = None  # what operator staff get, if not the default


# Billing's per-org reads refuse operator staff (``require_org_role``: operator admins only in
# another org), though staff read every org's other things and the revenue reports: reported to
# the lead (issue 13); this row records today's answer.
STAFF_BILLING = 403


def _org(w: World) -> dict[str, str]:
    return {"org_id": w.b}


def _public_key() -> str:
    """A fresh ed25519 public key line (one org holds a key once)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().public_key()
    line = raw.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode()


def _database(w: World) -> dict[str, str]:
    """A running database of the fixture org, written straight to the app's database: the
    matrix's fleet has no service node to create one on (tests/nodes/test_databases_e2e.py
    creates real ones)."""
    from neocloud.databases.tables import DatabaseRow
    from neocloud.kernel.ids import new_id

    app: Any = w.http.app
    ctx = app.state.ctx
    now = ctx.clock.now()
    made = new_id("db")
    with ctx.db.transaction() as s:
        s.add(
            DatabaseRow(
                id=made, org_id=w.b, name=w.unique("db").replace("-", "_"), version="15",
                preset="small", storage_gib=1, db_user="app", allowed_cidrs=[],
                state="running", sealed_password="sealed", created_at=now, updated_at=now,
                running_at=now,
            )
        )  # fmt: skip
    w.markers.add(made)
    return {"database_id": made}


def _ssh_key(w: World) -> dict[str, str]:
    """A new SSH key of the fixture org, added by its owner."""
    made: str = w.ok(
        "owner", "POST", "ssh-keys", {"name": w.unique("ssh"), "public_key": _public_key()}
    )["id"]
    w.markers.add(made)
    return {"ssh_key_id": made}


def _new_node(w: World) -> dict[str, Any]:
    """A simulated server to register, in a rack of its own of the fixture fleet's block."""
    host = w.unique("registered")
    return {
        "hostname": host,
        "gpu_model": "H100",
        "gpu_count": 8,
        "vcpus": 224,
        "ram_gib": 2048,
        "topology": {
            "region": "us-east-1",
            "zone": "us-east-1a",
            "fabric": "us-east-1a-ib01",
            "block": "us-east-1a-ib01-b01",
            "rack": f"rack-{host}",
        },
        "driver": "sim",
    }


def _agent_node(w: World) -> dict[str, str]:
    """The fixture node, with an agent token issued (so the operator's revoke has one)."""
    w.ok("operator", "POST", f"nodes/{w.node}/agent-token")
    return {"node_id": w.node}


def _heartbeat(w: World) -> dict[str, Any]:
    return {
        "node_id": w.node,
        "agent_version": "0.1.0",
        "simulated": True,
        "sent_at": "2026-03-01T12:00:00Z",
    }


def _chat(w: World) -> dict[str, Any]:
    return {
        "model": "neocloud/echo",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    }


def _file(w: World) -> dict[str, str]:
    """A new fine-tune file of the fixture org, uploaded by its owner."""
    line = (
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    )
    answer = w.http.post(
        "/v1/files",
        files={"file": ("bravo-train.jsonl", line + b"\n")},
        data={"purpose": "fine-tune"},
        headers={"Authorization": f"Bearer {w.secrets['owner']}"},
    )
    assert answer.status_code == 200, answer.text
    made: str = answer.json()["id"]
    w.markers.add(made)
    return {"file_id": made}


def _batch(w: World) -> dict[str, str]:
    """A new batch of the fixture org (validating), created by its owner."""
    auth = {"Authorization": f"Bearer {w.secrets['owner']}"}
    line = (
        b'{"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions", "body": '
        b'{"model": "neocloud/echo", "messages": [{"role": "user", "content": "hi"}]}}'
    )
    upload = w.http.post(
        "/v1/files",
        files={"file": ("bravo-batch.jsonl", line + b"\n")},
        data={"purpose": "batch"},
        headers=auth,
    )
    assert upload.status_code == 200, upload.text
    body = {
        "input_file_id": upload.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    answer = w.http.post("/v1/batches", json=body, headers=auth)
    assert answer.status_code == 200, answer.text
    made: str = answer.json()["id"]
    w.markers.update((made, body["input_file_id"]))
    return {"batch_id": made}


def _job(w: World) -> dict[str, str]:
    """A fine-tuning job of the fixture org (made through the service: the fake catalog has no
    model to fine-tune, so the API would refuse one)."""
    from decimal import Decimal

    from neocloud.kernel.auth import Principal, Role
    from neocloud.kernel.clock import SystemClock
    from neocloud.studio.finetuning.service import BaseModel, create_job

    owner = Principal(w.keys["owner"], w.users["owner"], w.b, Role.OWNER, is_operator=False)
    base = BaseModel("neocloud/echo", Path("/nonexistent"), Decimal(0), Decimal(0))
    row = create_job(
        db=w.http.app.state.ctx.db,
        clock=SystemClock(),
        principal=owner,
        bases={base.id: base},
        body={"model": base.id, "training_file": _file(w)["file_id"]},
    )
    w.markers.add(row.id)
    return {"job_id": row.id}


def _ft_model(w: World) -> dict[str, str]:
    """A deployed fine-tune of the fixture org (a row: nothing is loaded until it is called)."""
    from datetime import UTC, datetime

    from neocloud.studio.tables import FineTunedModelRow

    name = f"ft:neocloud/echo:{w.b}:{w.unique('m')}:abcd1234"
    with w.http.app.state.ctx.db.transaction() as s:
        s.add(
            FineTunedModelRow(
                id=name,
                org_id=w.b,
                job_id="ftjob-none",
                base_model="neocloud/echo",
                base_path="/nonexistent",
                adapter_path="/nonexistent",
                created_at=datetime(2026, 3, 1, tzinfo=UTC),
            )
        )
    w.markers.add(name)
    return {"model_id": name}


def _fs_pool(w: World) -> str:
    """A local storage pool (no nodes), made once."""
    pool: str | None = getattr(w, "fs_pool", None)
    if pool is None:
        body = {"name": "matrix-local", "backend": "local", "replica": 1}
        pool = str(w.ok("operator", "POST", "storage-pools", body)["id"])
        w.fs_pool = pool  # type: ignore[attr-defined]
    return pool


def _fs(w: World) -> dict[str, str]:
    """A new filesystem of the fixture org, made by its owner."""
    body = {"name": w.unique("fs"), "size_gib": 1, "pool": _fs_pool(w)}
    made: str = w.ok("owner", "POST", "filesystems", body)["id"]
    w.markers.add(made)
    return {"filesystem_id": made}


def _fs_attached(w: World) -> dict[str, str]:
    """A new filesystem attached to the fixture org's instance, and its attachment."""
    fs = _fs(w)
    body = {"instance_id": w.instance, "mount_path": f"/mnt/{w.unique('m')}"}
    att = w.ok("owner", "POST", f"filesystems/{fs['filesystem_id']}/attach", body)
    made: str = att["attachments"][0]["id"]
    w.markers.add(made)
    return {**fs, "attachment_id": made}


RULES: dict[str, Rule] = {
    "GET /api/v1/health": Rule("public"),
    "GET /api/v1/me": Rule("any"),
    # orgs, projects, users
    "POST /api/v1/orgs": Rule("operator", body=lambda w: {"name": w.unique("org")}),
    "GET /api/v1/orgs": Rule("any"),
    "GET /api/v1/orgs/{org_id}": Rule("viewer", path=_org),
    "PATCH /api/v1/orgs/{org_id}": Rule("admin", path=_org, body=lambda w: {"name": "Bravo Corp"}),
    "POST /api/v1/orgs/{org_id}/projects": Rule(
        "admin", path=_org, body=lambda w: {"name": w.unique("p")}
    ),
    "GET /api/v1/orgs/{org_id}/projects": Rule("viewer", path=_org),
    "GET /api/v1/projects/{project_id}": Rule("viewer", path=lambda w: {"project_id": w.project}),
    "POST /api/v1/orgs/{org_id}/users": Rule(
        "admin", path=_org, body=lambda w: {"email": f"{w.unique('u')}@bravo.example"}
    ),
    "GET /api/v1/orgs/{org_id}/users": Rule("viewer", path=_org),
    "PATCH /api/v1/orgs/{org_id}/users/{user_id}": Rule(
        "admin",
        path=lambda w: {"org_id": w.b, "user_id": w.new_member()},
        body=lambda w: {"role": "viewer"},
    ),
    "DELETE /api/v1/orgs/{org_id}/users/{user_id}": Rule(
        "admin", path=lambda w: {"org_id": w.b, "user_id": w.new_member()}
    ),
    # keys: another member's keys are not even visible below admin
    "POST /api/v1/keys": Rule(
        "admin", body=lambda w: {"name": "k", "org_id": w.b, "user_id": w.worker}
    ),
    "GET /api/v1/keys": Rule("admin", query=_org),
    "GET /api/v1/keys/{key_id}": Rule("admin", path=lambda w: {"key_id": w.worker_key}, below=404),
    "POST /api/v1/keys/{key_id}/revoke": Rule(
        "admin", path=lambda w: {"key_id": w.worker_key}, below=404, staff=403
    ),
    # ssh keys: members add them to their own org; everyone in the org reads them; the key's
    # owner (here the org's owner, an admin too) or an org admin deletes one
    "POST /api/v1/ssh-keys": Rule(
        "member", scope="own", body=lambda w: {"name": w.unique("k"), "public_key": _public_key()}
    ),
    "GET /api/v1/ssh-keys": Rule("viewer", query=_org),
    "GET /api/v1/ssh-keys/{ssh_key_id}": Rule("viewer", path=_ssh_key),
    "DELETE /api/v1/ssh-keys/{ssh_key_id}": Rule("admin", path=_ssh_key),
    # managed databases: members create, back up and delete in their own org; everyone in it
    # reads them (the password is in the create answer only)
    "GET /api/v1/database-options": Rule("any"),
    "POST /api/v1/databases": Rule(
        "member",
        scope="own",
        body=lambda w: {
            "name": w.unique("db").replace("-", "_"),
            "version": "15",
            "storage_gib": 1,
        },
    ),
    "GET /api/v1/databases": Rule("viewer", scope="own"),
    "GET /api/v1/databases/{database_id}": Rule("viewer", path=_database),
    "DELETE /api/v1/databases/{database_id}": Rule("member", path=_database),
    "POST /api/v1/databases/{database_id}/backups": Rule("member", path=_database),
    "GET /api/v1/databases/{database_id}/backups": Rule("viewer", path=_database),
    "GET /api/v1/databases/{database_id}/ca": Rule("viewer", path=_database),
    # quotas
    "GET /api/v1/orgs/{org_id}/quotas": Rule("viewer", path=_org),
    "PUT /api/v1/orgs/{org_id}/quotas/{gpu_model}": Rule(
        "operator",
        path=lambda w: {"org_id": w.b, "gpu_model": H100},
        body=lambda w: {"limit_gpus": 1000},
    ),
    "DELETE /api/v1/orgs/{org_id}/quotas/{gpu_model}": Rule(
        "operator", path=lambda w: {"org_id": w.b, "gpu_model": w.new_quota()}
    ),
    "GET /api/v1/quota-defaults": Rule("any"),
    "PUT /api/v1/quota-defaults/{gpu_model}": Rule(
        "operator",
        scope="own",
        path=lambda w: {"gpu_model": H100},
        body=lambda w: {"limit_gpus": 8},
    ),
    "GET /api/v1/audit-events": Rule("admin", query=_org),
    # fleet: the operator's
    "GET /api/v1/gpu-models": Rule("any"),
    "GET /api/v1/gpu-models/{model}": Rule("any", path=lambda w: {"model": H100}),
    "GET /api/v1/nodes": Rule("staff"),
    "POST /api/v1/nodes": Rule("operator", body=lambda w: _new_node(w)),
    "GET /api/v1/nodes/{node_id}": Rule("staff", path=lambda w: {"node_id": w.node}),
    "GET /api/v1/nodes/{node_id}/events": Rule("staff", path=lambda w: {"node_id": w.node}),
    "GET /api/v1/nodes/{node_id}/health-checks": Rule("staff", path=lambda w: {"node_id": w.node}),
    **{
        f"POST /api/v1/nodes/{{node_id}}/{action}": Rule(
            "operator", path=lambda w: {"node_id": w.node}, body=lambda w: {}
        )
        for action in ("cordon", "uncordon", "drain", "retire")
    },
    "POST /api/v1/nodes/{node_id}/transition": Rule(
        "operator", path=lambda w: {"node_id": w.node}, body=lambda w: {"to": "maintenance"}
    ),
    "POST /api/v1/nodes/{node_id}/health": Rule(
        "operator",
        path=lambda w: {"node_id": w.node},
        body=lambda w: {"checks": [{"name": "gpu", "status": "pass"}]},
    ),
    "GET /api/v1/nodes/{node_id}/health": Rule("staff", path=lambda w: {"node_id": w.node}),
    # power and inventory through the node's driver (the fixture's nodes are simulated)
    "POST /api/v1/nodes/{node_id}/power": Rule(
        "operator", path=lambda w: {"node_id": w.node}, body=lambda w: {"action": "on"}
    ),
    "GET /api/v1/nodes/{node_id}/inspect": Rule("staff", path=lambda w: {"node_id": w.node}),
    # the node agent: tokens are the operator's to give; the heartbeat takes no API key at all
    "POST /api/v1/nodes/{node_id}/agent-token": Rule(
        "operator", path=lambda w: {"node_id": w.node}
    ),
    "DELETE /api/v1/nodes/{node_id}/agent-token": Rule("operator", path=_agent_node),
    "POST /api/v1/agent/heartbeat": Rule("agent", body=_heartbeat),
    "GET /api/v1/fleet/summary": Rule("staff"),
    "GET /api/v1/fleet/topology": Rule("staff"),
    "POST /api/v1/fleet/imports": Rule("operator", body=lambda w: {"spec": FLEET}),
    # compute
    "GET /api/v1/instance-types": Rule("any"),
    "POST /api/v1/instances": Rule(
        "member", scope="own", body=lambda w: {"instance_type": "1xH100"}
    ),
    "GET /api/v1/instances": Rule("any"),
    "GET /api/v1/instances/{instance_id}": Rule(
        "viewer", path=lambda w: {"instance_id": w.instance}
    ),
    "GET /api/v1/instances/{instance_id}/metrics": Rule(
        "viewer", path=lambda w: {"instance_id": w.instance}
    ),
    "POST /api/v1/instances/{instance_id}/terminate": Rule(
        "member", path=lambda w: {"instance_id": w.new_instance()}
    ),
    # reboot: served is 409 here, as the fixture's instances never run (no worker)
    "POST /api/v1/instances/{instance_id}/reboot": Rule(
        "member", path=lambda w: {"instance_id": w.instance}
    ),
    "GET /api/v1/instances/{instance_id}/events": Rule(
        "viewer", path=lambda w: {"instance_id": w.instance}
    ),
    "POST /api/v1/clusters": Rule(
        "member", scope="own", body=lambda w: {"gpu_model": H100, "node_count": 1}
    ),
    "GET /api/v1/clusters": Rule("any"),
    "GET /api/v1/clusters/{cluster_id}": Rule("viewer", path=lambda w: {"cluster_id": w.cluster}),
    "GET /api/v1/clusters/{cluster_id}/topology": Rule(
        "viewer", path=lambda w: {"cluster_id": w.cluster}, query=lambda w: {"format": "k8s-labels"}
    ),
    "POST /api/v1/clusters/{cluster_id}/terminate": Rule(
        "member", path=lambda w: {"cluster_id": w.new_cluster()}
    ),
    "GET /api/v1/clusters/{cluster_id}/events": Rule(
        "viewer", path=lambda w: {"cluster_id": w.cluster}
    ),
    "GET /api/v1/clusters/{cluster_id}/hosts": Rule(
        "viewer", path=lambda w: {"cluster_id": w.cluster}, query=lambda w: {"format": "hostfile"}
    ),
    "POST /api/v1/reservations/offerings": Rule("member", scope="own", body=lambda w: OFFERINGS),
    # an offering is its org's alone: operator staff do not buy one for a tenant
    "POST /api/v1/reservations": Rule(
        "member", body=lambda w: {"offering_id": w.new_offering()}, staff=404
    ),
    "GET /api/v1/reservations": Rule("any"),
    "GET /api/v1/reservations/{reservation_id}": Rule(
        "viewer", path=lambda w: {"reservation_id": w.reservation}
    ),
    "POST /api/v1/reservations/{reservation_id}/cancel": Rule(
        "admin", path=lambda w: {"reservation_id": w.new_reservation()}
    ),
    "POST /api/v1/reservations/{reservation_id}/extend": Rule(
        "member", path=lambda w: {"reservation_id": w.reservation}, body=lambda w: {"hours": 1}
    ),
    "GET /api/v1/reservations/{reservation_id}/events": Rule(
        "viewer", path=lambda w: {"reservation_id": w.reservation}
    ),
    "GET /api/v1/capacity": Rule("any"),
    # storage: operator admins make pools, everyone reads them; filesystems are the org's
    "POST /api/v1/storage-pools": Rule(
        "operator", body=lambda w: {"name": w.unique("pool"), "backend": "local", "replica": 1}
    ),
    "GET /api/v1/storage-pools": Rule("any"),
    "GET /api/v1/storage-pools/{pool_id}": Rule("any", path=lambda w: {"pool_id": _fs_pool(w)}),
    "DELETE /api/v1/storage-pools/{pool_id}": Rule(
        "operator",
        path=lambda w: {
            "pool_id": w.ok(
                "operator",
                "POST",
                "storage-pools",
                {"name": w.unique("pool"), "backend": "local", "replica": 1},
            )["id"]
        },
    ),
    "POST /api/v1/filesystems": Rule(
        "member",
        scope="own",
        body=lambda w: {"name": w.unique("fs"), "size_gib": 1, "pool": _fs_pool(w)},
    ),
    "GET /api/v1/filesystems": Rule("any"),
    "GET /api/v1/filesystems/{filesystem_id}": Rule("viewer", path=_fs),
    "POST /api/v1/filesystems/{filesystem_id}/resize": Rule(
        "member", path=_fs, body=lambda w: {"size_gib": 2}
    ),
    "POST /api/v1/filesystems/{filesystem_id}/attach": Rule(
        "member",
        path=_fs,
        body=lambda w: {"instance_id": w.instance, "mount_path": "/mnt/matrix"},
    ),
    "POST /api/v1/filesystems/{filesystem_id}/attachments/{attachment_id}/detach": Rule(
        "member", path=_fs_attached
    ),
    "DELETE /api/v1/filesystems/{filesystem_id}": Rule("member", path=_fs),
    # images: everyone reads the operator's catalog; operator admins change it
    "GET /api/v1/images": Rule("any"),
    "GET /api/v1/images/{name}": Rule("any", path=lambda w: {"name": w.image}),
    "POST /api/v1/images": Rule(
        "operator",
        body=lambda w: {"name": w.unique("img"), "os": "Ubuntu 24.04", "drivers": ["sim", "ssh"]},
    ),
    "PATCH /api/v1/images/{name}": Rule(
        "operator", path=lambda w: {"name": w.image}, body=lambda w: {"description": "patched"}
    ),
    "DELETE /api/v1/images/{name}": Rule("operator", path=lambda w: {"name": w.new_image()}),
    # billing
    "POST /api/v1/price-books": Rule(
        "operator",
        body=lambda w: {
            "effective_from": "2027-01-01T00:00:00Z",
            "gpu_prices": {f"{H100}.on_demand": "2.50"},
        },
    ),
    "GET /api/v1/price-books/current": Rule("any"),
    "GET /api/v1/price-books/current/catalog": Rule("any"),
    # usage events are the platform's metering: operator admins only (issue 13 finding 2)
    "POST /api/v1/usage/events": Rule(
        "operator",
        query=_org,
        body=lambda w: {
            "events": [
                {
                    "id": w.unique("ev"),
                    "source": "custom",
                    "type": "tokens",
                    "subject": "x",
                    "time": "2026-03-01T11:00:00Z",
                }
            ]
        },
    ),
    "GET /api/v1/invoices/preview": Rule(
        "viewer", query=lambda w: {"org_id": w.b, "period": "2026-03"}, staff=STAFF_BILLING
    ),
    "POST /api/v1/invoices": Rule("operator", body=lambda w: {"org_id": w.b, "period": "2026-01"}),
    "GET /api/v1/invoices": Rule("viewer", query=_org, staff=STAFF_BILLING),
    "GET /api/v1/invoices/{invoice_id}": Rule("viewer", path=lambda w: {"invoice_id": w.invoice}),
    "POST /api/v1/invoices/{invoice_id}/finalize": Rule(
        "operator", path=lambda w: {"invoice_id": w.invoice}
    ),
    "POST /api/v1/invoices/close": Rule("operator", body=lambda w: {"period": "2026-02"}),
    "GET /api/v1/credit-notes": Rule("viewer", query=_org, staff=STAFF_BILLING),
    "POST /api/v1/contracts": Rule(
        "operator",
        body=lambda w: {
            "org_id": w.b,
            "kind": "commit_spend",
            "amount": "1",
            "start_at": "2026-04-01T00:00:00Z",
            "end_at": "2026-05-01T00:00:00Z",
        },
    ),
    "GET /api/v1/contracts": Rule("viewer", query=_org, staff=STAFF_BILLING),
    "GET /api/v1/contracts/{contract_id}": Rule(
        "viewer", path=lambda w: {"contract_id": w.contract}
    ),
    "POST /api/v1/credits": Rule("operator", body=lambda w: {"org_id": w.b, "amount": "1"}),
    "GET /api/v1/credits": Rule("viewer", query=_org, staff=STAFF_BILLING),
    "GET /api/v1/billing/reports/revenue": Rule(
        "staff", query=lambda w: {"from": "2026-01", "to": "2026-03"}
    ),
    "GET /api/v1/billing/reports/backlog": Rule("staff"),
    "GET /api/v1/billing/reports/concentration": Rule("staff"),
    "GET /api/v1/billing/reports/utilization": Rule("staff"),
    "GET /api/v1/capacity/tenants": Rule("staff", query=lambda w: {"group_by": "rack"}),
    # economics: the operator's business
    "POST /api/v1/economics/projections": Rule("staff", body=lambda w: {"scenario": {}}),
    "POST /api/v1/economics/stress": Rule("staff", body=lambda w: {"scenario": {}}),
    "GET /api/v1/economics/live": Rule("staff"),
    # studio
    "GET /api/v1/studio/keys/{key_id}/limits": Rule(
        "staff", path=lambda w: {"key_id": w.worker_key}
    ),
    "PUT /api/v1/studio/keys/{key_id}/limits": Rule(
        "operator",
        path=lambda w: {"key_id": w.worker_key},
        body=lambda w: {"requests_per_minute": 100},
    ),
    "GET /api/v1/studio/orgs/{org_id}/budget": Rule("viewer", path=_org),
    "PUT /api/v1/studio/orgs/{org_id}/budget": Rule(
        "operator", path=_org, body=lambda w: {"monthly_token_limit": None}
    ),
    "GET /api/v1/studio/usage": Rule(
        "viewer", query=lambda w: {"org_id": w.b, "start_time": "2026-03-01T00:00:00Z"}
    ),
    "GET /api/v1/studio/models": Rule("any"),
    "POST /api/v1/studio/models": Rule(
        "operator",
        body=lambda w: {
            "id": w.unique("ops/new"),
            "upstream_urls": ["http://10.0.0.7:8000/v1"],
            **PRICES,
        },
    ),
    "GET /api/v1/studio/models/{model_id}": Rule("any", path=lambda w: {"model_id": w.model}),
    "DELETE /api/v1/studio/models/{model_id}": Rule(
        "operator", path=lambda w: {"model_id": w.new_model()}
    ),
    # the OpenAI-compatible gateway: reading is for any key, running a model (billed) for members
    "GET /v1/models": Rule("any"),
    "GET /v1/models/{model_id}": Rule("any", path=lambda w: {"model_id": "neocloud/echo"}),
    "POST /v1/chat/completions": Rule("member", scope="own", body=_chat),
    "POST /v1/completions": Rule(
        "member",
        scope="own",
        body=lambda w: {"model": "neocloud/echo", "prompt": "hi", "max_tokens": 2},
    ),
    "POST /v1/embeddings": Rule(
        "member", scope="own", body=lambda w: {"model": "neocloud/hash-embed", "input": "hi"}
    ),
    # files: an org's own; uploading and deleting need member (a JSON body is a served 400)
    "POST /v1/files": Rule("member", scope="own", body=lambda w: {"purpose": "batch"}),
    "GET /v1/files": Rule("any"),
    "GET /v1/files/{file_id}": Rule("viewer", path=_file),
    "GET /v1/files/{file_id}/content": Rule("viewer", path=_file),
    "DELETE /v1/files/{file_id}": Rule("member", path=_file),
    # batches: an org's own; creating and cancelling need member (no input file: a served 400)
    "POST /v1/batches": Rule(
        "member",
        scope="own",
        body=lambda w: {"endpoint": "/v1/chat/completions", "completion_window": "24h"},
    ),
    "GET /v1/batches": Rule("any"),
    "GET /v1/batches/{batch_id}": Rule("viewer", path=_batch),
    "POST /v1/batches/{batch_id}/cancel": Rule("member", path=_batch),
    # fine-tuning: creating and cancelling spend (member); deleting a fine-tuned model: admin
    "POST /v1/fine_tuning/jobs": Rule(
        "member", scope="own", body=lambda w: {"model": "neocloud/echo", "training_file": "x"}
    ),
    "GET /v1/fine_tuning/jobs": Rule("any"),
    "GET /v1/fine_tuning/jobs/{job_id}": Rule("viewer", path=_job),
    "POST /v1/fine_tuning/jobs/{job_id}/cancel": Rule("member", path=_job),
    "GET /v1/fine_tuning/jobs/{job_id}/events": Rule("viewer", path=_job),
    "GET /v1/fine_tuning/jobs/{job_id}/checkpoints": Rule("viewer", path=_job),
    "DELETE /v1/models/{model_id}": Rule("admin", path=_ft_model),
}


def expected(rule: Rule, caller: str, method: str) -> int | str:
    """What ``caller`` should get: ``SERVED`` or the status of the refusal."""
    if rule.need == "public":
        return SERVED
    if caller in ("anon", "revoked") or rule.need == "agent":
        return 401
    if caller == "operator":
        return SERVED
    if caller == "staff" and rule.staff is not None:
        return rule.staff
    if caller == "outsider" and rule.outsider is not None:
        return rule.outsider
    if rule.need == "any":
        return SERVED
    if rule.need in ("staff", "operator"):  # 403 to every tenant, whatever the id
        if caller == "staff":
            return SERVED if rule.need == "staff" else 403
        return 403
    if caller == "outsider":
        return 404 if rule.scope == "org" else SERVED
    if caller == "staff":  # a member of the operator org: reads every org, writes in none
        if rule.scope == "own":
            return SERVED if RANK["member"] >= RANK[rule.need] else 403
        return SERVED if method == "GET" else 403
    return SERVED if RANK[caller] >= RANK[rule.need] else rule.below


def operations(doc: dict[str, Any]) -> list[str]:
    methods = ("get", "post", "put", "patch", "delete")
    return [f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops if m in methods]


@pytest.fixture
def world(app: FastAPI, admin_key: str) -> Iterator[World]:
    app.state.studio.catalog = fake_catalog()
    # The lifespan starts the studio's pollers: leave it, so no thread outlives the database.
    with TestClient(app, raise_server_exceptions=False) as http:
        yield World(http, admin_key)


DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
TABLE_START = (
    "<!-- role table: generated by tests/security/test_isolation_matrix.py, which checks it -->"
)
TABLE_END = "<!-- role table end -->"
NEEDS = {
    "public": "anyone, no key",
    "any": "any key",
    "viewer": "viewer",
    "member": "member",
    "admin": "admin",
    "owner": "owner",
    "staff": "operator staff",
    "operator": "operator admin",
    "agent": "a node's agent token",
}
HEADINGS = {"anon": "no key", "revoked": "revoked key", "outsider": "other org"}


def role_table() -> list[str]:
    """The matrix as docs/security.md shows it: per operation, what each caller gets."""
    names = [HEADINGS.get(c, c) for c in CALLERS]
    lines = [
        "| operation | needs | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(CALLERS),
    ]
    for op, rule in RULES.items():
        method = op.split(" ", 1)[0]
        need = NEEDS[rule.need] + (
            " (own org)" if rule.scope == "own" and rule.need in RANK else ""
        )
        cells = ["ok" if (e := expected(rule, c, method)) == SERVED else str(e) for c in CALLERS]
        lines.append(f"| `{op}` | {need} | " + " | ".join(cells) + " |")
    return lines


def test_the_documented_role_table_is_the_tested_one() -> None:
    text = DOC.read_text()
    assert TABLE_START in text
    assert TABLE_END in text
    shown = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip().splitlines()
    assert shown == role_table(), "regenerate: python tests/security/test_isolation_matrix.py"


def test_every_operation_has_a_rule(http: TestClient) -> None:
    ops = operations(http.get("/api/v1/openapi.json").json())
    assert sorted(set(ops) - set(RULES)) == [], "a new endpoint needs a row in RULES"
    assert sorted(set(RULES) - set(ops)) == [], "a row in RULES names no endpoint"


def test_isolation_matrix(
    world: World, db: Database, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ops = operations(world.http.get("/api/v1/openapi.json").json())
    failures: list[str] = []
    leaks: list[str] = []
    odd: list[str] = []
    calls = 0
    for op in ops:
        rule = RULES.get(op)
        if rule is None:
            failures.append(f"{op}: no rule")
            continue
        method, template = op.split(" ", 1)
        for caller in CALLERS:
            path = template.format(**rule.path(world))
            query = rule.query(world)
            body = rule.body(world) if rule.body else None
            answer = world.call(caller, method, path, query=query or None, body=body)
            calls += 1
            want = expected(rule, caller, method)
            status = answer.status_code
            if want == SERVED:
                good = status < 500 and status not in (401, 403, 404)
            else:
                good = status == want
            if want == SERVED and status >= 300:
                odd.append(f"{op} as {caller}: {status} {answer.text[:150]}")
            if not good:
                failures.append(f"{op} as {caller}: {status}, expected {want}: {answer.text[:200]}")
            if caller in ("outsider", "anon", "revoked"):
                sent = path + json.dumps(query) + json.dumps(body)
                seen = [m for m in world.markers if m in answer.text and m not in sent]
                if seen:
                    leaks.append(f"{op} as {caller}: {seen}")
    print("\nserved, then refused by a business rule (not a role):\n" + "\n".join(odd))
    summary = {
        "database": db.dialect,
        "operations": len(ops),
        "callers": len(CALLERS),
        "calls": calls,
        "failures": len(failures),
        "leaks": len(leaks),
    }
    out = tmp_path_factory.getbasetemp() / f"isolation-matrix-{db.dialect}.json"
    Path(out).write_text(json.dumps(summary, indent=2))
    print(
        f"\nisolation matrix ({db.dialect}): {len(ops)} operations x {len(CALLERS)} callers = "
        f"{calls} calls, "
        f"{len(failures)} wrong answers, {len(leaks)} leaks ({out})"
    )
    assert failures == [], "\n".join(failures)
    assert leaks == [], "\n".join(leaks)


if __name__ == "__main__":  # print the role table for docs/security.md
    print("\n".join(role_table()))
