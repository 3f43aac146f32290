"""Upstream pools against real fake-vLLM processes: health probes, least outstanding requests,
a replica killed mid-run, and usage captured from streamed answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessageParam

from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.upstream import Replica, UpstreamPool
from neocloud.studio.metering import MemoryUsageSink
from neocloud.studio.runtime import StudioRuntime

from .servers import free_port


class FakeVllm:
    """One ``fakeupstream`` process on a port of its own."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.name = name
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "neocloud.studio.engines.fakeupstream",
                    "--port",
                    str(self.port),
                    "--name",
                    self.name,
                ],
                stdout=log,
                stderr=log,
                env=os.environ.copy(),
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                httpx.get(f"{self.url}/models", timeout=1)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the fake upstream did not start in 30 s"
                time.sleep(0.1)

    def served(self) -> int:
        return int(httpx.get(f"http://127.0.0.1:{self.port}/stats").json()["served"])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[list[FakeVllm]]:
    fakes = [FakeVllm(tmp_path, "a"), FakeVllm(tmp_path, "b")]
    try:
        for fake in fakes:
            fake.start()
        yield fakes
    finally:
        for fake in fakes:
            fake.kill()


@pytest.fixture
def pool(upstreams: list[FakeVllm]) -> UpstreamPool:
    return UpstreamPool(
        "vllm",
        [u.url for u in upstreams],  # the gateway's own HTTP client, as in production
        probe_interval_s=0.1,
        cooldown_s=60,
    )


@pytest.fixture
def served(app: FastAPI, pool: UpstreamPool) -> MemoryUsageSink:
    runtime: StudioRuntime = app.state.studio
    runtime.usage.sink = sink = MemoryUsageSink()
    runtime.catalog.add_upstream(pool)
    runtime.catalog.add(
        CatalogModel(
            "meta/llama-3-8b",
            "vllm",
            ModelKind.TEXT,
            8192,
            Decimal("0.1"),
            Decimal("0.2"),
            upstream_model="llama",
        )
    )
    return sink


@pytest.fixture
def oai(app: FastAPI, admin_key: str, served: MemoryUsageSink) -> Iterator[openai.OpenAI]:
    with TestClient(app) as http:
        yield openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
        )


def _chat(oai: openai.OpenAI) -> str:
    out = oai.chat.completions.create(
        model="meta/llama-3-8b", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert out.model == "meta/llama-3-8b"
    return out.choices[0].message.content or ""


def _wait_for(condition: object, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_requests_are_balanced_across_healthy_replicas(
    oai: openai.OpenAI, upstreams: list[FakeVllm]
) -> None:
    for _ in range(10):
        assert _chat(oai) == "hi hi hi hi"
    assert [u.served() for u in upstreams] == [5, 5]  # one at a time: ties go round-robin


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_replica_killed_mid_run_is_skipped_and_nothing_fails(
    oai: openai.OpenAI, upstreams: list[FakeVllm], pool: UpstreamPool
) -> None:
    a, b = upstreams
    for _ in range(6):
        _chat(oai)
    b.kill()
    for _ in range(10):  # the first one that picks b is retried on a
        assert _chat(oai) == "hi hi hi hi"
    stream = oai.chat.completions.create(
        model="meta/llama-3-8b",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=2,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "hi hi"
    assert a.served() == 3 + 10 + 1
    _wait_for(lambda: not pool.replicas[1].healthy, "the probe to mark b unhealthy")
    assert pool.replicas[0].healthy
    b.start()  # back on the same port: the next probe brings it back
    _wait_for(lambda: pool.replicas[1].healthy, "the probe to find b again")
    for _ in range(4):
        _chat(oai)
    assert b.served() == 2


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_all_replicas_down_is_a_503(
    oai: openai.OpenAI, upstreams: list[FakeVllm], pool: UpstreamPool
) -> None:
    for fake in upstreams:
        fake.kill()
    with pytest.raises(openai.InternalServerError) as caught:
        _chat(oai)
    assert caught.value.status_code == 503
    assert all(r.down_until > 0 for r in pool.replicas)
    # /v1/models lists what can be served now: not a model whose every replica is down ...
    assert "meta/llama-3-8b" not in {m.id for m in oai.models.list()}
    # ... though asking for it still says 503 (retry later), not 404 (no such model).
    with pytest.raises(openai.InternalServerError):
        _chat(oai)
    upstreams[0].start()
    _wait_for(lambda: pool.replicas[0].healthy, "the probe to find a again")
    assert "meta/llama-3-8b" in {m.id for m in oai.models.list()}
    assert _chat(oai) == "hi hi hi hi"


def test_least_outstanding_among_healthy_replicas() -> None:
    t = [100.0]
    pool = UpstreamPool("p", ["http://x/v1", "http://y/v1", "http://z/v1"], now=lambda: t[0])
    x, y, z = pool.replicas
    x.outstanding, y.outstanding, z.outstanding = 3, 1, 2
    assert pool.pick() is y
    y.healthy = False  # failed its probe
    assert pool.pick() is z
    z.down_until = 110.0  # refused a connection
    assert pool.pick() is x
    assert pool.pick(excluding=x) in (y, z)  # nothing available: try anyway, never x
    t[0] = 111.0
    assert pool.pick() is z
    assert isinstance(pool.pick(), Replica)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_streams_are_metered_with_the_upstreams_usage(
    oai: openai.OpenAI, served: MemoryUsageSink, app: FastAPI
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "count these words please"}
    ]
    plain = oai.chat.completions.create(
        model="meta/llama-3-8b", messages=messages, max_tokens=3, stream=True
    )
    chunks = list(plain)
    assert all(getattr(c, "usage", None) is None for c in chunks)  # not asked: hidden
    assert all(c.choices for c in chunks)
    with_usage = oai.chat.completions.create(
        model="meta/llama-3-8b",
        messages=messages,
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    last = list(with_usage)[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 3
    runtime: StudioRuntime = app.state.studio
    runtime.usage.flush()
    counted = [(r.prompt_tokens, r.completion_tokens, r.aborted) for r in served.records]
    assert counted == [(last.usage.prompt_tokens, 3, False)] * 2
