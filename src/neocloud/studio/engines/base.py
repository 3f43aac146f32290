"""The engine port: what the gateway needs from anything that generates text or embeddings.

Engines count tokens with their own tokenizer; those counts are what the usage records carry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters, already validated by the API."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(slots=True)
class Piece:
    """One step of a generation: new text (possibly empty) and, at the end, why it stopped."""

    text: str
    tokens: int = 1
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int
    dims: int = field(default=0)


class TextEngine(Protocol):
    """Generates text for a prompt given as token ids."""

    name: str

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """Turn chat messages into the prompt text the model was trained on."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (what the prompt-token count is)."""
        ...

    def stream(self, prompt_ids: list[int], sampling: Sampling) -> AsyncIterator[Piece]:
        """Yield pieces until a stop sequence, ``max_tokens`` or the end-of-sequence token."""
        ...


class EmbeddingEngine(Protocol):
    name: str
    dims: int

    def count_tokens(self, text: str) -> int: ...

    async def embed(self, texts: Sequence[str]) -> Embeddings: ...
