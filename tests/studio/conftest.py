"""Studio tests run on the deterministic engines unless a test asks for the built-in models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.engines.fake import fake_catalog


@pytest.fixture
def app(settings: Settings, db: Database, clock: VirtualClock) -> FastAPI:
    app = create_app(settings=settings, db=db, clock=clock)
    app.state.studio.catalog = fake_catalog()
    return app


@pytest.fixture
def http(app: FastAPI, admin_key: str) -> Iterator[TestClient]:
    """The app with the operator admin's key; server errors come back as answers."""
    with TestClient(app, raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {admin_key}"
        yield http
