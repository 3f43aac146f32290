"""The console's pure parts: the fleet matrix, the heatmap's cells, the Gantt rows, the reply's
cost, the money and time filters, and the session's seal (no server, no database)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from neocloud.console.app import money, when
from neocloud.console.playground import cost_of
from neocloud.console.session import open_session, same_token, seal_session
from neocloud.console.views import (
    GROUPS,
    HEALTHS,
    fleet_health_rows,
    fleet_matrix,
    gantt_rows,
    heatmap_cells,
)
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.secrets import SecretBox


def _line(
    model: str, state: str, domain: str | None, nodes: int, health: str | None = None
) -> dict[str, object]:
    return {
        "gpu_model": model,
        "state": state,
        "domain": domain,
        "nodes": nodes,
        "gpus": nodes * 8,
        "health": health,
    }


def test_fleet_matrix_orders_states_by_lifecycle_and_totals_gpus() -> None:
    summary = {
        "data": [
            _line("H100", "in_use", None, 3),
            _line("H100", "available", None, 5),
            _line("L40S", "failed", None, 1),
        ]
    }
    states, rows, totals = fleet_matrix(summary)
    assert states == ["available", "in_use", "failed"]
    assert [(r.gpu_model, r.by_state, r.total) for r in rows] == [
        ("H100", {"available": 40, "in_use": 24, "failed": 0}, 64),
        ("L40S", {"available": 0, "in_use": 0, "failed": 8}, 8),
    ]
    assert totals == {"available": 40, "in_use": 24, "failed": 8, "total": 72}


def test_fleet_health_rows_split_each_model_by_health_over_the_matrix_states() -> None:
    summary = {
        "data": [
            _line("H100", "available", None, 4, "healthy"),
            _line("H100", "available", None, 1, "warning"),
            _line("H100", "failed", None, 2, "failed"),
            _line("H100", "in_use", None, 3, "healthy"),
            _line("B200", "available", None, 1, "healthy"),
        ]
    }
    states, rows, _ = fleet_matrix(summary)
    assert [(r.gpu_model, r.total) for r in rows] == [("B200", 8), ("H100", 80)]
    health = fleet_health_rows(summary, states)
    assert [(r.gpu_model, r.health, r.by_state, r.total) for r in health] == [
        ("B200", "healthy", {"available": 8, "in_use": 0, "failed": 0}, 8),
        ("H100", "healthy", {"available": 32, "in_use": 24, "failed": 0}, 56),
        ("H100", "warning", {"available": 8, "in_use": 0, "failed": 0}, 8),
        ("H100", "failed", {"available": 0, "in_use": 0, "failed": 16}, 16),
    ]


def test_heatmap_cells_one_per_rack_with_its_path_and_state_groups() -> None:
    topology = {
        "levels": ["region", "fabric", "block", "rack"],
        "domains": [
            {"level": "rack", "name": "f1-b2-r1", "parent": "r/f1/f1-b2"},
            {"level": "rack", "name": "f1-b1-r1", "parent": "r/f1/f1-b1"},
            {"level": "block", "name": "f1-b1", "parent": "r/f1"},
        ],
    }
    summary = {
        "data": [
            _line("H100", "available", "f1-b2-r1", 2, "healthy"),
            _line("H100", "in_use", "f1-b2-r1", 1, "warning"),
            _line("H100", "cordoned", "f1-b2-r1", 1, "healthy"),
            _line("H200", "failed", "f1-b1-r1", 3, "failed"),
            _line("H200", "failed", "f1-b1-r1", 1, "warning"),
        ]
    }
    data = heatmap_cells(topology, summary)
    assert data["leaf"] == "rack"
    assert data["groups"] == list(GROUPS)
    assert data["healths"] == list(HEALTHS)
    assert data["parents"] == ["r/f1/f1-b1", "r/f1/f1-b2"]
    assert data["models"] == ["H100", "H200"]
    # [parent, rack, model, free, busy, held, setup, broken, gone, healthy, warning, failed],
    # ordered by path
    assert data["cells"] == [
        [0, "f1-b1-r1", 1, 0, 0, 0, 0, 4, 0, 0, 1, 3],
        [1, "f1-b2-r1", 0, 2, 1, 1, 0, 0, 0, 3, 1, 0],
    ]


def test_heatmap_cells_without_health_lines_count_states_only() -> None:
    topology = {"levels": ["rack"], "domains": [{"level": "rack", "name": "r1", "parent": ""}]}
    data = heatmap_cells(topology, {"data": [_line("H100", "in_use", "r1", 4)]})
    assert data["cells"] == [[0, "r1", 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]]


def test_gantt_rows_put_a_reservation_on_each_block_it_spans() -> None:
    reservations = [
        {
            "id": "rsv_1",
            "org_id": "org_a",
            "start": "s",
            "end": "e",
            "state": "active",
            "node_count": 2,
            "node_ids": ["n1", "n2"],
        },
        {
            "id": "rsv_2",
            "org_id": "org_b",
            "start": "s",
            "end": "e",
            "state": "scheduled",
            "node_count": 1,
            "node_ids": [],
        },
    ]
    rows = gantt_rows(reservations, {"n1": "f/b1", "n2": "f/b2"})
    assert [(r["block"], [b["id"] for b in r["bars"]]) for r in rows] == [
        ("f/b1", ["rsv_1"]),
        ("f/b2", ["rsv_1"]),
        ("unplaced", ["rsv_2"]),
    ]


def test_cost_of_a_reply_is_decimal_at_per_million_prices() -> None:
    usage = {"prompt_tokens": 1_000, "completion_tokens": 500}
    pricing = {"input_per_m_tokens": "0.20", "output_per_m_tokens": "0.60"}
    assert cost_of(usage, pricing) == Decimal("0.0005")


def test_money_keeps_its_currency_and_when_keeps_utc_on_hover() -> None:
    assert money({"amount": "1234.5", "currency": "USD"}) == "1,234.50 USD"
    assert money({"amount": "0.000125", "currency": "EUR"}) == "0.000125 EUR"
    assert money(None) == "—"
    html = str(when("2026-12-06T07:45:00Z"))
    assert 'datetime="2026-12-06T07:45:00Z"' in html
    assert 'title="2026-12-06 07:45 UTC"' in html
    assert str(when("<b>")) == "&lt;b&gt;"


def test_a_session_opens_only_with_its_box_and_before_it_expires() -> None:
    clock = VirtualClock()
    box = SecretBox(SecretBox.new_key())
    value, session = seal_session(box, key="nck_secret", clock=clock)
    assert "nck_secret" not in value
    opened = open_session(box, value, clock=clock)
    assert opened is not None
    assert opened.key == "nck_secret"
    assert opened.csrf == session.csrf
    assert open_session(SecretBox(SecretBox.new_key()), value, clock=clock) is None
    assert open_session(box, value[:-4] + "AAAA", clock=clock) is None
    assert open_session(box, None, clock=clock) is None
    clock.advance(timedelta(hours=12, seconds=1))
    assert open_session(box, value, clock=clock) is None
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token("abc", None)
