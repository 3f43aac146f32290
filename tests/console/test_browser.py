"""The console in a real headless Chromium against a running `neocloud up` with the demo fleet.

A tenant signs in, creates a cluster and watches it reach running with its topology, buys a
reservation from an offering, chats in the playground (streamed, with the token count and the
cost) and downloads its invoice preview as CSV; it cannot open operator pages or another org's
cluster, and a form posted without its CSRF token is refused. The operator opens the heatmap of
the 4,096-GPU fleet, cordons a node from its page and opens the economics dashboard. Every
request the pages make stays on the platform's origin and no page breaks its CSP. The main pages
are screenshot on every run; the images replace docs/screenshots/ only with
``NEOCLOUD_UPDATE_SCREENSHOTS=1`` (``make screenshots``), so a test run leaves the tree clean.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import SCREENSHOTS, Server, wait_for


class Watch:
    """What a page did: every URL it asked for, and console errors (a CSP violation is one)."""

    def __init__(self, page: Any, origin: str) -> None:
        self.origin = origin
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def check(self) -> None:
        foreign = [u for u in self.requests if not u.startswith((self.origin, "data:"))]
        assert not foreign, foreign
        assert not self.errors, self.errors


def _shot(page: Any, name: str) -> None:
    png = page.screenshot()
    assert png.startswith(b"\x89PNG"), name
    assert len(png) > 10_000, name  # a page, not a blank
    if os.environ.get("NEOCLOUD_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.png").write_bytes(png)


def _signin(page: Any, server: Server, key: str) -> None:
    page.goto(f"{server.url}/")
    assert page.url.endswith("/signin")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/")


@pytest.fixture
def tenant_page(browser: Any, server: Server) -> Iterator[tuple[Any, Watch, dict[str, Any]]]:
    tenant = server.tenant("acme")
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    watch = Watch(page, server.url)
    try:
        _signin(page, server, tenant["key"])
        yield page, watch, tenant
    finally:
        context.close()


def test_tenant_cluster_reservation_playground_and_invoice(
    tenant_page: tuple[Any, Watch, dict[str, Any]], server: Server
) -> None:
    page, watch, tenant = tenant_page
    assert tenant["key"] not in page.content()
    _shot(page, "overview")

    # A cluster: created from the form, it reaches running on the live-updating page.
    page.get_by_role("navigation").get_by_role("link", name="Clusters").click()
    page.wait_for_url(f"{server.url}/clusters")
    page.get_by_label("GPU model").select_option("H100-SXM-80GB")
    page.get_by_label("Nodes").fill("2")
    page.get_by_label("Name (optional)").fill("train")
    page.get_by_role("button", name="Create cluster").click()
    page.wait_for_url("**/clusters/clu_*")
    expect(page.locator("#cluster-state")).to_have_text("running", timeout=60_000)
    nodes = page.locator(".topology .node")
    assert nodes.count() == 2
    assert page.locator(".topology .fabric .block .rack").count() >= 1
    _shot(page, "cluster")

    # A reservation from an offering.
    page.get_by_role("navigation").get_by_role("link", name="Reservations").click()
    page.wait_for_url(f"{server.url}/reservations")
    page.get_by_label("GPU model").select_option("H100-SXM-80GB")
    page.get_by_label("Nodes").fill("1")
    page.get_by_label("Hours").fill("24")
    page.get_by_role("button", name="Find offerings").click()
    buy = page.locator("button.buy").first
    buy.wait_for()
    _shot(page, "reservations")
    buy.click()
    page.wait_for_url(f"{server.url}/reservations")
    assert page.locator("tbody .state").first.text_content() in ("scheduled", "active")

    # The playground: a streamed reply, then its token counts and cost.
    page.get_by_role("navigation").get_by_role("link", name="Playground").click()
    page.wait_for_url(f"{server.url}/playground")
    page.evaluate(
        """() => { window.__updates = 0;
        new MutationObserver(() => { window.__updates += 1; })
          .observe(document.getElementById('transcript'),
                   {subtree: true, childList: true, characterData: true}); }"""
    )
    page.get_by_label("Message").fill("Tell me a short story about a GPU.")
    with page.expect_response("**/playground/stream", timeout=120_000) as streamed:
        page.get_by_role("button", name="Send").click()
    assert streamed.value.headers["content-type"].startswith("text/event-stream")
    page.wait_for_selector("#usage[data-done='1']", timeout=120_000)
    usage = page.locator("#usage").text_content() or ""
    assert "tokens in" in usage
    assert "tokens out" in usage
    assert "USD" in usage
    assert page.evaluate("window.__updates") >= 3  # the reply grew piece by piece
    assert (page.locator("#transcript .assistant").text_content() or "").startswith("Model: ")
    _shot(page, "playground")

    # Usage and the invoice preview, downloaded as CSV.
    page.get_by_role("navigation").get_by_role("link", name="Billing").click()
    page.wait_for_url(f"{server.url}/billing")
    assert "USD" in (page.locator("#preview-total").text_content() or "")
    with page.expect_download() as download:
        page.locator("#csv").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) >= 1
    assert rows[0]
    _shot(page, "billing")
    watch.check()


def test_tenant_is_refused_operator_pages_other_orgs_and_forms_without_csrf(
    tenant_page: tuple[Any, Watch, dict[str, Any]], server: Server
) -> None:
    page, watch, _ = tenant_page
    other = server.tenant("globex")
    theirs = server.api(
        "POST", "/clusters", other["key"], json={"gpu_model": "H100-SXM-80GB", "node_count": 1}
    )
    answer = page.goto(f"{server.url}/operator/heatmap")
    assert answer.status == 403
    assert page.locator("h1").text_content() == "Operators only"
    answer = page.goto(f"{server.url}/clusters/{theirs['id']}")
    assert answer.status == 404
    assert page.locator("h1").text_content() == "Not found"
    assert "Traceback" not in page.content()
    # The browser's own session cookie, but no CSRF token: refused, and no key is made.
    refused = page.request.post(f"{server.url}/keys", form={"name": "forged"})
    assert refused.status == 403
    page.goto(f"{server.url}/keys")
    assert "forged" not in page.content()
    watch.errors.clear()  # the 403 and 404 pages log their status in the console, as they should
    watch.check()


def test_operator_heatmap_cordon_and_economics(browser: Any, server: Server) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    watch = Watch(page, server.url)
    try:
        _signin(page, server, server.admin_key)
        page.get_by_role("navigation").get_by_role("link", name="Fleet", exact=True).click()
        page.wait_for_url(f"{server.url}/operator/fleet")
        assert "4,096" in (page.locator(".cards").text_content() or "")
        _shot(page, "fleet")

        page.get_by_role("navigation").get_by_role("link", name="Heatmap").click()
        page.wait_for_url(f"{server.url}/operator/heatmap")
        data = page.evaluate("JSON.parse(document.getElementById('heatmap-data').textContent)")
        states = len(data["groups"])
        assert sum(sum(c[3 : 3 + states]) for c in data["cells"]) == 512  # the whole demo fleet
        assert page.locator("main *").count() < 100  # one canvas, not 512 elements
        canvas = page.locator("#heatmap")
        box = canvas.bounding_box()
        assert box
        assert box["height"] > 50
        page.mouse.move(box["x"] + 9, box["y"] + 23)
        wait_for("a hover line", lambda: "/" in (page.locator("#heat-hover").text_content() or ""))
        _shot(page, "heatmap")
        page.mouse.click(box["x"] + 9, box["y"] + 23)  # a block cell opens its fabric's racks
        page.wait_for_url("**/operator/heatmap?open=*")
        page.get_by_label("Colour by").select_option("health")
        expect(page.locator("#legend")).to_contain_text("healthy")
        box = page.locator("#heatmap").bounding_box()  # the opened page has its own layout
        assert box
        page.mouse.move(box["x"] + 1, box["y"] + 1)
        page.mouse.move(box["x"] + 9, box["y"] + 23)
        hover = page.locator("#heat-hover")
        wait_for("a health hover", lambda: "healthy" in (hover.text_content() or ""))
        page.mouse.click(box["x"] + 9, box["y"] + 23)
        page.wait_for_url("**/operator/nodes?rack=*")
        page.locator("tbody a").first.click()
        page.wait_for_url("**/operator/nodes/node_*")
        page.get_by_label("Reason (optional)").fill("console test")
        page.get_by_role("button", name="Cordon", exact=True).click()
        expect(page.locator("#node-state")).to_have_text("cordoned")
        _shot(page, "node")

        page.get_by_role("navigation").get_by_role("link", name="Economics").click()
        page.wait_for_url(f"{server.url}/operator/economics")
        assert page.locator("#kpis .card").count() >= 3
        page.wait_for_selector("#econ-chart canvas")
        _shot(page, "economics")
        watch.check()
    finally:
        context.close()
