"""The agent's loop and its HTTP transport, against a small local HTTP server that records
what the agent posts and answers as the control plane would (the real control plane is the
``agentcp`` work; here the contract is checked field by field, ``contract.py``)."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from neocloud.agent.gpus import RecordedSource
from neocloud.agent.loop import Agent, Backoff
from neocloud.agent.main import AgentOptions, run
from neocloud.agent.transport import ControlPlaneError, HttpControlPlane
from neocloud.agent.wire import Answer, CheckResult
from neocloud.kernel.clock import VirtualClock

from .contract import check_heartbeat

TOKEN = "nca_" + "s3cr3t" * 6
IDLE = {"interval_s": 10.0, "node_state": "available", "run_active_checks": True}
BUSY = {"interval_s": 10.0, "node_state": "allocated", "run_active_checks": False}
SRC = str(Path(__file__).resolve().parents[2] / "src")


@dataclass
class RecordingControlPlane:
    """A control plane in memory: records bodies, answers from ``answers`` (then BUSY); an
    exception in ``answers`` is raised instead."""

    answers: list[Any] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def heartbeat(self, payload: dict[str, Any]) -> Answer:
        self.bodies.append(json.loads(json.dumps(payload)))
        answer = self.answers.pop(0) if self.answers else BUSY
        if isinstance(answer, Exception):
            raise answer
        return Answer(**answer)

    def close(self) -> None:
        return None


class Server:
    """A local HTTP server on 127.0.0.1: records each request (path, headers, JSON body) and
    answers with the scripted (status, body, headers) in turn, then 200 ``BUSY``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, Any, dict[str, str]]] = []
        self.seen = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                outer.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                status, answer, headers = outer.script.pop(0) if outer.script else (200, BUSY, {})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
                outer.seen.set()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def _agent(plane: Any, *, waits: list[float], stop_after: int, **kw: Any) -> Agent:
    """An agent on the recorded H100 whose wait records the delay and stops after
    ``stop_after`` waits (no sleeping)."""

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) >= stop_after

    kw.setdefault("checks", lambda: [CheckResult("gpu0.gemm_bf16", "pass", "ok", 700.0, "TFLOP/s")])
    return Agent(
        node_id="node_1",
        source=RecordedSource("h100"),
        control_plane=plane,
        clock=VirtualClock(),
        wait=wait,
        backoff=Backoff(rng=random.Random(7)),
        **kw,
    )


def test_heartbeats_over_http_match_the_contract_and_carry_the_token(server: Server) -> None:
    server.script = [(200, IDLE, {})]
    plane = HttpControlPlane(server.url, TOKEN)
    waits: list[float] = []
    agent = _agent(plane, waits=waits, stop_after=2)
    assert agent.run() == 0
    plane.close()
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 3  # first beat, the checks' beat (node idle), one more
    for r in server.requests:
        assert r["path"] == "/api/v1/agent/heartbeat"
        assert r["auth"] == f"Bearer {TOKEN}"
        check_heartbeat(r["body"])
    first, checks, third = bodies
    assert first["simulated"] is True
    assert first["node_id"] == "node_1"
    assert len(first["inventory"]["gpus"]) == 8
    assert len(first["telemetry"]) == 8
    assert first["sent_at"] == "2026-01-01T00:00:00Z"
    assert first["checks"] == []
    assert checks["inventory"] is None  # unchanged: sent once
    assert [c["name"] for c in checks["checks"]] == ["gpu0.gemm_bf16"]
    assert third["checks"] == []  # taken: not sent again
    assert waits == [10.0, 10.0]  # the answer's interval


def test_inventory_is_sent_again_when_it_changes_and_after_a_failed_beat() -> None:
    plane = RecordingControlPlane(answers=[BUSY, ControlPlaneError("down"), BUSY, BUSY])
    waits: list[float] = []
    agent = _agent(plane, waits=waits, stop_after=4)
    agent.run()
    has_inventory = [b["inventory"] is not None for b in plane.bodies]
    assert has_inventory == [True, False, False, False]
    # a new inventory (a GPU fell off): sent with the next beat, again until one is taken
    agent.source = RecordedSource("h100-lost-gpu")
    plane.answers = [ControlPlaneError("down"), BUSY, BUSY]
    plane.bodies.clear()
    agent.stop_event.clear()
    waits.clear()
    agent.run()
    assert [len(b["inventory"]["gpus"]) if b["inventory"] else None for b in plane.bodies] == [
        7,
        7,
        None,
        None,
    ]


def test_inventory_is_sent_hourly_even_when_unchanged() -> None:
    now = [0.0]
    plane = RecordingControlPlane()
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        now[0] += 1800.0
        return len(waits) >= 3

    agent = Agent(node_id="n", source=RecordedSource("h200"), control_plane=plane,
                  checks=list, wait=wait, monotonic=lambda: now[0])  # fmt: skip
    agent.run()
    assert [b["inventory"] is not None for b in plane.bodies] == [True, False, True]


def test_active_checks_run_only_when_idle_and_at_most_hourly() -> None:
    now = [0.0]
    runs: list[float] = []

    def checks() -> list[CheckResult]:
        runs.append(now[0])
        return [CheckResult("gpu0.hbm_bandwidth", "warn", "slow", 1500.0, "GB/s")]

    def wait(seconds: float) -> bool:
        now[0] += 600.0
        return now[0] > 7200.0

    plane = RecordingControlPlane(answers=[BUSY, IDLE, IDLE] + [IDLE] * 30)
    agent = Agent(node_id="n", source=RecordedSource("h100"), control_plane=plane,
                  checks=checks, wait=wait, monotonic=lambda: now[0])  # fmt: skip
    agent.run()
    assert runs == [600.0, 4200.0]  # not while allocated; then once an hour


def test_backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after() -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, rng=random.Random(1))
    delays = [backoff.delay(n) for n in range(1, 10)]
    steps = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    assert len(set(delays)) == len(delays)  # jittered: no two agents in step
    assert backoff.delay(1, at_least_s=30.0) == 30.0


def test_failures_back_off_then_recover(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    server.script = [
        (500, {"error": {"message": "boom", "code": "internal_error"}}, {}),
        (503, {"error": {"message": "busy"}}, {"Retry-After": "7"}),
        (200, BUSY, {}),
    ]
    plane = HttpControlPlane(server.url, TOKEN)
    waits: list[float] = []
    agent = _agent(plane, waits=waits, stop_after=3)
    with caplog.at_level(logging.DEBUG):
        agent.run()
    plane.close()
    assert 0.5 <= waits[0] <= 1.0
    assert waits[1] == 7.0
    assert waits[2] == 10.0
    assert "heartbeat answered 500: boom" in caplog.text
    assert "taken again after 2 failures" in caplog.text
    assert [r["body"]["inventory"] is not None for r in server.requests] == [True, True, True]
    assert TOKEN not in caplog.text


def test_unreachable_control_plane_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    plane = HttpControlPlane("http://127.0.0.1:9", TOKEN, timeout_s=2.0)  # discard port
    waits: list[float] = []
    with caplog.at_level(logging.DEBUG):
        _agent(plane, waits=waits, stop_after=3).run()
    assert len(waits) == 3
    assert waits[2] > waits[0]
    assert "unreachable" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("status", "says"),
    [(401, "revoked or wrong"), (403, "another node"), (422, "bad field (param telemetry)")],
)
def test_once_fails_with_a_clear_message_and_never_logs_the_token(
    server: Server, caplog: pytest.LogCaptureFixture, tmp_path: Path, status: int, says: str
) -> None:
    server.script = [(status, {"error": {"message": "bad field", "param": "telemetry"}}, {})]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    options = AgentOptions(node_id="node_1", control_plane=server.url, token_file=token_file,
                           recorded="h100", once=True)  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        assert run(options) == 1
    assert says in caplog.text
    assert TOKEN not in caplog.text
    assert "s3cr3t" not in caplog.text
    assert TOKEN not in repr(options)
    assert server.requests[0]["auth"] == f"Bearer {TOKEN}"


def test_once_posts_one_heartbeat_and_exits_zero(server: Server, tmp_path: Path) -> None:
    options = AgentOptions(node_id="node_1", control_plane=server.url, token=TOKEN,
                           recorded="h100-ecc", once=True)  # fmt: skip
    assert run(options) == 0
    assert len(server.requests) == 1
    body = server.requests[0]["body"]
    check_heartbeat(body)
    gpu3 = body["telemetry"][3]
    assert (gpu3["ecc_uncorrectable"], gpu3["xid"]) == (1, [94])


def test_once_on_an_idle_node_reports_the_checks_in_a_second_heartbeat(server: Server) -> None:
    server.script = [(200, IDLE, {}), (200, IDLE, {})]
    options = AgentOptions(node_id="node_1", control_plane=server.url, token=TOKEN,
                           recorded="h100", once=True)  # fmt: skip
    assert run(options) == 0
    checks = server.requests[1]["body"]["checks"]
    assert {c["name"] for c in checks} == {"gemm_bf16", "hbm_bandwidth"}
    assert all(c["status"] == "warn" and c["value"] is None for c in checks)
    assert all(c["message"].startswith("skipped: recorded GPU source") for c in checks)


def test_token_file_readable_by_others_is_warned_about(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    options = AgentOptions(node_id="n", control_plane=server.url, token_file=token_file,
                           recorded="h100", once=True)  # fmt: skip
    assert run(options) == 0
    assert "readable by others" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (AgentOptions(node_id="n", control_plane="http://x", recorded="h100"), "needs its token"),
        (AgentOptions(node_id="n", token="nca_x", recorded="h100"), "--control-plane"),
        (
            AgentOptions(
                node_id="n",
                control_plane="http://x",
                token="t",
                token_file=Path("f"),
                recorded="h100",
            ),
            "not both",
        ),
        (AgentOptions(recorded="h300", print_only=True), "no recorded GPU source 'h300'"),
    ],
)
def test_unusable_options_exit_2(
    options: AgentOptions, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert run(options) == 2
    assert says in caplog.text


def test_sigterm_stops_the_agent_cleanly(server: Server, tmp_path: Path) -> None:
    """The real program in a child process: SIGTERM during the wait ends it at once, exit 0,
    and nothing it logged holds the token."""
    server.script = [(200, {**BUSY, "interval_s": 600.0}, {})]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "neocloud.agent",
            "--control-plane",
            server.url,
            "--token-file",
            str(token_file),
            "--node-id",
            "node_1",
            "--recorded",
            "h200",
        ],
        env={**os.environ, "PYTHONPATH": SRC},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.seen.wait(30), "no heartbeat from the agent"
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr
    assert time.monotonic() - started < 10  # not the 600 s interval
    assert "agent stopped after 1 heartbeats" in stderr
    assert "simulated" in stderr
    assert TOKEN not in stderr
    check_heartbeat(server.requests[0]["body"])
