"""The heartbeat's fast path (``neocloud.api.agent_fastpath``) answers exactly as the full
stack: for a table of good and bad heartbeats the same status, body and headers from an app
with it and from one without it; the same rows stored; a revoked token refused at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.agent_fastpath import AgentHeartbeatFastPath
from neocloud.api.app import create_app
from neocloud.api.asgi import Receive, Scope, Send
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.fleet import agent, agent_api
from neocloud.fleet.agent_schemas import HeartbeatIn
from neocloud.fleet.tables import (
    GpuTelemetryLatestRow,
    GpuTelemetrySeriesRow,
    HealthCheckRow,
    NodeRow,
)
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import AuthenticationFailed, PermissionDenied
from neocloud.kernel.settings import Settings
from neocloud.tenancy.tables import AuditEventRow

from .agent_helpers import FLEET, beat, gpu, inventory

PATH = "/api/v1/agent/heartbeat"
# Headers whose values differ between any two answers (fresh ids, the rate-limit bucket).
VARYING = {"x-request-id", "x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset"}


class Spy:
    """Stands between the fast path and the rest of the stack: counts what it passes on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.passed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == PATH:
            self.passed += 1
        await self.app(scope, receive, send)


def _spy_on(app: FastAPI, http: TestClient) -> Spy:
    http.get("/api/v1/health")  # builds the middleware stack
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, AgentHeartbeatFastPath):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, AgentHeartbeatFastPath), "the fast path is not mounted"
    spy = Spy(layer.app)
    layer.app = spy
    return spy


@pytest.fixture
def fast(app: FastAPI, admin: Client) -> Iterator[tuple[TestClient, Spy]]:
    assert admin.fleet.import_spec(FLEET)["nodes_created"] == 8
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http, _spy_on(app, http)


@pytest.fixture
def slow(settings: Settings, db: Database, clock: VirtualClock) -> Iterator[TestClient]:
    """The same platform without the fast path: what the full stack answers."""
    app = create_app(settings=settings, db=db, clock=clock)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not AgentHeartbeatFastPath]
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http


def _nodes(admin: Client) -> list[str]:
    return [n["id"] for n in admin.nodes.list()["data"]]


def _post(http: TestClient, body: Any, headers: dict[str, str | None]) -> Any:
    """POST ``body`` (JSON unless bytes) as JSON; a header given as None is not sent."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {
        k: v for k, v in ({"content-type": "application/json"} | headers).items() if v is not None
    }
    return http.post(PATH, content=content, headers=sent)


def _same(a: Any, b: Any) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)
    fixed = {k: v for k, v in a.headers.items() if k not in VARYING}
    assert fixed == {k: v for k, v in b.headers.items() if k not in VARYING}
    assert set(a.headers) == set(b.headers)


def test_good_beats_are_served_by_the_fast_path_and_store_the_same(
    fast: tuple[TestClient, Spy],
    slow: TestClient,
    admin: Client,
    db: Database,
    clock: VirtualClock,
) -> None:
    """Node a beats through the fast path, node b through the full stack, the same beats:
    the same answers, and the same rows (telemetry, series, health history, node fields)."""
    http, spy = fast
    a, b = _nodes(admin)[:2]
    tokens = {n: admin.nodes.issue_agent_token(n)["token"] for n in (a, b)}
    hot = [gpu(i, temperature_c=95.0 if i == 2 else 60.0, throttle=["thermal"]) for i in range(8)]
    script: list[dict[str, Any]] = [
        {"inventory": inventory()},
        {},
        {"telemetry": hot},  # a warning: health changes, the ORM path records it
        {"telemetry": hot},
        {"agent_version": "0.2.0", "simulated": False},
        {"checks": [{"name": "gemm", "status": "pass", "value": 700.0, "unit": "TFLOP/s"}]},
        {"telemetry": [gpu(i, utilization_pct=float(10 * i)) for i in range(8)]},
        {"telemetry": [gpu(0, ecc_uncorrectable=1)]},  # fails the node
        {},
    ]
    for i, change in enumerate(script):
        got_a = _post(http, beat(a, **change), {"Authorization": f"Bearer {tokens[a]}"})
        got_b = _post(slow, beat(b, **change), {"Authorization": f"Bearer {tokens[b]}"})
        assert got_a.status_code == 200, got_a.text
        _same(got_a, got_b)
        assert spy.passed == 0, f"beat {i} went to the full stack"
        clock.advance(25)  # crosses series buckets now and then
    assert _stored(db, a) == _stored(db, b)
    assert _stored(db, a)["node"]["state"] == "failed"


def _stored(db: Database, node_id: str) -> dict[str, Any]:
    """What the platform keeps of a node's heartbeats, with the node's id taken out."""
    with db.transaction() as s:
        node = s.get(NodeRow, node_id)
        assert node is not None
        latest = s.scalars(
            sa.select(GpuTelemetryLatestRow)
            .where(GpuTelemetryLatestRow.node_id == node_id)
            .order_by(GpuTelemetryLatestRow.gpu_index)
        )
        series = s.scalars(
            sa.select(GpuTelemetrySeriesRow)
            .where(GpuTelemetrySeriesRow.node_id == node_id)
            .order_by(GpuTelemetrySeriesRow.bucket_at, GpuTelemetrySeriesRow.gpu_index)
        )
        history = s.scalars(
            sa.select(HealthCheckRow)
            .where(HealthCheckRow.node_id == node_id)
            .order_by(HealthCheckRow.at, HealthCheckRow.name)
        )

        def plain(row: Any) -> dict[str, Any]:
            skip = {"node_id", "id"}
            return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in skip}

        reason = (node.state_reason or "").replace(node_id, "NODE")
        return {
            "node": {
                "state": node.state,
                "state_reason": reason,
                "health": node.health,
                "health_checks": node.health_checks,
                "inventory": node.inventory,
                "inventory_at": node.inventory_at,
                "agent_seen_at": node.agent_seen_at,
                "agent_version": node.agent_version,
                "simulated": node.simulated,
                "updated_at": node.updated_at,
            },
            "latest": [plain(r) for r in latest],
            "series": [plain(r) for r in series],
            "history": [plain(r) for r in history],
        }


def _cases(node: str, other: str) -> list[tuple[str, Any, dict[str, str | None]]]:
    """(what, body, headers over the token's; None: not sent) — ``KEY`` stands for the
    operator's API key."""
    good = beat(node)
    return [
        ("wrong node", beat(other), {}),
        ("no token", good, {"Authorization": None}),
        ("basic auth", good, {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("bearer, empty", good, {"Authorization": "Bearer "}),
        ("an API key", good, {"Authorization": "Bearer KEY"}),
        ("unknown token", good, {"Authorization": "Bearer nca_not-a-real-token"}),
        ("token too long", good, {"Authorization": "Bearer nca_" + "x" * 200}),
        ("utilization 101", beat(node, telemetry=[gpu(0, utilization_pct=101)]), {}),
        ("17 GPUs", beat(node, telemetry=[gpu(i) for i in range(17)]), {}),
        ("version too long", good | {"agent_version": "x" * 33}, {}),
        ("bad check status", good | {"checks": [{"name": "gemm", "status": "bad"}]}, {}),
        ("bad time", good | {"sent_at": "yesterday"}, {}),
        ("unknown field", good | {"surprise": 1}, {}),
        ("missing field", {k: v for k, v in good.items() if k != "node_id"}, {}),
        ("index as string", beat(node, telemetry=[gpu(0) | {"index": "0"}]), {}),
        ("a list", [good], {}),
        ("not JSON", b"{nope", {}),
        ("empty body", b"", {}),
        ("not UTF-8", b'{"node_id": "\xff"}', {}),
        ("text/plain", json.dumps(good).encode(), {"content-type": "text/plain"}),
        ("no content type", json.dumps(good).encode(), {"content-type": None}),
        ("JSON, charset", good, {"content-type": "application/json; charset=utf-8"}),
        ("problem+json", good, {"content-type": "application/problem+json"}),
        ("lower-case bearer", good, {"Authorization": "bearer TOKEN"}),
        ("idempotency key", good, {"Idempotency-Key": "k1"}),
        ("empty idempotency key", good, {"Idempotency-Key": ""}),
        ("too large", good | {"padding": "x" * 9000}, {}),
    ]


@pytest.fixture
def small_body(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_body_bytes": 8192})


@pytest.mark.parametrize("case", [c[0] for c in _cases("n", "m")])
def test_odd_and_bad_beats_answer_as_the_full_stack(
    case: str,
    small_body: Settings,
    admin: Client,
    admin_key: str,
    db: Database,
    clock: VirtualClock,
) -> None:
    """Each bad or unusual heartbeat gets the same status, body and headers with and without
    the fast path (which hands all but ordinary ones to the full stack)."""
    assert admin.fleet.import_spec(FLEET)["nodes_created"] == 8
    node, other = _nodes(admin)[:2]
    token = admin.nodes.issue_agent_token(node)["token"]
    admin.nodes.issue_agent_token(other)
    with_fast = create_app(settings=small_body, db=db, clock=clock)
    without = create_app(settings=small_body, db=db, clock=clock)
    without.user_middleware = [
        m for m in without.user_middleware if m.cls is not AgentHeartbeatFastPath
    ]
    _, body, extra = next(c for c in _cases(node, other) if c[0] == case)
    headers: dict[str, str | None] = {"Authorization": f"Bearer {token}"}
    for name, value in extra.items():
        headers[name] = value and value.replace("KEY", admin_key).replace("TOKEN", token)
    with (
        TestClient(with_fast, raise_server_exceptions=False) as f,
        TestClient(without, raise_server_exceptions=False) as s,
    ):
        got = _post(f, body, headers)
        want = _post(s, body, headers)
    _same(got, want)
    assert got.status_code == EXPECTED[case], got.text


EXPECTED = {
    "wrong node": 403,
    "no token": 401,
    "basic auth": 401,
    "bearer, empty": 401,
    "an API key": 401,
    "unknown token": 401,
    "token too long": 401,
    "utilization 101": 422,
    "17 GPUs": 422,
    "version too long": 422,
    "bad check status": 422,
    "bad time": 422,
    "unknown field": 422,
    "missing field": 422,
    "index as string": 422,
    "a list": 422,
    "not JSON": 422,
    "empty body": 422,
    "not UTF-8": 400,
    "text/plain": 422,
    "no content type": 422,
    "JSON, charset": 200,
    "problem+json": 200,
    "lower-case bearer": 200,
    "idempotency key": 200,  # an agent token is no API key: nothing is stored or replayed
    "empty idempotency key": 400,
    "too large": 413,
}


def test_a_revoked_token_is_refused_at_once(fast: tuple[TestClient, Spy], admin: Client) -> None:
    """No token cache: the fast path looks the token's hash up on every beat, so a revoke
    (here, or through another process on the same database) takes effect on the next beat."""
    http, _ = fast
    node = _nodes(admin)[0]
    token = admin.nodes.issue_agent_token(node)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert _post(http, beat(node), auth).status_code == 200
    admin.nodes.revoke_agent_token(node)
    gone = _post(http, beat(node), auth)
    assert (gone.status_code, gone.json()["error"]["code"]) == (401, "invalid_agent_token")
    fresh = admin.nodes.issue_agent_token(node)["token"]
    assert _post(http, beat(node), {"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert _post(http, beat(node), auth).status_code == 401


def test_a_revoke_by_another_process_is_seen_on_the_next_beat(
    fast: tuple[TestClient, Spy], admin: Client, db: Database
) -> None:
    http, _ = fast
    node = _nodes(admin)[0]
    token = admin.nodes.issue_agent_token(node)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert _post(http, beat(node), auth).status_code == 200
    other = Database(db.engine)  # another process's view: the same rows, none of our state
    agent.revoke_agent_token(db=other, node_id=node)
    assert _post(http, beat(node), auth).status_code == 401


def test_refused_beats_are_audited_answered_ones_not(
    fast: tuple[TestClient, Spy], admin: Client, db: Database
) -> None:
    http, spy = fast
    node, other = _nodes(admin)[:2]
    token = admin.nodes.issue_agent_token(node)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    before = _audited(db)
    assert _post(http, beat(node), auth).status_code == 200
    assert spy.passed == 0
    assert _audited(db) == before
    assert _post(http, beat(other), auth).status_code == 403
    assert spy.passed == 1
    assert _audited(db) == before + 1


def _audited(db: Database) -> int:
    with db.transaction() as s:
        count = s.scalar(
            sa.select(sa.func.count()).select_from(AuditEventRow).where(AuditEventRow.path == PATH)
        )
    return int(count or 0)


def test_a_batch_records_what_beats_one_by_one_record(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    """``agent.heartbeats`` (what the fast path runs for concurrent beats) stores and answers
    what ``agent.heartbeat`` does beat by beat: nodes a* in batches, nodes b* alone, the same
    beats; refusals (an unknown token, another node's id) in their places, writing nothing;
    a node twice in one batch recorded twice, in order."""
    assert admin.fleet.import_spec(FLEET)["nodes_created"] == 8
    nodes = _nodes(admin)
    pairs = list(zip(nodes[0:3], nodes[3:6], strict=True))
    tokens = {n: admin.nodes.issue_agent_token(n)["token"] for n in nodes[:6]}
    policy = agent.AgentPolicy()
    hot = [gpu(i, temperature_c=95.0 if i == 1 else 60.0) for i in range(8)]
    rounds: list[list[dict[str, Any]]] = [
        [{"inventory": inventory()}, {"inventory": inventory(7)}, {}],
        [{"telemetry": hot}, {}, {"agent_version": "0.2.0"}],
        [{}, {"telemetry": hot}, {"checks": [{"name": "gemm", "status": "warn"}]}],
        [{"telemetry": [gpu(0, ecc_uncorrectable=3)]}, {}, {}],
    ]
    for changes in rounds:
        batch = [(tokens[a], hb(a, **c)) for (a, _), c in zip(pairs, changes, strict=True)]
        batch.insert(1, ("nca_unknown", hb(pairs[0][0])))
        batch.append((tokens[pairs[1][0]], hb(pairs[0][0])))  # another node's id
        batch.append((tokens[pairs[2][0]], hb(pairs[2][0], agent_version="0.3.0")))  # twice
        got = agent.heartbeats(db=db, clock=clock, beats=batch, policy=policy)
        want = []
        for (_, b), c in zip(pairs, changes, strict=True):
            want.append(
                agent.heartbeat(db=db, clock=clock, token=tokens[b], beat=hb(b, **c), policy=policy)
            )
        want.append(
            agent.heartbeat(
                db=db,
                clock=clock,
                token=tokens[pairs[2][1]],
                beat=hb(pairs[2][1], agent_version="0.3.0"),
                policy=policy,
            )
        )
        assert isinstance(got[1], AuthenticationFailed)
        assert got[1].code == "invalid_agent_token"
        assert isinstance(got[4], PermissionDenied)
        assert got[4].code == "agent_wrong_node"
        assert [got[0], got[2], got[3], got[5]] == want
        clock.advance(35)
    for a, b in pairs:
        assert _stored(db, a) == _stored(db, b)
    assert _stored(db, pairs[0][0])["node"]["state"] == "failed"
    assert _stored(db, pairs[1][0])["node"]["state"] == "failed"  # 7 GPUs of 8


def hb(node_id: str, **over: Any) -> HeartbeatIn:
    return HeartbeatIn.model_validate(beat(node_id, **over))


def test_concurrent_beats_are_recorded_together(
    app: FastAPI, admin: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beats arriving together go in one batch; a refused one among them still gets the full
    stack's answer, and the others theirs."""
    assert admin.fleet.import_spec(FLEET)["nodes_created"] == 8
    nodes = _nodes(admin)
    tokens = [admin.nodes.issue_agent_token(n)["token"] for n in nodes[:4]]
    sizes: list[int] = []
    record = agent_api.answer_heartbeats

    def counted(ctx: Any, busy: Any, beats: Any) -> Any:
        sizes.append(len(beats))
        return record(ctx, busy, beats)

    monkeypatch.setattr(agent_api, "answer_heartbeats", counted)
    sends = [(t, beat(n)) for t, n in zip(tokens, nodes, strict=False)]
    sends.append(("nca_unknown", beat(nodes[0])))
    sends.append((tokens[0], beat(nodes[1])))

    async def together() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(
                *(
                    client.post(PATH, json=body, headers={"Authorization": f"Bearer {token}"})
                    for token, body in sends
                )
            )

    got = asyncio.run(together())
    assert [r.status_code for r in got] == [200, 200, 200, 200, 401, 403]
    assert got[4].json()["error"]["code"] == "invalid_agent_token"
    assert got[5].json()["error"]["code"] == "agent_wrong_node"
    assert max(sizes) > 1
    assert sum(sizes) == len(sends)
