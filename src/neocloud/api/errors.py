"""The one place where errors become HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from neocloud.kernel.errors import NeocloudError, RateLimited, ValidationFailed

log = logging.getLogger("neocloud.api")

_HTTP_TYPES = {
    400: ("invalid_request_error", "invalid_json"),  # FastAPI: a body it cannot decode
    401: ("authentication_error", "unauthenticated"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "route_not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "payload_too_large"),
}


def error_response(exc: NeocloudError) -> JSONResponse:
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    headers.update(getattr(exc, "headers", None) or {})  # e.g. x-should-retry: false
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


def internal_error_response() -> JSONResponse:
    """The 500 every unexpected failure answers; the details go to the log, not the caller."""
    body = {
        "error": {
            "type": "api_error",
            "code": "internal_error",
            "message": "an internal error occurred; it has been logged",
            "param": None,
        }
    }
    return JSONResponse(body, status_code=500)


def validation_error(errors: list[dict[str, Any]]) -> ValidationFailed:
    """Turn pydantic's error list into one precise error naming the first bad field."""
    described = [_describe(e) for e in errors]
    first = described[0]
    return ValidationFailed(
        first["message"],
        code=first["code"],
        param=first["param"],
        details={"errors": described} if len(described) > 1 else None,
    )


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    loc = [part for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    param = _dotted(loc) or None
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        code, message = "unknown_field", f"unknown field {param!r}"
    elif kind == "missing":
        code, message = "missing_field", f"{param!r} is required"
    elif kind in ("json_invalid", "model_attributes_type", "dict_type") and not loc:
        code, message = "invalid_json", "the body must be a JSON object"
    else:
        code, msg = "invalid_value", str(error.get("msg", "invalid value"))
        message = f"{param}: {msg}" if param else msg
    return {"param": param, "code": code, "message": message}


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path. Starlette's own 405 names only the
    methods of the first route whose path matched, so ``GET`` and ``POST`` on one path told
    half; each method is asked of the whole route table instead."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NeocloudError)
    async def _neocloud(_: Request, exc: NeocloudError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        etype, code = _HTTP_TYPES.get(exc.status_code, ("invalid_request_error", "http_error"))
        message, headers = str(exc.detail), dict(exc.headers or {})
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "the body must be valid JSON in UTF-8"
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = (
                f"{request.method} is not allowed on {request.url.path}; "
                f"allowed: {', '.join(allowed)}"
            )
        body = {"error": {"type": etype, "code": code, "message": message, "param": None}}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error_response()
