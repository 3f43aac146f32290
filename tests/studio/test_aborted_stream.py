"""A stream the client walks away from is still metered, with the tokens generated so far.

This needs a real server (the test client never disconnects mid-stream): uvicorn on loopback.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx2
import openai
import pytest
import uvicorn
from fastapi import FastAPI

from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.fake import EchoEngine
from neocloud.studio.metering import MemoryUsageSink
from neocloud.studio.runtime import StudioRuntime


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_aborted_stream_is_metered_with_tokens_so_far(
    app: FastAPI, server: str, admin_key: str
) -> None:
    runtime: StudioRuntime = app.state.studio
    sink = MemoryUsageSink()
    runtime.usage.sink = sink
    runtime.catalog.add_text_engine(EchoEngine("slow-echo", delay_s=0.02))
    runtime.catalog.add(
        CatalogModel("neocloud/slow", "slow-echo", ModelKind.TEXT, 4096, Decimal(1), Decimal(2))
    )
    with httpx2.Client() as http:
        client = openai.OpenAI(base_url=server, api_key=admin_key, http_client=http)
        stream = client.chat.completions.create(
            model="neocloud/slow",
            messages=[{"role": "user", "content": "on and on"}],
            max_tokens=1000,
            stream=True,
        )
        for seen, _chunk in enumerate(stream, start=1):
            if seen == 4:  # the role chunk and three words
                break
        stream.close()
    deadline = time.monotonic() + 10
    while not sink.records and time.monotonic() < deadline:
        runtime.usage.flush()
        time.sleep(0.05)
    [record] = sink.records
    assert record.aborted
    assert 3 <= record.completion_tokens < 1000
    assert record.prompt_tokens == 5
