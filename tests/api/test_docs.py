"""The API docs page works offline: every asset it loads is served by the app itself."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from fastapi.testclient import TestClient

DOCS = "/api/v1/docs"
# src="..." / href="..." in the page, and the quoted url the Swagger UI config loads (url: '...')
_REFERENCE = re.compile(r"""(?:\b(?:src|href)\s*=\s*|\burl\s*:\s*)["']([^"']+)["']""")


def test_docs_page_and_every_asset_it_references_are_served_locally(http: TestClient) -> None:
    page = http.get(DOCS)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    # No other host anywhere in the page: not as an asset, not in the script's config.
    assert not re.findall(r"https?://|(?<![:\w])//[\w.-]+\.\w", html), html
    refs = _REFERENCE.findall(html)
    assert any(r.endswith(".js") for r in refs)
    assert any(r.endswith(".css") for r in refs)
    assert "/api/v1/openapi.json" in refs
    for ref in refs:
        url = urljoin("http://testserver" + DOCS, ref)
        assert urlsplit(url).netloc == "testserver", ref
        response = http.get(urlsplit(url).path)
        assert response.status_code == 200, (ref, response.status_code)
        assert response.content, ref
    # Swagger UI's validator badge would load from validator.swagger.io: switched off.
    assert '"validatorUrl": null' in html


def test_docs_have_no_oauth_redirect(http: TestClient) -> None:
    # The API takes API keys, not OAuth: the page points to no redirect page, and none exists.
    assert "oauth2RedirectUrl" not in http.get(DOCS).text
    assert http.get("/docs/oauth2-redirect").status_code == 404
    assert http.get("/api/v1/docs/oauth2-redirect").status_code == 404
