"""The console over HTTP in process (no browser): sessions, CSRF, the console's authorization,
error pages, the CSP and same-origin assets. The browser scenarios are in test_browser.py."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.compute.tables import AllocationRow
from neocloud.console.session import SESSION_COOKIE, open_session
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x: {gpu_model: H100-SXM-80GB, gpu_count: 8, vcpus: 224, ram_gib: 2048, nvme_tib: 30}
sites:
  - region: r1
    zone: r1a
    fabrics:
      - {name: r1a-ib01, template: h100-8x, blocks: 2, racks_per_block: 2, nodes_per_rack: 2}
"""


def _signin(http: TestClient, key: str) -> None:
    page = http.get("/signin")
    assert page.status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    done = http.post(
        "/signin", data={"csrf": token.group(1), "api_key": key}, follow_redirects=False
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/"


def _csrf(html: str) -> str:
    found = re.search(r'data-csrf="([^"]+)"', html)
    assert found
    return found.group(1)


@pytest.fixture
def world(app, admin: Client, admin_key: str) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    admin.fleet.import_spec(SPEC)
    orgs = {}
    for slug in ("acme", "globex"):
        org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
        user = admin.users.list(org["id"])["data"][0]
        key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
        orgs[slug] = {"org": org, "key": key["secret"]}
    return {"admin_key": admin_key, **orgs}


def test_pages_need_a_session_and_the_signin_form_needs_its_token(app, world) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app) as http:
        assert http.get("/", follow_redirects=False).headers["location"] == "/signin"
        assert http.get("/operator/fleet", follow_redirects=False).status_code == 303
        refused = http.post("/signin", data={"api_key": world["acme"]["key"]})
        assert refused.status_code == 403
        assert "security token" in refused.text
        assert SESSION_COOKIE not in http.cookies


def test_a_wrong_key_is_refused_in_words_and_never_echoed(app, world) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app) as http:
        page = http.get("/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        bad = "nck_" + "x" * 40
        answer = http.post("/signin", data={"csrf": token, "api_key": bad})
        assert answer.status_code == 401
        assert bad not in answer.text
        assert "<h1>Sign in" in answer.text


def test_session_cookie_is_sealed_httponly_strict_and_key_never_in_pages(
    app, world, clock: VirtualClock
) -> None:  # type: ignore[no-untyped-def]
    key = world["acme"]["key"]
    with TestClient(app) as http:
        _signin(http, key)
        raw = http.cookies[SESSION_COOKIE].strip('"')
        assert key not in raw
        session = open_session(app.state.console.box, raw, clock=clock)
        assert session is not None
        assert session.key == key
        for path in (
            "/",
            "/instances",
            "/clusters",
            "/reservations",
            "/billing",
            "/keys",
            "/playground",
        ):
            page = http.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert key not in page.text
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            for url in re.findall(r'(?:src|href|action|hx-get|hx-post)="([^"]*)"', page.text):
                assert not re.match(r"^(https?:)?//", url), (path, url)
    # The cookie's attributes, as the browser is told.
    with TestClient(app) as http:
        page = http.get("/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        done = http.post("/signin", data={"csrf": token, "api_key": key}, follow_redirects=False)
        cookie = next(
            v for k, v in done.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
        )
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie.replace("Strict", "strict")
        clock.advance(13 * 3600)  # past the session's 12 hours
        assert http.get("/", follow_redirects=False).status_code == 303


def test_a_tenant_sees_capacity_advice_beside_its_quotas_and_create_forms(  # type: ignore[no-untyped-def]
    app, world, admin: Client
) -> None:
    advice = admin.get("capacity")["data"]
    assert [(c["region"], c["gpu_model"]) for c in advice] == [("r1", "H100-SXM-80GB")]
    with TestClient(app) as http:
        _signin(http, world["acme"]["key"])
        for path in ("/", "/instances", "/clusters"):
            page = http.get(path).text
            table = re.search(r'<table id="capacity">(.*?)</table>', page, re.S)
            assert table, path
            row = re.sub(r"<[^>]+>", "|", table.group(1))
            cells = [c for c in row.split("|") if c.strip()]
            assert cells[-5:] == [
                "r1",
                "H100-SXM-80GB",
                advice[0]["on_demand"],
                advice[0]["spot"],
                advice[0]["partial_node"],
            ], (path, cells)
            assert advice[0]["on_demand"] == "high"  # 64 GPUs, all free
            assert ">64<" not in table.group(1)  # a tenant never sees the operator's counts


def test_forms_without_the_session_token_are_refused(app, world) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app) as http:
        _signin(http, world["acme"]["key"])
        refused = http.post("/keys", data={"name": "sneaky"})
        assert refused.status_code == 403
        assert "security token" in refused.text
        wrong = http.post("/keys", data={"name": "sneaky", "csrf": "not-it"})
        assert wrong.status_code == 403
        keys = http.get("/keys")
        assert "sneaky" not in keys.text
        made = http.post("/keys", data={"name": "ci", "csrf": _csrf(keys.text)})
        assert made.status_code == 200
        secret = re.search(r'id="new-secret">([^<]+)<', made.text)
        assert secret
        assert secret.group(1).startswith("nck_")
        again = http.get("/keys")
        assert secret.group(1) not in again.text  # shown once


def test_a_tenant_cannot_open_operator_pages_or_another_orgs_objects(
    app, world, admin: Client
) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app) as http:
        _signin(http, world["acme"]["key"])
        for path in ("/operator/fleet", "/operator/heatmap", "/operator/economics"):
            page = http.get(path)
            assert page.status_code == 403, path
            assert "Operators only" in page.text
            assert "Traceback" not in page.text
        other = http.get("/clusters/clu_00000000000000000000000000")
        assert other.status_code == 404
        assert "<h1>Not found</h1>" in other.text
        nav = http.get("/")
        assert "/operator/fleet" not in nav.text


def test_the_operator_sees_fleet_pages(app, world, admin: Client, clock: VirtualClock) -> None:  # type: ignore[no-untyped-def]
    clock.advance(36 * 3600)  # the fleet in service for the last day and a half
    with TestClient(app) as http:
        _signin(http, world["admin_key"])
        for path in (
            "/operator/fleet",
            "/operator/heatmap",
            "/operator/calendar",
            "/operator/revenue",
            "/operator/nodes",
        ):
            page = http.get(path)
            assert page.status_code == 200, (path, page.text[:800])
        assert "/operator/fleet" in http.get("/").text
        fleet = http.get("/operator/fleet").text
        assert "H100-SXM-80GB" in fleet
        assert ">64<" in fleet
        assert 'id="fleet-health"' in fleet  # model x health x state
        use = re.search(r'id="use-data">(.*?)</script>', fleet, re.S)
        assert use  # utilization over time: 30 daily points, the 64 GPUs in service, none used
        points = json.loads(use.group(1))
        assert len(points) == 30
        assert {p["gpu_hours"] for p in points} == {0}
        assert [p["capacity_gpu_hours"] for p in points[-3:]] == [0, 64 * 12, 64 * 24]
        assert points[-1]["utilization"] == 0
        assert points[0]["utilization"] is None  # no node in service yet
        week = http.get("/operator/fleet", params={"window_days": 7}).text
        found = re.search(r'id="use-data">(.*?)</script>', week, re.S)
        assert found
        assert len(json.loads(found.group(1))) == 28  # every 6 h
        assert 'health-healthy">healthy</span>' in fleet
        assert "gpu_model=H100-SXM-80GB&amp;health=healthy&amp;state=available" in fleet
        heat = http.get("/operator/heatmap").text
        assert heat.count("<div") < 60  # cells are drawn on a canvas, not as elements
        # The whole fleet at one cell per block (4 nodes each), a click opening its fabric.
        assert '"parents":["r1/r1a/r1a-ib01"]' in heat
        assert '"leaf":"block"' in heat
        assert '"drill":"fabric"' in heat
        assert '[0,"r1a-ib01-b01",0,4,0,0,0,0,0,4,0,0]' in heat  # 4 nodes free, healthy
        assert 'id="heat-by"' in heat  # the colour selector: state or health
        # An opened fabric: one cell per rack (2 nodes each), a click listing its nodes.
        racks = http.get("/operator/heatmap", params={"open": "r1a-ib01"}).text
        assert '"parents":["r1/r1a/r1a-ib01/r1a-ib01-b01","r1/r1a/r1a-ib01/r1a-ib01-b02"]' in racks
        assert '[0,"r1a-ib01-b01-r01",0,2,0,0,0,0,0,2,0,0]' in racks
        assert '"drill":null' in racks
        assert "fabric r1a-ib01" in racks
        node = admin.nodes.list(limit=1)["data"][0]
        page = http.get(f"/operator/nodes/{node['id']}")
        assert node["hostname"] in page.text
        done = http.post(
            f"/operator/nodes/{node['id']}/action",
            data={"action": "cordon", "csrf": _csrf(page.text)},
        )
        assert done.status_code == 200
        assert 'id="node-state">cordoned' in done.text
        assert admin.nodes.get(node["id"])["state"] == "cordoned"


def test_the_economics_dashboard_stresses_a_pasted_scenario(app, world) -> None:  # type: ignore[no-untyped-def]
    scenario = (ROOT / "examples" / "economics" / "h100-1024.yaml").read_text()
    with TestClient(app) as http:
        _signin(http, world["admin_key"])
        page = http.get("/operator/economics")
        assert page.status_code == 200, page.text[:800]
        # This fleet's nodes carry no capex: no live projection, said in words; the form stays.
        assert "No live projection: live mode needs nodes with capex" in page.text
        done = http.post(
            "/operator/economics/stress", data={"scenario": scenario, "csrf": _csrf(page.text)}
        )
        assert done.status_code == 200, done.text[:800]
        assert 'id="econ-data"' in done.text
        assert 'id="stresses"' in done.text
        assert 'id="tornado-data">{"metric":"npv"' in done.text
        bad = http.post(
            "/operator/economics/stress", data={"scenario": "a: [", "csrf": _csrf(page.text)}
        )
        assert bad.status_code == 422
        assert "not YAML" in bad.text


def test_every_console_asset_ships_in_the_wheel() -> None:
    """pyproject's package-data globs cover every template and static file of the console."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        globs = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["neocloud"]
    package = ROOT / "src" / "neocloud"
    files = [
        p.relative_to(package).as_posix()
        for folder in ("console/templates", "console/static")
        for p in (package / folder).rglob("*")
        if p.is_file()
    ]
    assert len(files) > 20
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, missing


def test_the_heatmap_colours_by_tenant_from_open_allocations(  # type: ignore[no-untyped-def]
    app, world, admin: Client, db: Database, clock: VirtualClock
) -> None:
    acme, globex = world["acme"]["org"]["id"], world["globex"]["org"]["id"]
    nodes = admin.nodes.list(topology={"rack": "r1a-ib01-b01-r01"})["data"]
    assert len(nodes) == 2
    now = clock.now()
    with db.transaction() as s:
        for i, (org, node, gpus, end) in enumerate(
            [
                (acme, nodes[0]["id"], 8, None),
                (globex, nodes[1]["id"], 4, None),
                (globex, nodes[1]["id"], 4, now - timedelta(minutes=1)),  # ended: not counted
            ]
        ):
            s.add(
                AllocationRow(
                    id=f"alc_t{i}",
                    org_id=org,
                    node_id=node,
                    gpu_model="H100-SXM-80GB",
                    gpu_count=gpus,
                    gpu_indices=list(range(gpus)),
                    vcpus=16,
                    ram_gib=128,
                    cls="on_demand",
                    start_at=now - timedelta(hours=2),
                    end_at=end,
                    created_at=now - timedelta(hours=2),
                )
            )
    lines = admin.get("capacity/tenants", group_by="block")["data"]
    assert lines == [
        {"domain": "r1a-ib01-b01", "org_id": acme, "gpus": 8},
        {"domain": "r1a-ib01-b01", "org_id": globex, "gpus": 4},
    ]
    with pytest.raises(ApiError) as exc:
        admin.get("capacity/tenants", group_by="row")
    assert (exc.value.status, exc.value.param) == (422, "group_by")
    with TestClient(app) as http:
        _signin(http, world["admin_key"])
        heat = http.get("/operator/heatmap").text
        assert '<option value="tenant">tenant</option>' in heat
        data = json.loads(re.search(r'id="heatmap-data">(.*?)</script>', heat, re.S).group(1))  # type: ignore[union-attr]
        # The block's dominant tenant, its GPUs, all GPUs held there and the block's 32 GPUs.
        assert data["orgs"] == [acme]
        assert data["tenants"] == {"r1a-ib01-b01": [0, 8, 12, 32]}
        racks = http.get("/operator/heatmap", params={"open": "r1a-ib01"}).text
        data = json.loads(re.search(r'id="heatmap-data">(.*?)</script>', racks, re.S).group(1))  # type: ignore[union-attr]
        assert data["tenants"] == {"r1a-ib01-b01-r01": [0, 8, 12, 16]}
        _signin(http, world["acme"]["key"])
        assert http.get("/operator/heatmap").status_code == 403
