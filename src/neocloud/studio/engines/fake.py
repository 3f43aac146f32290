"""Deterministic engines with no model: for tests, and to run the gateway without torch.

The text engine splits on whitespace (one word is one token) and answers by repeating the
prompt's last words; the embedding engine hashes words into a unit vector.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

from neocloud.studio.catalog import Catalog, CatalogModel, ModelKind
from neocloud.studio.engines.base import ChatMessage, Embeddings, Piece, Sampling


class EchoEngine:
    """Repeats the prompt's words in order, cycling, one token per word."""

    def __init__(self, name: str = "echo", *, delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s
        self._vocab: dict[str, int] = {}
        self._words: list[str] = []

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return "\n".join(f"{m.role}: {m.content}" for m in messages) + "\nassistant:"

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            if word not in self._vocab:
                self._vocab[word] = len(self._words)
                self._words.append(word)
            ids.append(self._vocab[word])
        return ids

    async def stream(self, prompt_ids: list[int], sampling: Sampling) -> AsyncIterator[Piece]:
        words = [self._words[i] for i in prompt_ids if not self._words[i].endswith(":")] or ["ok"]
        text = ""
        for n in range(sampling.max_tokens):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            word = (" " if n else "") + words[n % len(words)]
            text += word
            hit = next((s for s in sampling.stop if s in text), None)
            if hit is not None:
                kept = word[: len(word) - (len(text) - text.index(hit))]
                yield Piece(kept, finish_reason="stop")
                return
            last = n == sampling.max_tokens - 1
            yield Piece(word, finish_reason="length" if last else None)


class HashEmbeddingEngine:
    """Unit vectors from hashed words: equal texts embed equally; no model needed."""

    def __init__(self, name: str = "hash-embed", dims: int = 384) -> None:
        self.name = name
        self.dims = dims

    def count_tokens(self, text: str) -> int:
        return max(1, len(text.split()))

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        vectors = []
        for text in texts:
            vec = [0.0] * self.dims
            for word in text.split():
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                vec[int.from_bytes(digest[:4], "big") % self.dims] += 1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            vectors.append([v / norm for v in vec])
        tokens = sum(self.count_tokens(t) for t in texts)
        return Embeddings(vectors=vectors, prompt_tokens=tokens, dims=self.dims)


def fake_catalog() -> Catalog:
    """A catalog of the deterministic engines: ``neocloud/echo`` and ``neocloud/hash-embed``."""
    catalog = Catalog()
    catalog.add_text_engine(EchoEngine())
    catalog.add_embedding_engine(HashEmbeddingEngine())
    catalog.add(
        CatalogModel(
            id="neocloud/echo",
            engine="echo",
            kind=ModelKind.TEXT,
            context_length=4096,
            input_price_per_m=Decimal("0.01"),
            output_price_per_m=Decimal("0.02"),
        )
    )
    catalog.add(
        CatalogModel(
            id="neocloud/hash-embed",
            engine="hash-embed",
            kind=ModelKind.EMBEDDING,
            context_length=512,
            input_price_per_m=Decimal("0.005"),
        )
    )
    return catalog
