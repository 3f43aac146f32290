"""The tenant's pages: sign-in, the overview, instances, clusters, reservations, billing, API
keys and the Studio playground. Each reads and writes through ``/api/v1`` or ``/v1`` with the
signed-in key (``app.signed_in``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from neocloud.console.app import (
    Caller,
    CsrfRefused,
    api_for,
    checked_form,
    console_of,
    render,
    signed_in,
)
from neocloud.console.inproc import ApiFailure
from neocloud.console.session import (
    CSRF_FIELD,
    MAX_KEY_CHARS,
    SESSION_COOKIE,
    SESSION_TTL,
    SIGNIN_CSRF_COOKIE,
    new_token,
    same_token,
    seal_session,
)

router = APIRouter(include_in_schema=False)
LIVE = ("pending", "provisioning", "running", "stopping", "degraded", "scheduled", "active")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


# ----------------------------------------------------------------------------------- sign-in


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(request: Request, error: str | None = None) -> Response:
    token = request.cookies.get(SIGNIN_CSRF_COOKIE) or new_token()
    response = render(request, "signin.html", None, csrf=token, error=error)
    response.set_cookie(
        SIGNIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        max_age=3600,
    )
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await request.form()
    given, key = form.get(CSRF_FIELD), form.get("api_key")
    if not isinstance(given, str) or not same_token(request.cookies.get(SIGNIN_CSRF_COOKIE), given):
        raise CsrfRefused
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS:
        return render(request, "signin.html", None, 422, csrf=given, error="Enter an API key.")
    key = key.strip()
    try:
        await api_for(request, key).get("/api/v1/me")
    except ApiFailure as exc:
        # The key is never echoed back: the form comes back empty with the API's reason.
        return render(request, "signin.html", None, 401, csrf=given, error=exc.message)
    value, _ = seal_session(console_of(request).box, key=key, clock=console_of(request).clock)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
    )
    response.delete_cookie(SIGNIN_CSRF_COOKIE)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    caller = await signed_in(request)
    await checked_form(request, caller)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---------------------------------------------------------------------------------- overview


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> Response:
    caller = await signed_in(request)
    instances = await caller.api.get("/api/v1/instances", limit=100)
    clusters = await caller.api.get("/api/v1/clusters", limit=100)
    reservations = await caller.api.get("/api/v1/reservations", limit=100)
    quotas = await caller.api.get(f"/api/v1/orgs/{caller.org_id}/quotas")
    live = {
        "instances": sum(1 for x in instances["data"] if x["state"] in LIVE),
        "clusters": sum(1 for x in clusters["data"] if x["state"] in LIVE),
        "reservations": sum(1 for x in reservations["data"] if x["state"] in LIVE),
    }
    return render(
        request,
        "overview.html",
        caller,
        live=live,
        quotas=quotas["data"],
        capacity=await _capacity(caller),
    )


# --------------------------------------------------------------------------------- instances


async def _capacity(caller: Caller) -> list[dict[str, Any]]:
    """The API's capacity advice now (``/capacity``: high, medium, low or none per region and
    GPU model), shown beside the create forms and the quotas."""
    lines: list[dict[str, Any]] = (await caller.api.get("/api/v1/capacity"))["data"]
    return lines


async def _types(caller: Caller) -> list[dict[str, Any]]:
    types: list[dict[str, Any]] = (await caller.api.get("/api/v1/instance-types"))["data"]
    return types


@router.get("/instances", response_class=HTMLResponse)
async def instances_page(request: Request) -> Response:
    caller = await signed_in(request)
    rows = await caller.api.get("/api/v1/instances", limit=200)
    return render(
        request,
        "instances.html",
        caller,
        rows=rows["data"],
        types=await _types(caller),
        capacity=await _capacity(caller),
    )


@router.get("/instances/rows", response_class=HTMLResponse)
async def instances_rows(request: Request) -> Response:
    caller = await signed_in(request)
    rows = await caller.api.get("/api/v1/instances", limit=200)
    return render(request, "_instance_rows.html", caller, rows=rows["data"])


@router.post("/instances")
async def create_instance(request: Request) -> Response:
    caller = await signed_in(request)
    form = await checked_form(request, caller)
    body: dict[str, Any] = {"instance_type": form.get("instance_type", ""), "class": "on_demand"}
    if form.get("class") in ("on_demand", "spot"):
        body["class"] = form["class"]
    if form.get("name"):
        body["name"] = form["name"]
    created = await caller.api.post("/api/v1/instances", body)
    return RedirectResponse(f"/instances#{created['id']}", status_code=303)


@router.post("/instances/{instance_id}/terminate")
async def terminate_instance(request: Request, instance_id: str) -> Response:
    caller = await signed_in(request)
    await checked_form(request, caller)
    await caller.api.post(f"/api/v1/instances/{instance_id}/terminate")
    return RedirectResponse("/instances", status_code=303)


# ---------------------------------------------------------------------------------- clusters


@router.get("/clusters", response_class=HTMLResponse)
async def clusters_page(request: Request) -> Response:
    caller = await signed_in(request)
    rows = await caller.api.get("/api/v1/clusters", limit=200)
    types = await _types(caller)
    models = sorted({t["gpu_model"] for t in types if t["whole_node"]})
    return render(
        request,
        "clusters.html",
        caller,
        rows=rows["data"],
        types=types,
        models=models,
        capacity=await _capacity(caller),
    )


@router.get("/clusters/rows", response_class=HTMLResponse)
async def clusters_rows(request: Request) -> Response:
    caller = await signed_in(request)
    rows = await caller.api.get("/api/v1/clusters", limit=200)
    return render(request, "_cluster_rows.html", caller, rows=rows["data"])


@router.post("/clusters")
async def create_cluster(request: Request) -> Response:
    caller = await signed_in(request)
    form = await checked_form(request, caller)
    try:
        count = int(form.get("node_count", ""))
    except ValueError:
        count = 0
    body: dict[str, Any] = {"gpu_model": form.get("gpu_model", ""), "node_count": count}
    if form.get("name"):
        body["name"] = form["name"]
    created = await caller.api.post("/api/v1/clusters", body)
    return RedirectResponse(f"/clusters/{created['id']}", status_code=303)


def _cluster_tree(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The cluster's nodes nested fabric → block → rack, for the drawing."""
    fabrics: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for node in cluster["nodes"]:
        path = node.get("topology_path") or {}
        fabric = path.get("fabric", "not placed yet")
        block = path.get("block", "—")
        rack = path.get("rack", "—")
        fabrics.setdefault(fabric, {}).setdefault(block, {}).setdefault(rack, []).append(node)
    return [
        {
            "name": f,
            "blocks": [
                {"name": b, "racks": [{"name": r, "nodes": n} for r, n in sorted(racks.items())]}
                for b, racks in sorted(blocks.items())
            ],
        }
        for f, blocks in sorted(fabrics.items())
    ]


@router.get("/clusters/{cluster_id}", response_class=HTMLResponse)
async def cluster_page(request: Request, cluster_id: str) -> Response:
    caller = await signed_in(request)
    cluster = await caller.api.get(f"/api/v1/clusters/{cluster_id}")
    template = "_cluster_body.html" if request.headers.get("hx-request") else "cluster.html"
    return render(request, template, caller, c=cluster, tree=_cluster_tree(cluster))


@router.post("/clusters/{cluster_id}/terminate")
async def terminate_cluster(request: Request, cluster_id: str) -> Response:
    caller = await signed_in(request)
    await checked_form(request, caller)
    await caller.api.post(f"/api/v1/clusters/{cluster_id}/terminate")
    return RedirectResponse(f"/clusters/{cluster_id}", status_code=303)


# ------------------------------------------------------------------------------ reservations


@router.get("/reservations", response_class=HTMLResponse)
async def reservations_page(request: Request) -> Response:
    caller = await signed_in(request)
    rows = await caller.api.get("/api/v1/reservations", limit=200)
    types = await _types(caller)
    models = sorted({t["gpu_model"] for t in types if t["whole_node"]})
    return render(request, "reservations.html", caller, rows=rows["data"], models=models)


@router.post("/reservations/offerings", response_class=HTMLResponse)
async def find_offerings(request: Request) -> Response:
    caller = await signed_in(request)
    form = await checked_form(request, caller)
    body: dict[str, Any] = {"gpu_model": form.get("gpu_model", "")}
    for field in ("node_count", "duration_hours"):
        try:
            body[field] = int(form.get(field, ""))
        except ValueError:
            body[field] = 0
    try:
        found = await caller.api.post("/api/v1/reservations/offerings", body)
    except ApiFailure as exc:
        return render(request, "_offerings.html", caller, offers=[], error=exc.message)
    return render(request, "_offerings.html", caller, offers=found["data"], error=None)


@router.post("/reservations")
async def buy_reservation(request: Request) -> Response:
    caller = await signed_in(request)
    form = await checked_form(request, caller)
    await caller.api.post("/api/v1/reservations", {"offering_id": form.get("offering_id", "")})
    return RedirectResponse("/reservations", status_code=303)


# ----------------------------------------------------------------------------------- billing


def _period(caller: Caller, given: str | None) -> str:
    if given and len(given) == 7 and given[4] == "-" and given.replace("-", "").isdigit():
        return given
    return caller.session.issued.strftime("%Y-%m")


@router.get("/billing", response_class=HTMLResponse)
async def billing_page(request: Request, period: str | None = None) -> Response:
    caller = await signed_in(request)
    month = _period(caller, period or console_of(request).clock.now().strftime("%Y-%m"))
    preview = await caller.api.get("/api/v1/invoices/preview", org_id=caller.org_id, period=month)
    invoices = await caller.api.get("/api/v1/invoices", org_id=caller.org_id, limit=100)
    return render(
        request, "billing.html", caller, preview=preview, invoices=invoices["data"], period=month
    )


@router.get("/billing/preview.csv")
async def billing_csv(request: Request, period: str | None = None) -> Response:
    caller = await signed_in(request)
    month = _period(caller, period or console_of(request).clock.now().strftime("%Y-%m"))
    reply = await caller.api.request(
        "GET",
        "/api/v1/invoices/preview",
        params={"org_id": caller.org_id, "period": month, "format": "csv"},
    )
    return Response(
        reply.body,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="invoice-preview-{month}.csv"'},
    )


@router.get("/billing/invoices/{invoice_id}.csv")
async def invoice_csv(request: Request, invoice_id: str) -> Response:
    caller = await signed_in(request)
    reply = await caller.api.request(
        "GET", f"/api/v1/invoices/{invoice_id}", params={"format": "csv"}
    )
    return Response(
        reply.body,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{invoice_id}.csv"'},
    )


# ---------------------------------------------------------------------------------- API keys


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(request: Request) -> Response:
    caller = await signed_in(request)
    keys = await caller.api.get("/api/v1/keys", limit=200)
    return render(request, "keys.html", caller, keys=keys["data"], created=None)


@router.post("/keys", response_class=HTMLResponse)
async def create_key(request: Request) -> Response:
    caller = await signed_in(request)
    form = await checked_form(request, caller)
    body: dict[str, Any] = {"name": form.get("name", "")}
    if form.get("expires_in_days"):
        try:
            days = int(form["expires_in_days"])
        except ValueError:
            days = 0
        body["expires_at"] = (console_of(request).clock.now() + timedelta(days=days)).isoformat()
    created = await caller.api.post("/api/v1/keys", body)
    keys = await caller.api.get("/api/v1/keys", limit=200)
    # The secret is in this one answer only (never stored by the console, never shown again).
    return render(request, "keys.html", caller, keys=keys["data"], created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    caller = await signed_in(request)
    await checked_form(request, caller)
    await caller.api.post(f"/api/v1/keys/{key_id}/revoke")
    return RedirectResponse("/keys", status_code=303)
