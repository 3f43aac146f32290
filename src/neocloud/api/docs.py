"""The API's interactive docs: Swagger UI at ``/api/v1/docs``, its JavaScript, CSS and favicon
served from ``/api/v1/docs/assets`` out of the ``swagger-ui-bundle`` package, so the page works
without internet access (FastAPI's default loads them from a CDN and another site).

The API authenticates with API keys (``Authorization: Bearer``), not OAuth, so there is no
OAuth2 redirect page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
# Swagger UI's defaults that reach another host: its validator badge (validator.swagger.io).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def swagger_ui_dir() -> Path:
    """The folder of Swagger UI's distribution files (``swagger-ui-bundle.js``, ...)."""
    # The package ships no type information (no py.typed); its one name is a path.
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return Path(str(swagger_ui_path))


def install_docs(app: FastAPI, *, prefix: str, openapi_url: str) -> None:
    """Serve Swagger UI at ``{prefix}/docs`` and its assets under ``{prefix}/docs/assets``."""
    assets = prefix + ASSETS
    app.mount(assets, StaticFiles(directory=swagger_ui_dir()), name="docs-assets")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
