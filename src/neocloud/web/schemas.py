"""Wire shapes shared by every router: the strict base model, lists and errors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from neocloud.kernel.clock import rfc3339
from neocloud.kernel.money import Money

T = TypeVar("T")

# A time on the wire: RFC 3339, UTC, with a Z.
Time = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are an error, strings are trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class MoneyOut(ResponseModel):
    """Money on the wire: a decimal string and a currency, never a float."""

    amount: str = Field(examples=["2.49"])
    currency: str = Field(examples=["USD"])

    @classmethod
    def of(cls, money: Money) -> MoneyOut:
        return cls(**money.to_wire())


class ListOut(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None = None


class ErrorDetail(BaseModel):
    type: str = Field(examples=["not_found_error"])
    code: str = Field(examples=["node_not_found"])
    message: str = Field(examples=["no node node_01J… exists"])
    param: str | None = Field(None, examples=["gpu_model"])
    details: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


# Listed on routes so that the OpenAPI document shows the error shape next to each status. Every
# status any /api/v1 route can answer is here: 400 and 413 come from the body (not JSON, too
# large), 429 from the per-key rate limits, 500 from an unexpected failure.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON, or a value is malformed"},
    401: {"model": ErrorOut, "description": "Missing or invalid API key"},
    403: {"model": ErrorOut, "description": "The key's role may not do this"},
    404: {"model": ErrorOut, "description": "No such object"},
    409: {"model": ErrorOut, "description": "Conflicts with the current state"},
    413: {"model": ErrorOut, "description": "The body is larger than the bound"},
    422: {"model": ErrorOut, "description": "A field failed validation; `param` names it"},
    429: {"model": ErrorOut, "description": "Too many requests; `Retry-After` says when to retry"},
    500: {"model": ErrorOut, "description": "An internal error; it has been logged"},
}
