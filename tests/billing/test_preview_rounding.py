"""The invoice preview rounds its lines the way the platform is configured to, as stored
invoices do (``NEOCLOUD_BILLING_ROUNDING``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from neocloud.client import Client
from neocloud.kernel.clock import VirtualClock, rfc3339
from neocloud.kernel.settings import Settings


@pytest.fixture(params=[("ROUND_HALF_UP", "0.01"), ("ROUND_HALF_EVEN", "0.00")], ids=str)
def rounding(request: pytest.FixtureRequest) -> tuple[str, str]:
    mode, amount = request.param
    return mode, amount


@pytest.fixture
def settings(tmp_path: Path, rounding: tuple[str, str]) -> Settings:
    return Settings(data_dir=tmp_path, key_touch_interval_s=0, billing_rounding=rounding[0])


def test_a_half_cent_token_line_follows_the_rounding_setting(
    admin: Client, acme: Client, clock: VirtualClock, rounding: tuple[str, str]
) -> None:
    # 25,000 input tokens at $0.20 per 1M cost exactly half a cent.
    admin.price_books.publish(
        "2026-04-01T00:00:00Z",
        token_prices={"llama": {"input_per_1m": "0.20", "output_per_1m": "0.60"}},
    )
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    event = {
        "id": "r1",
        "source": "studio",
        "type": "tokens",
        "subject": "llama",
        "time": rfc3339(clock.now()),
        "data": {"input_tokens": 25_000},
    }
    org = acme.get("orgs")["data"][0]["id"]
    assert admin.usage.send([event], org_id=org)["accepted"] == 1
    preview = acme.invoices.preview(org, "2026-04")
    assert [t["amount"]["amount"] for t in preview["token_lines"]] == [rounding[1]]
