"""The console's plumbing: templates, the signed-in caller, CSRF, error pages, security headers,
and ``install_console``, which the app factory calls to mount the pages at ``/``.

Pages live in ``tenant.py`` and ``operator.py``; each asks ``signed_in`` for the caller (an
``ApiCaller`` with the session's key, and who that key is from ``/api/v1/me``), reads and writes
through the API, and renders a template. A refusal from the API (``ApiFailure``) becomes a page
with the API's own message and status: a 404 stays a 404 and a 403 a 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neocloud.console.inproc import ApiCaller, ApiFailure
from neocloud.console.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Session,
    open_session,
    same_token,
)
from neocloud.kernel.clock import Clock
from neocloud.kernel.secrets import SecretBox

# Everything from this origin; no inline script or style (data travels in JSON script blocks,
# which are never executed); no framing; forms post only here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
STATIC_PREFIX = "/static"


class SignInRequired(Exception):
    """No valid session: the browser goes to the sign-in page."""


class CsrfRefused(Exception):
    """A form or htmx request without the session's CSRF token."""


class OperatorOnly(Exception):
    """A tenant asked for an operator page."""


@dataclass(frozen=True, slots=True)
class Console:
    """What every page needs: the templates, the sealing box and the clock; ``shapes`` keeps
    the fleet's shape (which rack sits where) for a few minutes, see ``operator.py``."""

    env: Environment
    box: SecretBox
    clock: Clock
    shapes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Caller:
    """The signed-in browser: its session, the API as its key, and ``/me``'s answer."""

    session: Session
    api: ApiCaller
    me: dict[str, Any]

    @property
    def is_operator(self) -> bool:
        return bool(self.me.get("is_operator"))

    @property
    def org_id(self) -> str:
        return str(self.me["org_id"])


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def api_for(request: Request, key: str) -> ApiCaller:
    client = request.client
    return ApiCaller(request.app, key=key, client=(client.host, client.port) if client else None)


async def signed_in(request: Request, *, operator: bool = False) -> Caller:
    """The caller of a page; ``operator`` pages refuse tenants with a 403 page."""
    console = console_of(request)
    session = open_session(console.box, request.cookies.get(SESSION_COOKIE), clock=console.clock)
    if session is None:
        raise SignInRequired
    api = api_for(request, session.key)
    try:
        me = await api.get("/api/v1/me")
    except ApiFailure as exc:
        if exc.status == 401:  # the key was revoked or expired since sign-in
            raise SignInRequired from exc
        raise
    caller = Caller(session, api, me)
    if operator and not caller.is_operator:
        raise OperatorOnly
    return caller


async def checked_form(request: Request, caller: Caller) -> dict[str, str]:
    """The posted form's fields, once its CSRF token (field or header) matches the session's."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    given = fields.pop(CSRF_FIELD, None) or request.headers.get(CSRF_HEADER)
    if not same_token(caller.session.csrf, given):
        raise CsrfRefused
    return fields


def render(
    request: Request,
    template: str,
    caller: Caller | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    env = console_of(request).env
    html = env.get_template(template).render(
        request=request,
        caller=caller,
        me=caller.me if caller else None,
        csrf=caller.session.csrf if caller else context.pop("csrf", ""),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", None, status_code=status, title=title, message=message)


# ----------------------------------------------------------------------------------- filters


def money(value: Any) -> str:
    """``{"amount": "1234.5", "currency": "USD"}`` as ``1,234.50 USD``."""
    if not isinstance(value, dict) or "amount" not in value:
        return "—"
    try:
        amount = Decimal(str(value["amount"]))
    except InvalidOperation:
        return f"{value['amount']} {value.get('currency', '')}".strip()
    exponent = amount.as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"{amount:,.{min(places, 6)}f} {value.get('currency', '')}".strip()


def when(value: Any) -> Markup:
    """An RFC 3339 time as a ``<time>`` element: the script shows it in the browser's zone and
    the title keeps UTC for hovering."""
    if not value:
        return Markup("—")
    text = str(value)
    try:
        utc = datetime.fromisoformat(text.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return escape(text)
    # Every interpolated value is escaped first.
    return Markup(  # noqa: S704
        f'<time datetime="{escape(text)}" title="{escape(utc)}" class="local">{escape(utc)}</time>'
    )


def share(value: Any) -> str:
    try:
        return f"{Decimal(str(value)) * 100:.1f} %"
    except InvalidOperation:
        return str(value)


def build_env() -> Environment:
    env = Environment(
        loader=PackageLoader("neocloud.console", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["when"] = when
    env.filters["share"] = share
    return env


# ---------------------------------------------------------------------------------- install


class SecurityHeaders:
    """CSP and friends on every console page and asset (the API's answers are left as they
    are)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path or path.startswith(("/api/", "/v1/", "/v1", "/metrics")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                own = {name.lower() for name, _ in headers}
                added = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                ]
                if not path.startswith(STATIC_PREFIX):
                    added.append((b"cache-control", b"no-store"))
                # A route that set one of these itself (/boot/seeds) keeps its own value.
                headers += [(name, value) for name, value in added if name not in own]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _handlers(app: FastAPI) -> None:
    async def to_signin(request: Request, _: Exception) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": "/signin"})
        return RedirectResponse("/signin", status_code=303)

    async def csrf(request: Request, _: Exception) -> Response:
        return error_page(
            request,
            403,
            "Refused",
            "This form was sent without its security token. Reload the page and try again.",
        )

    async def operator_only(request: Request, _: Exception) -> Response:
        return error_page(request, 403, "Operators only", "This page is for the operator's staff.")

    async def failure(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiFailure)
        titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Check the form"}
        return error_page(request, exc.status, titles.get(exc.status, "Error"), exc.message)

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        SignInRequired: to_signin,
        CsrfRefused: csrf,
        OperatorOnly: operator_only,
        ApiFailure: failure,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)


def install_console(app: FastAPI, *, box: SecretBox, clock: Clock) -> None:
    """Mount the console's pages at ``/`` and its assets at ``/static`` (inside the package)."""
    from neocloud.console.operator import router as operator_router
    from neocloud.console.playground import router as playground_router
    from neocloud.console.tenant import router as tenant_router

    app.state.console = Console(env=build_env(), box=box, clock=clock)
    static = Path(str(files("neocloud.console") / "static"))
    app.mount(STATIC_PREFIX, StaticFiles(directory=static), name="console-static")
    app.include_router(tenant_router)
    app.include_router(playground_router)
    app.include_router(operator_router)
    _handlers(app)
    app.add_middleware(SecurityHeaders)
