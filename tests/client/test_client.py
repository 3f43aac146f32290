"""The SDK's shape: every resource a typed attribute of ``Client``, requests only through the
public ``Transport``, and the methods added for the CLI (``me``, ``get_text``)."""

from __future__ import annotations

import typing

import httpx
import pytest

from neocloud.client import ApiError, Client
from neocloud.client.resources import Resource
from neocloud.client.transport import Transport

# Every resource the SDK has offered (README, CLI, tests): none may go missing or go untyped.
RESOURCES = {
    "fleet", "nodes", "orgs", "projects", "users", "keys", "ssh_keys", "quotas", "audit",
    "instance_types", "instances", "clusters", "reservations", "capacity", "images", "economics",
    "price_books", "usage", "invoices", "contracts", "credits", "billing_reports", "studio",
    "databases", "filesystems", "storage_pools",
}  # fmt: skip


def _offline(handler: typing.Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handler))


def test_every_resource_is_a_typed_attribute() -> None:
    """mypy and editors follow ``client.instances`` only if ``Client`` declares it: each
    resource on a client is declared with its own class, and each declared one is there."""
    hints = typing.get_type_hints(Client)
    client = Client(api_key="nck_test", http=_offline(lambda _: httpx.Response(404)))
    attached = {name: value for name, value in vars(client).items() if isinstance(value, Resource)}
    declared = {
        name: hint
        for name, hint in hints.items()
        if isinstance(hint, type) and issubclass(hint, Resource)
    }
    assert set(attached) == RESOURCES
    assert set(declared) == RESOURCES
    for name, resource in attached.items():
        assert type(resource) is declared[name], name
    assert isinstance(client.studio.models, Resource)  # a nested namespace, typed as well
    assert "models" in typing.get_type_hints(type(client.studio))


def test_get_text_retries_and_raises_as_get_does() -> None:
    seen: list[httpx.Request] = []
    answers = iter(
        [
            httpx.Response(503, json={"error": {"type": "service_unavailable", "code": "busy"}}),
            httpx.Response(200, text="a,b\n1,2\n", headers={"content-type": "text/csv"}),
            httpx.Response(
                404,
                json={
                    "error": {
                        "type": "not_found_error",
                        "code": "invoice_not_found",
                        "message": "no invoice inv_x",
                        "param": "invoice_id",
                    }
                },
            ),
        ]
    )

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    transport = Transport(api_key="nck_test", http=_offline(handle), retries=1)
    assert transport.get_text("invoices/preview", org_id="org_1", format="csv") == "a,b\n1,2\n"
    assert [r.url.path for r in seen] == ["/api/v1/invoices/preview"] * 2  # one retry of a 503
    assert seen[-1].url.params["org_id"] == "org_1"
    assert seen[-1].headers["authorization"] == "Bearer nck_test"
    with pytest.raises(ApiError) as missing:
        transport.get_text("invoices/inv_x", format="csv")
    assert (missing.value.status, missing.value.code, missing.value.param) == (
        404,
        "invoice_not_found",
        "invoice_id",
    )


def test_get_text_without_a_connection_is_an_api_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = Transport(http=_offline(refuse), retries=0)
    with pytest.raises(ApiError) as failed:
        transport.get_text("price-books/current/catalog")
    assert (failed.value.status, failed.value.code) == (0, "unreachable")


def test_me_says_who_the_key_is(admin: Client) -> None:
    me = admin.me()
    assert me["object"] == "principal"
    assert me["role"] == "owner"  # the bootstrap operator owns the operator org
    assert me["is_operator"] is True
    assert me["org"]["id"] == me["org_id"]
    assert me["user"]["id"] == me["user_id"]
    assert me == admin.get("me")  # the same answer as the raw GET the CLI used


def test_registering_a_model_without_prices_is_refused(admin: Client) -> None:
    """The SDK no longer sends "0" for prices nobody gave: the API refuses, and says how to
    serve the model free on purpose."""
    urls = ["http://10.0.0.9:8000/v1"]
    with pytest.raises(ApiError) as refused:
        admin.studio.models.add("acme/unpriced", upstream_urls=urls)
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        422,
        "price_required",
        "input_price_per_m",
    )
    assert "0" in refused.value.message
    created = admin.studio.models.add(
        "acme/unpriced", upstream_urls=urls, input_price_per_m="0", output_price_per_m="0"
    )
    assert created["pricing"] == {"input_per_m_tokens": "0", "output_per_m_tokens": "0"}
