"""Schemathesis against the platform's one OpenAPI document (``/api/v1/openapi.json``, which
also documents the OpenAI-compatible ``/v1`` routes), in process, on SQLite with the demo fleet.

Every operation is fuzzed as each caller (the operator admin, and the owner of a tenant org
with a project, an instance and a spare key) with three kinds of generated requests: valid
ones with generated path ids (mostly answering 404), valid ones whose ids name the caller's
real objects (so the handlers past the lookup run), and invalid ones (wrong types, missing
fields, out-of-range values). Each response is checked for a 5xx, a status the document does
not list, a content type it does not list and a body that breaks the documented schema.
Failures are collected, not raised, so one run counts them all; ``KNOWN`` (``known.py``) names
those that another engineer owns.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from neocloud.api.app import OPENAPI_URL, create_app
from neocloud.api.platform import prepare
from neocloud.client import Client
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import Settings

from .known import KNOWN, Known

SCHEMA_CHECKS = (response_schema_conformance, status_code_conformance, content_type_conformance)

# Examples per operation, caller and kind; `make fuzz` raises it (NEOCLOUD_FUZZ_EXAMPLES).
SHORT_RUN_EXAMPLES = 1


def examples_per_kind() -> int:
    return int(os.environ.get("NEOCLOUD_FUZZ_EXAMPLES", SHORT_RUN_EXAMPLES))


@dataclass
class Caller:
    name: str
    key: str
    ids: dict[str, str]  # path parameter name -> an id of this caller's own objects

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Failure:
    operation: str
    caller: str
    kind: str  # "5xx" or "schema"
    request: str
    response: str
    known: Known | None = None


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[Failure] = field(default_factory=list)

    def new(self) -> list[Failure]:
        return [f for f in self.failures if f.known is None]

    def excluded(self) -> list[Failure]:
        return [f for f in self.failures if f.known is not None]

    def unused_known(self) -> list[Known]:
        hit = {id(f.known) for f in self.excluded()}
        return [k for k in KNOWN if id(k) not in hit]

    def report(self) -> str:
        """Counts by operation, then totals, then each new failure's reproduction."""
        new, excluded = self.new(), self.excluded()
        by_op: dict[str, Counter[str]] = defaultdict(Counter)
        for f in new:
            by_op[f.operation][f.kind] += 1
        lines = [f"{'operation':<58} {'cases':>6} {'5xx':>4} {'schema':>6}  statuses"]
        for op in sorted(self.cases):
            statuses = " ".join(f"{s}x{n}" for s, n in sorted(self.statuses[op].items()))
            lines.append(
                f"{op:<58} {self.cases[op]:>6} {by_op[op]['5xx']:>4} {by_op[op]['schema']:>6}"
                f"  {statuses}"
            )
        total_5xx = sum(1 for f in new if f.kind == "5xx")
        total_schema = sum(1 for f in new if f.kind == "schema")
        lines.append(
            f"fuzz: {sum(self.cases.values())} cases over {len(self.cases)} operations, "
            f"{total_5xx} 5xx, {total_schema} schema failures, {len(excluded)} excluded as known"
        )
        for known in self.unused_known():
            lines.append(f"known entry no longer reproduced (delete it): {known.finding}")
        seen: set[tuple[str, str, str]] = set()
        for f in new:
            first_line = f.response.splitlines()[0] if f.response else ""
            if (f.operation, f.kind, first_line) in seen:
                continue
            seen.add((f.operation, f.kind, first_line))
            lines.append(f"--- {f.kind} on {f.operation} as {f.caller}\n{f.request}\n{f.response}")
        return "\n".join(lines)


@dataclass
class Platform:
    app: FastAPI
    http: TestClient
    admin: Caller
    tenant: Caller
    admin_client: Client


def build_platform(data_dir: Path) -> Iterator[Platform]:
    """The app on a fresh SQLite file with the demo fleet, the operator and one tenant."""
    # The /api/v1 rate limit (600 a minute per key) would turn a long run into a test of 429s.
    settings = Settings(
        data_dir=data_dir,
        key_touch_interval_s=0,
        api_requests_per_minute=1_000_000,
        api_writes_per_minute=1_000_000,
    )
    clock = SystemClock()
    prepared = prepare(settings, clock)
    assert prepared.admin_key is not None
    app = create_app(settings=settings, db=prepared.db, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as http:
        admin = Client(api_key=prepared.admin_key, http=http, retries=0)
        yield Platform(
            app=app,
            http=http,
            admin=_admin_caller(admin, prepared.admin_key),
            tenant=_tenant_caller(admin, http),
            admin_client=admin,
        )
    prepared.db.dispose()


def _admin_caller(admin: Client, key: str) -> Caller:
    me = admin.get("me")
    spare = admin.keys.create("fuzz spare", org_id=me["org"]["id"], user_id=me["user"]["id"])
    node = admin.get("nodes", limit=1)["data"][0]
    return Caller(
        "admin",
        key,
        {
            "org_id": me["org"]["id"],
            "user_id": me["user"]["id"],
            "key_id": spare["id"],
            "node_id": node["id"],
            **_catalog_ids(),
        },
    )


def _tenant_caller(admin: Client, http: TestClient) -> Caller:
    org = admin.orgs.create("Fuzz Tenant", slug="fuzz-tenant", owner_email="owner@fuzz.example")
    user = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
    admin.quotas.set(org["id"], "H100-SXM-80GB", 64)
    owner = Client(api_key=key["secret"], http=http, retries=0)
    spare = owner.keys.create("fuzz spare", org_id=org["id"], user_id=user["id"])
    project = owner.post(f"orgs/{org['id']}/projects", {"name": "fuzz"})
    instance = owner.instances.create("8xH100", project_id=project["id"])
    return Caller(
        "tenant",
        key["secret"],
        {
            "org_id": org["id"],
            "user_id": user["id"],
            "key_id": spare["id"],
            "project_id": project["id"],
            "instance_id": instance["id"],
            **_catalog_ids(),
        },
    )


def _catalog_ids() -> dict[str, str]:
    return {
        "gpu_model": "H100-SXM-80GB",
        "model": "H100-SXM-80GB",
        "model_id": "neocloud/tiny-llama",
    }


def load_schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi(OPENAPI_URL, app)


def operations(schema: Any) -> list[Any]:
    """Every operation, the destructive ones (DELETE, revoke, terminate) last."""
    ops = [result.ok() for result in schema.get_all_operations()]

    def destructive(op: Any) -> bool:
        return op.method.upper() == "DELETE" or op.path.endswith(
            ("/revoke", "/terminate", "/retire", "/cancel", "/budget")
        )

    return sorted(ops, key=destructive)


# Body fields that name a served model, per /v1 operation, in the pinned kind of request.
SERVED_MODELS = {
    "/v1/chat/completions": "neocloud/tiny-llama",
    "/v1/completions": "neocloud/tiny-llama-fast",
    "/v1/embeddings": "sentence-transformers/all-MiniLM-L6-v2",
}


def fuzz_operation(platform: Platform, op: Any, caller: Caller, tally: Tally, n: int) -> None:
    """Run ``n`` generated cases of each kind for ``op`` as ``caller``; count, never raise.

    The kinds: valid requests, invalid ones, and valid ones whose ids (in the path and in the
    body) name the caller's own objects, so that the handler runs past its lookups."""
    name = f"{op.method.upper()} {op.path}"
    kinds = {
        "positive": op.as_strategy(GenerationMode.POSITIVE),
        "negative": op.as_strategy(GenerationMode.NEGATIVE),
        "pinned": op.as_strategy(
            GenerationMode.POSITIVE,
            path_parameters={p: caller.ids[p] for p in _path_names(op) if p in caller.ids},
        ),
    }
    for kind, strategy in kinds.items():
        pin = kind == "pinned"

        @settings(
            max_examples=n,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy, pin=st.just(pin))
        def one(case: Any, pin: bool) -> None:
            if pin:
                _pin_body(case, caller, SERVED_MODELS.get(op.path))
            _send(platform, case, caller, name, tally)

        with contextlib.suppress(Unsatisfiable):  # nothing to negate: nothing to send
            one()
    _keep_authenticated(platform, caller)


def _pin_body(case: Any, caller: Caller, served_model: str | None) -> None:
    if not isinstance(case.body, dict):
        return
    body = dict(case.body)
    for field_name in body.keys() & caller.ids.keys() - {"model", "gpu_model"}:
        body[field_name] = caller.ids[field_name]
    if served_model is not None:
        body["model"] = served_model
    case.body = body


def _path_names(op: Any) -> list[str]:
    return [p.name for p in op.path_parameters]


def _send(platform: Platform, case: Any, caller: Caller, name: str, tally: Tally) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs["headers"] = {**(kwargs.get("headers") or {}), **caller.headers}
    for dropped in ("cookies", "allow_redirects", "timeout", "verify", "cert", "proxies"):
        kwargs.pop(dropped, None)
    if "data" in kwargs and not isinstance(kwargs["data"], (dict, list)):
        kwargs["content"] = kwargs.pop("data")
    response = platform.http.request(**kwargs)
    tally.cases[name] += 1
    tally.statuses[name][response.status_code] += 1
    kind = "5xx" if response.status_code >= 500 else None
    message = ""
    if kind is None:
        try:
            case.validate_response(response, checks=list(SCHEMA_CHECKS))
        except FailureGroup as exc:
            kind, message = "schema", str(exc)
    if kind is None:
        return
    known = next(
        (
            k
            for k in KNOWN
            if k.operation == name and k.status == response.status_code and k.matches(case)
        ),
        None,
    )
    request = f"{kwargs['method']} {response.request.url}\n{_body_of(kwargs)}"
    body = response.text[:600]
    tally.failures.append(
        Failure(
            name,
            caller.name,
            kind,
            request,
            f"{response.status_code} {body}\n{message[:1500]}",
            known,
        )
    )


def _body_of(kwargs: dict[str, Any]) -> str:
    for key in ("json", "content", "data"):
        if key in kwargs:
            return repr(kwargs[key])[:600]
    return ""


def _keep_authenticated(platform: Platform, caller: Caller) -> None:
    """A generated call may have revoked the caller's key or removed it: mint a fresh one."""
    if platform.http.get("/api/v1/me", headers=caller.headers).status_code == 200:
        return
    admin = platform.admin_client
    key = admin.keys.create(
        "fuzz again", org_id=caller.ids["org_id"], user_id=caller.ids["user_id"]
    )
    caller.key = key["secret"]


def run(platform: Platform, n: int) -> Tally:
    tally = Tally()
    schema = load_schema(platform.app)
    for op in operations(schema):
        for caller in (platform.tenant, platform.admin):
            fuzz_operation(platform, op, caller, tally, n)
    return tally
