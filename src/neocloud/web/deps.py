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
from neocloud.kernel.errors import AuthenticationFailed, ValidationFailed
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


# The largest page any list answers; documented as the ``limit`` parameter's maximum.
PAGE_LIMIT_MAX = 1000


def page_params(
    request: Request,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=PAGE_LIMIT_MAX,
            description=f"Page size, 1 to {PAGE_LIMIT_MAX} (default 100)",
        ),
    ] = None,
    after: Annotated[
        str | None,
        Query(
            max_length=128,
            description="Where the page starts: the `next_cursor` of the previous page, "
            "as given (an opaque string)",
        ),
    ] = None,
) -> PageParams:
    """The page asked for; a limit over the operator's ``page_limit_max`` (which may be set
    below 1000) is a 422 naming ``limit``, as every other out-of-range value is."""
    settings: Settings = request.app.state.ctx.settings
    size = settings.page_limit_default if limit is None else limit
    if size > settings.page_limit_max:
        raise ValidationFailed(
            f"limit must be at most {settings.page_limit_max}",
            code="limit_too_large",
            param="limit",
        )
    return PageParams(size, after)


Ctx = Annotated[AppContext, Depends(get_ctx)]
Caller = Annotated[Principal, Depends(current_principal)]
Paging = Annotated[PageParams, Depends(page_params)]
