"""TLS to upstreams and their timeouts: an https:// upstream is verified (against a CA bundle for
a private CA), an untrusted one is a 502 naming the certificate failure, http:// still works, an
upstream that never answers is a 504 within the timeout, and a scheme the gateway's client
cannot serve is refused at registration."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.kernel.settings import Settings
from neocloud.studio.catalog import CatalogModel, ModelKind
from neocloud.studio.engines.fakeupstream import FakeUpstream
from neocloud.studio.engines.upstream import UpstreamOptions, UpstreamPool
from neocloud.studio.metering import MemoryUsageSink
from neocloud.studio.runtime import StudioRuntime

from .servers import free_port

CHAT = "/v1/chat/completions"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate it signs for 127.0.0.1 and localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on the PATH")
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem"))
    ext = d / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=neocloud test CA",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


def _serve(app: Any, **ssl: Any) -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **ssl
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the fake upstream did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def tls_upstream(pki: dict[str, Path]) -> Iterator[str]:
    for port in _serve(
        FakeUpstream(name="tls"), ssl_certfile=str(pki["cert"]), ssl_keyfile=str(pki["key"])
    ):
        yield f"https://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def plain_upstream() -> Iterator[str]:
    for port in _serve(FakeUpstream(name="plain")):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def silent_upstream() -> Iterator[str]:
    """Takes the request and answers only after a minute: an upstream that never answers."""
    for port in _serve(FakeUpstream(name="silent", delay_s=60)):
        yield f"http://127.0.0.1:{port}/v1"


def _add(app: FastAPI, model: str, url: str, options: UpstreamOptions) -> None:
    runtime: StudioRuntime = app.state.studio
    runtime.usage.sink = MemoryUsageSink()
    runtime.catalog.add_upstream(UpstreamPool(model, [url], options=options))
    runtime.catalog.add(
        CatalogModel(model, model, ModelKind.TEXT, 8192, Decimal("0.1"), Decimal("0.2"))
    )


@pytest.fixture
def http(app: FastAPI, admin_key: str) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {admin_key}"
        yield client


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_https_upstream_verified_with_the_ca_bundle_works(
    app: FastAPI, http: TestClient, tls_upstream: str, pki: dict[str, Path]
) -> None:
    _add(app, "tls-model", tls_upstream, UpstreamOptions(ca_bundle=pki["ca"]))
    answer = http.post(CHAT, json=_chat("tls-model"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].startswith("hi")
    streamed = http.post(CHAT, json=_chat("tls-model", stream=True))
    assert streamed.status_code == 200
    assert "data: [DONE]" in streamed.text


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_https_upstream_without_the_ca_is_a_502_naming_the_certificate(
    app: FastAPI, http: TestClient, tls_upstream: str
) -> None:
    _add(app, "untrusted", tls_upstream, UpstreamOptions())  # the system's CAs only
    for body in (_chat("untrusted"), _chat("untrusted", stream=True)):
        answer = http.post(CHAT, json=body)
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert (error["type"], error["code"]) == ("upstream_error", "upstream_certificate_invalid")
        assert "certificate" in error["message"]
        assert "127.0.0.1" in error["message"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_plain_http_upstream_still_works(
    app: FastAPI, http: TestClient, plain_upstream: str
) -> None:
    _add(app, "plain-model", plain_upstream, UpstreamOptions())
    assert http.post(CHAT, json=_chat("plain-model")).status_code == 200
    assert http.post(CHAT, json=_chat("plain-model", stream=True)).status_code == 200


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_never_answers_is_a_504_within_the_timeout(
    app: FastAPI, http: TestClient, silent_upstream: str, stream: bool
) -> None:
    _add(app, "silent", silent_upstream, UpstreamOptions(read_timeout_s=0.5))
    started = time.monotonic()
    answer = http.post(CHAT, json=_chat("silent", stream=stream))
    assert time.monotonic() - started < 10
    assert answer.status_code == 504, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_timeout")
    assert "0.5 s" in error["message"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_total_timeout_bounds_the_whole_exchange(
    app: FastAPI, http: TestClient, silent_upstream: str
) -> None:
    _add(app, "slow", silent_upstream, UpstreamOptions(total_timeout_s=0.5))
    started = time.monotonic()
    answer = http.post(CHAT, json=_chat("slow"))
    assert time.monotonic() - started < 10
    assert answer.status_code == 504, answer.text
    assert "total timeout" in answer.json()["error"]["message"]


class TestTheSettings:
    @pytest.fixture
    def settings(self, tmp_path: Path, pki: dict[str, Path]) -> Settings:
        return Settings(
            data_dir=tmp_path, key_touch_interval_s=0, studio_upstream_ca_bundle=pki["ca"]
        )

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    def test_a_registered_https_upstream_is_verified_with_the_ca_bundle_setting(
        self, app: FastAPI, http: TestClient, tls_upstream: str
    ) -> None:
        made = http.post(
            "/api/v1/studio/models",
            json={
                "id": "acme/tls",
                "upstream_urls": [tls_upstream],
                "upstream_model": "tls",
                "input_price_per_m": "0",
                "output_price_per_m": "0",
            },
        )
        assert made.status_code == 201, made.text
        runtime: StudioRuntime = app.state.studio
        runtime.models.sync()
        answer = http.post(CHAT, json=_chat("acme/tls"))
        assert answer.status_code == 200, answer.text

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    @pytest.mark.parametrize("url", ["ftp://10.0.0.5/v1", "unix:///run/vllm.sock", "ws://a/v1"])
    def test_a_scheme_the_client_cannot_serve_is_refused_at_registration(
        self, http: TestClient, url: str
    ) -> None:
        made = http.post(
            "/api/v1/studio/models",
            json={
                "id": "acme/bad",
                "upstream_urls": [url],
                "input_price_per_m": "0",
                "output_price_per_m": "0",
            },
        )
        assert made.status_code == 422, made.text
        error = made.json()["error"]
        assert error["code"] == "invalid_upstream_url"
        assert "cannot serve" in error["message"]
