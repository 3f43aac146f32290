"""Wire shapes of the OpenAI-compatible API: requests are validated here, 400 naming the param."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from neocloud.kernel.errors import InvalidRequest
from neocloud.web.fields import Tokens
from neocloud.web.schemas import RequestModel, ResponseModel, Time

# OpenAI's bounds: ``seed`` is a 64-bit signed integer; a token limit fits 32 bits.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
TOKEN_LIMIT_MAX = 2**31 - 1
MAX_JSON_DEPTH = 64  # far deeper than any OpenAI request; json.loads recurses per level


class _Request(BaseModel):
    # OpenAI clients send fields we do not use (user, logprobs=False, …): accept and ignore them.
    model_config = ConfigDict(extra="ignore")


class StreamOptions(BaseModel):
    include_usage: bool = False


MAX_TOOLS = 128  # OpenAI's bound on ``tools``
MAX_CHOICES = 128  # OpenAI's bound on ``n``
MAX_TOP_LOGPROBS = 20  # OpenAI's bound on ``top_logprobs`` (chat)
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's bound on ``logprobs`` (legacy completions)


class ImageUrl(BaseModel):
    url: str = Field(min_length=1, description="https:// or a data: URL")
    detail: Literal["auto", "low", "high"] = "auto"


class ContentPart(BaseModel):
    """A text part, or an image part (``image_url``) that only an upstream model can read."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None

    @model_validator(mode="after")
    def _has_its_payload(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs text")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs image_url")
        return self


class FunctionCall(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=1_000_000)


class ToolCall(BaseModel):
    """A call the assistant made, as it comes back in a conversation."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _tool_reply_names_its_call(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)

    def has_image(self) -> bool:
        return isinstance(self.content, list) and any(p.type != "text" for p in self.content)


class _Sampling(_Request):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=TOKEN_LIMIT_MAX)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(
        1, ge=1, le=MAX_CHOICES, description="choices to generate; above 1 on upstream models only"
    )
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=TOKEN_LIMIT_MAX)
    # Passed to an upstream model as sent; the built-in engine refuses them (``unsupported``).
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def unsupported(self) -> str | None:
        """The first param the built-in engine cannot honour (it generates one plain-text
        choice), or ``None``."""
        if self.n > 1:
            return "n"
        if self.tools:
            return "tools"
        if self.tool_choice not in (None, "none", "auto"):
            return "tool_choice"
        if self.response_format is not None and self.response_format.type != "text":
            return "response_format"
        if self.logprobs:
            return "logprobs"
        for i, m in enumerate(self.messages):
            if m.tool_calls:
                return f"messages[{i}].tool_calls"
            if m.has_image():
                return f"messages[{i}].content"
        return None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1, le=TOKEN_LIMIT_MAX)
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)

    def unsupported(self) -> str | None:
        if self.n > 1:
            return "n"
        if self.logprobs is not None:
            return "logprobs"
        return None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65536)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def load_json(raw: bytes) -> Any:
    """Decode a request body; too deep a nesting or bad JSON is a 400 ``invalid_request_error``
    (a few thousand ``[`` would otherwise exhaust the stack in ``json.loads``)."""
    if too_deep(raw):
        raise InvalidRequest(
            f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="json_too_deep"
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body must be valid JSON", code="invalid_json") from None


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text opens more than ``limit`` arrays or objects inside each other."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the common case: counted in C
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0) > limit


def parse(model: type[_Request], body: Any) -> Any:
    """Validate ``body``; the first problem becomes a 400 ``invalid_value`` naming its param."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
        # Union members add their type name to the path; keep the field names only.
        fields = [p for p in loc if p in _FIELD_NAMES] or loc[:1]
        param = ".".join(fields) or None
        code = "missing_required_parameter" if error["type"] == "missing" else "invalid_value"
        raise InvalidRequest(f"{param}: {error['msg']}", code=code, param=param) from None


_FIELD_NAMES = {
    *ChatCompletionRequest.model_fields,
    *CompletionRequest.model_fields,
    *EmbeddingRequest.model_fields,
    *Message.model_fields,
    *ContentPart.model_fields,
    *Tool.model_fields,
    *FunctionDef.model_fields,
    *ToolCall.model_fields,
    *ResponseFormat.model_fields,
    "include_usage",
}


# -- the operator's studio settings under /api/v1/studio (platform conventions, not OpenAI's) --


class KeyLimitsIn(RequestModel):
    """A key's rate-limit override; ``null`` keeps the default for that bucket."""

    requests_per_minute: int | None = Field(None, strict=True, ge=1, le=10**9)
    tokens_per_minute: Tokens | None = Field(None, ge=1)


class KeyLimitsOut(ResponseModel):
    object: Literal["studio.key_limits"] = "studio.key_limits"
    key_id: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    effective_requests_per_minute: int
    effective_tokens_per_minute: int


class OrgBudgetIn(RequestModel):
    """``monthly_token_limit`` null: no budget; ``suspended``: every call is refused."""

    monthly_token_limit: Tokens | None = None
    suspended: bool = False


class OrgBudgetOut(ResponseModel):
    object: Literal["studio.org_budget"] = "studio.org_budget"
    org_id: str
    monthly_token_limit: int | None
    suspended: bool
    used_this_month: int


class UsageResultOut(ResponseModel):
    """Sums over one group of a bucket; a group field appears only when grouped by it."""

    object: Literal["studio.usage.result"] = "studio.usage.result"
    input_tokens: int
    output_tokens: int
    num_model_requests: int
    aborted_requests: int
    model: str | None = None
    api_key_id: str | None = None
    endpoint: str | None = None
    org_id: str | None = None


class UsageBucketOut(ResponseModel):
    object: Literal["bucket"] = "bucket"
    start_time: Time
    end_time: Time
    results: list[UsageResultOut]


class UsageTotalsOut(ResponseModel):
    input_tokens: int
    output_tokens: int
    num_model_requests: int
    aborted_requests: int


class UsageOut(ResponseModel):
    """An org's token usage per bucket in ``[start_time, end_time)``, in time order; with
    ``limit``, one page of buckets (``totals`` over the page) and ``next_page`` while
    ``has_more``. ``org_id`` is ``all`` when operator staff asked for every org."""

    object: Literal["studio.usage"] = "studio.usage"
    org_id: str
    has_more: bool = False
    next_page: str | None = None
    start_time: Time
    end_time: Time
    bucket_width: str
    group_by: list[str]
    buckets: list[UsageBucketOut]
    totals: UsageTotalsOut


# -- responses of the OpenAI-compatible API under /v1 (documentation: the routes build them as
# dicts in OpenAI's shapes, and proxied upstream bodies pass through, extra fields included) --


class ModelPricingOut(BaseModel):
    input_per_m_tokens: str = Field(examples=["0.20"])
    output_per_m_tokens: str = Field(examples=["0.60"])


class ModelOut(BaseModel):
    """One servable model, as OpenAI's ``model`` object with neocloud's additions."""

    id: str = Field(examples=["neocloud/tiny-llama"])
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds")
    owned_by: str
    context_length: int
    flavor: str
    pricing: ModelPricingOut
    deprecated_on: str | None = Field(None, description="ISO date, or null")


class ModelListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class TokenUsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class ChatChoiceOut(BaseModel):
    index: int
    message: AssistantMessageOut
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = Field(examples=["stop", "length"])


class ChatCompletionOut(BaseModel):
    """``stream: false``; with ``stream: true`` the answer is ``text/event-stream`` of
    ``chat.completion.chunk`` objects, then ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix seconds")
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoiceOut]
    usage: TokenUsageOut | None = None


class CompletionChoiceOut(BaseModel):
    text: str
    index: int
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = Field(examples=["stop", "length"])


class CompletionOut(BaseModel):
    """``stream: false``; with ``stream: true`` the answer is ``text/event-stream`` of
    ``text_completion`` chunks, then ``data: [DONE]``."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(description="Unix seconds")
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoiceOut]
    usage: TokenUsageOut | None = None


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(
        description="Floats, or base64 of little-endian float32 with encoding_format=base64"
    )


class EmbeddingUsageOut(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsageOut
