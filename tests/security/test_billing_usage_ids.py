"""Issue 13, finding 2: a tenant cannot make its own Studio usage unbillable (both backends).

Billing dedupes usage on (org, source, id) and the Studio meters each request as a ``studio``
event whose id is the request id. Request ids were a per-process prefix and a counter, so a
member could read one chat's id, post zero-token ``studio`` events under the next ids, and
have its following chats dropped as duplicates of them. Now only an operator admin may write
usage events (a tenant gets 403 ``usage_events_operator_only``), and every request id the
platform mints is 96 random bits: unrelated to the one before, and never shared by two
processes.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock, rfc3339
from neocloud.kernel.settings import Settings
from neocloud.studio.engines.fake import fake_catalog
from neocloud.studio.runtime import StudioRuntime

APRIL = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
PRICES = {"neocloud/echo": {"input_per_1m": "1000000", "output_per_1m": "2000000"}}
CHAT_ID = re.compile(r"^chatcmpl-[0-9a-f]{24}$")


@pytest.fixture
def studio_app(settings: Settings, db: Database, clock: VirtualClock) -> FastAPI:
    """The app on the Studio's deterministic engines (``neocloud/echo``)."""
    app = create_app(settings=settings, db=db, clock=clock)
    app.state.studio.catalog = fake_catalog()
    return app


@pytest.fixture
def http(studio_app: FastAPI, admin_key: str, clock: VirtualClock) -> Iterator[TestClient]:
    with TestClient(studio_app, raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {admin_key}"
        book = {"effective_from": "2026-04-01T00:00:00Z", "token_prices": PRICES}
        assert http.post("/api/v1/price-books", json=book).status_code == 201
        clock.set(APRIL)
        yield http


@pytest.fixture
def tenant(http: TestClient, admin_key: str) -> tuple[str, str]:
    """(org id, the owner's API key secret) of a fresh tenant org."""
    admin = Client(api_key=admin_key, http=http, retries=0)
    org = admin.orgs.create("Acme", slug="acme", owner_email="owner@acme.example")
    owner = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=owner["id"])
    return str(org["id"]), str(key["secret"])


def _chat(http: TestClient, secret: str) -> Any:
    oai = openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=secret,
        http_client=http,
        max_retries=0,
        default_headers={"Authorization": f"Bearer {secret}"},
    )
    return oai.chat.completions.create(
        model="neocloud/echo", messages=[{"role": "user", "content": "a b"}], max_tokens=3
    )


def _send(http: TestClient, secret: str, events: list[dict[str, Any]], **params: str) -> Any:
    return http.post(
        "/api/v1/usage/events",
        json={"events": events},
        params=params,
        headers={"Authorization": f"Bearer {secret}"},
    )


def _zero_event(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "source": "studio",
        "type": "tokens",
        "subject": "neocloud/echo",
        "time": rfc3339(APRIL),
        "data": {"model": "neocloud/echo", "input_tokens": 0, "output_tokens": 0},
    }


def test_a_tenant_cannot_pre_empt_its_next_chats_and_the_next_chat_is_billed(
    studio_app: FastAPI, http: TestClient, admin_key: str, tenant: tuple[str, str]
) -> None:
    org, secret = tenant
    first = _chat(http, secret)
    assert CHAT_ID.match(first.id)
    # What the attack sent: zero-token studio events under the ids the counter would give next.
    base = int(first.id[-12:], 16)
    guesses = [_zero_event(f"{first.id[:-12]}{base + i:012x}") for i in range(1, 4)]
    refused = _send(http, secret, guesses)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "usage_events_operator_only"
    as_other_source = _send(http, secret, [{**guesses[0], "source": "mine"}])
    assert as_other_source.status_code == 403  # no source is a tenant's to write
    assert _send(http, secret, guesses, org_id=org).status_code == 403

    second = _chat(http, secret)
    runtime: StudioRuntime = studio_app.state.studio
    runtime.usage.flush()  # the background flusher may have written some already: no count
    preview = http.get("/api/v1/invoices/preview", params={"org_id": org, "period": "2026-04"})
    assert preview.status_code == 200
    [line] = preview.json()["token_lines"]
    billed = 2 * (first.usage.prompt_tokens + 2 * first.usage.completion_tokens)
    assert line["amount"]["amount"] == f"{billed}.00"  # both chats, at $1 and $2 per token
    assert second.id != first.id


def test_operator_admins_may_write_usage_for_an_org(
    http: TestClient, admin_key: str, tenant: tuple[str, str]
) -> None:
    org, _ = tenant
    sent = _send(http, admin_key, [_zero_event("backfill-1")], org_id=org)
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == 1


def test_the_sdk_refusal_is_precise(http: TestClient, tenant: tuple[str, str]) -> None:
    _, secret = tenant
    client = Client(api_key=secret, http=http, retries=0)
    with pytest.raises(ApiError) as info:
        client.usage.send([_zero_event("x")])
    assert (info.value.status, info.value.code) == (403, "usage_events_operator_only")


def test_request_ids_are_not_predictable_from_the_one_before(
    http: TestClient, tenant: tuple[str, str]
) -> None:
    _, secret = tenant
    ids = [_chat(http, secret).id for _ in range(3)]
    assert all(CHAT_ID.match(i) for i in ids)
    bodies = [i.removeprefix("chatcmpl-") for i in ids]
    # A prefix and a counter shared the first 12 hex digits; 96 random bits share none by
    # design (the chance that two do by luck is 2^-48).
    assert len({b[:12] for b in bodies}) == 3
    assert len({b[12:] for b in bodies}) == 3
    platform_ids = [http.get("/api/v1/orgs").headers["x-request-id"] for _ in range(3)]
    assert all(re.match(r"^req_[0-9a-f]{24}$", i) for i in platform_ids)
    assert len({i[4:16] for i in platform_ids}) == 3


_MINT = """
import json
from neocloud.api.middleware import new_request_id
from neocloud.studio.metering import request_ids
print(json.dumps([request_ids.new("chatcmpl") for _ in range(2000)]
                 + [new_request_id() for _ in range(2000)]))
"""


def test_two_processes_never_mint_the_same_id() -> None:
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _MINT], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    a, b = (set(r) for r in runs)
    assert len(a) == len(b) == 4000
    assert not a & b
    # Nor does one id give the next away: consecutive ids share no leading digits by design.
    for ids in runs:
        tails = [i.split("-", 1)[-1].split("_", 1)[-1] for i in ids]
        shared = sum(x[:8] == y[:8] for x, y in itertools.pairwise(tails))
        assert shared == 0
