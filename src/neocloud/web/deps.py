"""What a router may ask for: the platform context and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import AuthenticationFailed, InvalidRequest
from neocloud.kernel.settings import Settings

# (ctx, token) -> Principal, raising AuthenticationFailed; tenancy provides it via the app.
Authenticator = Callable[["AppContext", str], Principal]


@dataclass(frozen=True)
class AppContext:
    """Everything a request handler hands to services; built once per app."""

    settings: Settings
    db: Database
    clock: Clock
    authenticate: Authenticator


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


# Declares Bearer auth in the OpenAPI document; the checking is ours, for precise errors. Public:
# another authenticating dependency (the studio's /v1 caller) declares the same scheme.
bearer_scheme = HTTPBearer(
    auto_error=False, description="An API key: `Authorization: Bearer nck_…`"
)


def current_principal(
    request: Request,
    ctx: Annotated[AppContext, Depends(get_ctx)],
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Authenticate ``Authorization: Bearer <key>``; 401 ``authentication_error`` otherwise."""
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationFailed(
            "no API key given: send 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(
            "the Authorization header must be 'Bearer <key>'", code="invalid_authorization"
        )
    principal = ctx.authenticate(ctx, token.strip())
    request.state.principal = principal  # read by the audit middleware after the response
    return principal


@dataclass(frozen=True)
class PageParams:
    limit: int
    after: str | None


def page_params(
    request: Request,
    limit: Annotated[int | None, Query(ge=1, description="Page size (at most 1000)")] = None,
    after: Annotated[
        str | None, Query(max_length=128, description="`next_cursor` of the previous page")
    ] = None,
) -> PageParams:
    settings: Settings = request.app.state.ctx.settings
    size = settings.page_limit_default if limit is None else limit
    if size > settings.page_limit_max:
        raise InvalidRequest(
            f"limit must be at most {settings.page_limit_max}",
            code="limit_too_large",
            param="limit",
        )
    return PageParams(size, after)


Ctx = Annotated[AppContext, Depends(get_ctx)]
Caller = Annotated[Principal, Depends(current_principal)]
Paging = Annotated[PageParams, Depends(page_params)]
