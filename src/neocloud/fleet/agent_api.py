"""Node agent routes: the operator issues and revokes a node's agent token and reads a node's
health; the agent heartbeats with its token (never an API key)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from neocloud.fleet import agent
from neocloud.fleet.agent_schemas import (
    AgentStatusOut,
    AgentTokenOut,
    GpuTelemetryOut,
    HeartbeatIn,
    HeartbeatOut,
    NodeHealthOut,
)
from neocloud.fleet.schemas import HealthCheckOut
from neocloud.kernel.errors import AuthenticationFailed, NeocloudError
from neocloud.web.deps import AppContext, Caller, Ctx
from neocloud.web.schemas import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES)
TAG: list[str | Enum] = ["agent"]
NodeId = Annotated[str, Path(max_length=40)]
agent_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="AgentToken",
    description="A node's agent token: `Authorization: Bearer nca_…` (not an API key)",
)


def agent_token(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_scheme)],
) -> str:
    """The bearer token, which must be an agent token; an API key is refused (401)."""
    return agent_token_of(request.headers.get("authorization", ""))


def agent_token_of(authorization: str) -> str:
    """The agent token of an ``Authorization`` header's value (the route's dependency and the
    heartbeat's fast path both ask this): 401 ``missing_agent_token`` without a bearer token,
    401 ``agent_token_required`` for anything but an agent token."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "no agent token given: send 'Authorization: Bearer nca_…'", code="missing_agent_token"
        )
    if not agent.is_agent_token(token):
        raise AuthenticationFailed(
            "the heartbeat takes a node's agent token, not an API key",
            code="agent_token_required",
        )
    return token


@router.post(
    "/nodes/{node_id}/agent-token", response_model=AgentTokenOut, status_code=201, tags=TAG
)
def issue_agent_token(node_id: NodeId, ctx: Ctx, caller: Caller) -> AgentTokenOut:
    """A new agent token for the node, shown once (only its hash is kept); the node's previous
    token stops working. Give it to `neocloud agent --token`."""
    caller.require_operator(write=True)
    issued = agent.issue_agent_token(
        db=ctx.db, clock=ctx.clock, node_id=node_id, actor=str(caller.key_id)
    )
    return AgentTokenOut(node_id=issued.node_id, token=issued.token, created_at=issued.created_at)


@router.delete(
    "/nodes/{node_id}/agent-token",
    status_code=204,
    response_class=Response,
    tags=TAG,
    responses={204: {"description": "revoked"}},
)
def revoke_agent_token(node_id: NodeId, ctx: Ctx, caller: Caller) -> Response:
    """Revoke the node's agent token: its heartbeats answer 401 from now on, and the node is
    no longer failed for a silent agent."""
    caller.require_operator(write=True)
    agent.revoke_agent_token(db=ctx.db, node_id=node_id)
    return Response(status_code=204)


@router.post(
    "/agent/heartbeat",
    response_model=HeartbeatOut,
    tags=TAG,
    responses={403: {"description": "the token is another node's (`agent_wrong_node`)"}},
)
def heartbeat(
    request: Request,
    body: HeartbeatIn,
    ctx: Ctx,
    token: Annotated[str, Depends(agent_token)],
) -> HeartbeatOut:
    """A node agent's heartbeat: inventory, GPU telemetry and check results. The answer says
    when to beat next and whether the node is idle enough for active checks."""
    return answer_heartbeat(ctx, getattr(request.app.state, "node_busy", None), token, body)


def answer_heartbeat(
    ctx: AppContext, busy: agent.BusyProbe | None, token: str, body: HeartbeatIn
) -> HeartbeatOut:
    """Record a heartbeat and build its answer (what the route does; it raises what the
    route raises)."""
    result = agent.heartbeat(
        db=ctx.db, clock=ctx.clock, token=token, beat=body, policy=_policy(ctx), busy=busy
    )
    return _answer(result)


def answer_heartbeats(
    ctx: AppContext, busy: agent.BusyProbe | None, beats: Sequence[tuple[str, HeartbeatIn]]
) -> list[HeartbeatOut | agent.Refusal]:
    """Record several agents' heartbeats in one transaction (the fast path,
    ``neocloud.api.agent_fastpath``, coalesces concurrent ones): for each, the route's answer
    or the refusal the route would raise."""
    results = agent.heartbeats(
        db=ctx.db, clock=ctx.clock, beats=beats, policy=_policy(ctx), busy=busy
    )
    return [r if isinstance(r, NeocloudError) else _answer(r) for r in results]


def _policy(ctx: AppContext) -> agent.AgentPolicy:
    s = ctx.settings
    return agent.AgentPolicy(interval_s=s.agent_interval_s, series_step_s=s.agent_series_step_s)


def _answer(result: agent.HeartbeatResult) -> HeartbeatOut:
    return HeartbeatOut(
        interval_s=result.interval_s,
        node_state=result.node_state,
        run_active_checks=result.run_active_checks,
    )


@router.get("/nodes/{node_id}/health", response_model=NodeHealthOut, tags=["nodes"])
def get_node_health(
    node_id: NodeId,
    ctx: Ctx,
    caller: Caller,
    history: Annotated[
        int, Query(ge=0, le=1000, description="how many past check results (newest first)")
    ] = 50,
) -> NodeHealthOut:
    """The node's health: state, the latest result of each check, recent check history, the
    agent's last heartbeat, version and inventory, and each GPU's latest telemetry."""
    caller.require_operator()
    h = agent.node_health(db=ctx.db, node_id=node_id, history=history)
    n = h.node
    return NodeHealthOut(
        node_id=n.id,
        state=n.state,
        health=n.health,
        checks=dict(n.health_checks or {}),
        history=[HealthCheckOut.of(r) for r in h.history],
        agent=AgentStatusOut(
            seen_at=n.agent_seen_at,
            version=n.agent_version,
            simulated=n.simulated,
            token_issued_at=h.token_issued_at,
            inventory_at=n.inventory_at,
            inventory=n.inventory,
        ),
        telemetry=[GpuTelemetryOut.of(t) for t in h.telemetry],
    )
