"""Dynamic batching for the built-in engine: one forward pass per decode step for every sequence.

Two parts:

* ``SlotDecoder`` runs a Llama-family checkpoint (the weights and modules of a transformers
  model) over a static KV cache of ``max_batch`` slots by ``max_len`` positions. A sequence owns a
  slot from its prefill to its end; live sequences are kept in slots ``0..n-1`` (a finished one's
  slot is filled by moving the last one in), so a decode step is one forward pass over the first
  ``n`` slots, each sequence at its own position: no padding, and a new sequence joins the batch
  at the next step (continuous batching). Prompts admitted together are prefilled in one forward
  pass (right-padded; the causal mask keeps padding out of every real token's attention). On CUDA
  the decode step is captured as a CUDA graph per batch bucket (1, 2, 4, …, ``max_batch``) and
  replayed: one launch per step instead of hundreds of kernel launches from Python.
* ``BatchScheduler`` is the thread that drives it. Requests are queued by the asyncio side; when
  the engine is idle it waits ``batch_window_s`` for more requests to arrive together, when busy it
  admits them at the next step boundary. Every token goes back to its requester as soon as it is
  sampled; a sequence ends at its own ``max_tokens`` or end-of-sequence token, or when its
  requester cancels (a stop sequence matched, or the client went away).

Supported: decoder-only models whose layers are ``input_layernorm → self_attn (q/k/v/o_proj,
grouped-query) → post_attention_layernorm → mlp`` without per-head norms or sliding windows
(Llama, Mistral without a window, Qwen2). ``supports()`` says whether a loaded model fits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from neocloud.studio.engines.base import Sampling

log = logging.getLogger("neocloud.studio.batching")

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})


def supports(model: Any, max_len: int) -> bool:
    """True when ``model`` has the layer shape ``SlotDecoder`` computes (up to ``max_len``)."""
    config = model.config
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True) and window < max_len:
        return False
    attn = model.model.layers[0].self_attn
    has_projections = all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    return has_projections and not hasattr(attn, "q_norm")


class Decoder(Protocol):
    """What the scheduler drives: ``SlotDecoder``, or a fallback with the same calls."""

    max_len: int
    forward_passes: int
    decode_steps: int

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> Any: ...

    def decode(self, tokens: list[int], positions: list[int]) -> Any: ...

    def move(self, src: int, dst: int) -> None: ...


def _buckets(max_batch: int) -> list[int]:
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch]


class SlotDecoder:
    """Prefill and batched decode over a static KV cache (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch: int,
        max_len: int,
        cuda_graphs: bool = True,
        fused_ops: bool = True,
    ) -> None:
        import torch

        self.model = model
        self.fused_ops = fused_ops
        self.max_batch = max_batch
        self.max_len = max_len
        config = model.config
        self.n_heads: int = config.num_attention_heads
        self.n_kv: int = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim: int = getattr(config, "head_dim", None) or (
            config.hidden_size // self.n_heads
        )
        self.groups = self.n_heads // self.n_kv
        self.scale = self.head_dim**-0.5
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.layers = list(model.model.layers)
        if fused_ops:  # stack the weights now: inside inference mode they would be read-only
            for layer in self.layers:
                _fused(layer.self_attn, QKV)
                _fused(layer.mlp, GATE_UP)
        shape = (max_batch, self.n_kv, max_len, self.head_dim)
        opts = {"device": self.device, "dtype": self.dtype}
        self.k = [torch.zeros(shape, **opts) for _ in self.layers]
        self.v = [torch.zeros(shape, **opts) for _ in self.layers]
        # cos/sin for every position, from the model's own rotary embedding (RoPE scaling incl.).
        with torch.inference_mode():
            positions = torch.arange(max_len, device=self.device)[None]
            probe = torch.zeros(1, max_len, 1, device=self.device, dtype=self.dtype)
            cos, sin = model.model.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0].to(self.dtype).clone(), sin[0].to(self.dtype).clone()
        # rotate_half(x) * sin == roll(x, half) * sin with the first half of sin negated.
        half = self.head_dim // 2
        self.sin_signed = torch.cat((-self.sin[:, :half], self.sin[:, half:]), dim=-1)
        self.positions = torch.arange(max_len, device=self.device)
        # Static inputs of the decode step (CUDA graphs replay on fixed addresses).
        self.tokens = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self.rows = torch.arange(max_batch, device=self.device)
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        # Graphs have fixed shapes: a step runs the smallest bucket that holds the live slots,
        # the rows past them scratch (position 0 of a free slot).
        self.pad_to_bucket = self.use_graphs
        self.graphs: dict[int, tuple[Any, Any]] = {}
        self.graph_error: str | None = None
        self.forward_passes = 0  # prefills + decode steps, for tests and the benchmark
        self.decode_steps = 0

    # -- the math ------------------------------------------------------------------------------
    # Each op below is a kernel launch per layer per step; at batch 1 on a GPU the ~40 small
    # launches of the library's modules cost as much time as reading the weights. With
    # ``fused_ops`` the norm is one fused kernel and a weight multiply (was seven ops), RoPE
    # three (was five), Q/K/V one matrix product and gate/up another (were five; fewer, larger
    # reads of the weights too) and the attention mask is made additive once per step, not
    # per layer: 54 ops per step of a 2-layer model instead of 94. Same arithmetic: on the CPU
    # in float32 the tokens match ``generate()``'s exactly.
    def _rope(self, x: Any, cos: Any, sin: Any, sin_signed: Any) -> Any:
        import torch

        half = x.shape[-1] // 2
        if self.fused_ops:
            return torch.addcmul(x * cos, torch.roll(x, half, dims=-1), sin_signed)
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _norm(self, module: Any, x: Any) -> Any:
        """The model's RMSNorm: normalise in float32, back to the model's dtype, then scale."""
        eps = getattr(module, "variance_epsilon", None)
        if not self.fused_ops or eps is None:
            return module(x)
        from torch.nn.functional import rms_norm

        # torch's rms_norm computes in float32 and rounds once to x's dtype, as the module does.
        return module.weight * rms_norm(x, (x.shape[-1],), eps=eps)

    def _qkv(self, attn: Any, h: Any, b: int, t: int) -> tuple[Any, Any, Any]:
        if self.fused_ops:  # one matrix product for Q, K and V
            import torch
            from torch.nn.functional import linear

            weight, bias = _fused(attn, QKV)
            nq, nkv = self.n_heads * self.head_dim, self.n_kv * self.head_dim
            q, k, v = torch.split(linear(h, weight, bias), [nq, nkv, nkv], dim=-1)
        else:
            q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        return q, k, v

    def _mlp(self, mlp: Any, h: Any) -> Any:
        """``down(act(gate(h)) * up(h))``, gate and up as one matrix product when fused."""
        if not self.fused_ops:
            return mlp(h)
        from torch.nn.functional import linear

        weight, bias = _fused(mlp, GATE_UP)
        gate, up = linear(h, weight, bias).chunk(2, dim=-1)
        return mlp.down_proj(mlp.act_fn(gate) * up)

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> Any:
        """Write the prompts' KV into ``slots``; the logits of each prompt's last token."""
        import torch
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        b, t = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros(b, t, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p)
        ids = ids.to(self.device)
        slot_ix = torch.tensor(slots, device=self.device)
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        cos, sin = self.cos[None, None, :t], self.sin[None, None, :t]
        sin_signed = self.sin_signed[None, None, :t]
        with torch.inference_mode():
            x = self.model.model.embed_tokens(ids)
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                q, k, v = self._qkv(attn, self._norm(layer.input_layernorm, x), b, t)
                q, k = self._rope(q, cos, sin, sin_signed), self._rope(k, cos, sin, sin_signed)
                self.k[i][slot_ix, :, :t] = k
                self.v[i][slot_ix, :, :t] = v
                if self.groups > 1:
                    k = k.repeat_interleave(self.groups, dim=1)
                    v = v.repeat_interleave(self.groups, dim=1)
                o = sdpa(q, k, v, is_causal=True, scale=self.scale)
                x = x + attn.o_proj(o.transpose(1, 2).reshape(b, t, -1))
                x = x + self._mlp(layer.mlp, self._norm(layer.post_attention_layernorm, x))
            x = self._norm(self.model.model.norm, x[torch.arange(b, device=self.device), last])
            logits = self.model.lm_head(x)
        self.forward_passes += 1
        return logits

    def _decode(self, b: int) -> Any:
        """One token for each of slots ``0..b-1`` from ``self.tokens``/``self.pos`` (capturable)."""
        import torch
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        pos, rows = self.pos[:b], self.rows[:b]
        x = self.model.model.embed_tokens(self.tokens[:b])[:, None]  # [b, 1, hidden]
        cos, sin = self.cos[pos][:, None, None], self.sin[pos][:, None, None]
        sin_signed = self.sin_signed[pos][:, None, None]
        mask = (self.positions[None] <= pos[:, None])[:, None, None]  # [b, 1, 1, max_len]
        if self.fused_ops:  # additive once here, instead of converted by every layer's SDPA
            zero = torch.zeros((), dtype=self.dtype, device=self.device)
            mask = torch.where(mask, zero, torch.finfo(self.dtype).min)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            q, k, v = self._qkv(attn, self._norm(layer.input_layernorm, x), b, 1)
            q, k = self._rope(q, cos, sin, sin_signed), self._rope(k, cos, sin, sin_signed)
            kc, vc = self.k[i][:b], self.v[i][:b]
            kc[rows, :, pos] = k[:, :, 0]
            vc[rows, :, pos] = v[:, :, 0]
            # Grouped-query attention without repeating the cache: the query heads that share a
            # KV head attend as that head's rows.
            qg = q.reshape(b, self.n_kv, self.groups, self.head_dim)
            o = sdpa(qg, kc, vc, attn_mask=mask, scale=self.scale)
            x = x + attn.o_proj(o.reshape(b, 1, -1))
            x = x + self._mlp(layer.mlp, self._norm(layer.post_attention_layernorm, x))
        return self.model.lm_head(self._norm(self.model.model.norm, x[:, 0]))

    def decode(self, tokens: list[int], positions: list[int]) -> Any:
        """Logits ``[n, vocab]`` for the next token of slots ``0..n-1``."""
        import torch

        n = len(tokens)
        b = next(s for s in _buckets(self.max_batch) if s >= n) if self.pad_to_bucket else n
        pad = b - n
        self.tokens[:b].copy_(torch.tensor(tokens + [0] * pad), non_blocking=True)
        self.pos[:b].copy_(torch.tensor(positions + [0] * pad), non_blocking=True)
        with torch.inference_mode():
            graph = self._graph(b) if self.use_graphs else None
            if graph is not None:
                graph[0].replay()
                logits = graph[1][:n]
            else:
                logits = self._decode(b)[:n]
        self.forward_passes += 1
        self.decode_steps += 1
        return logits

    def _graph(self, b: int) -> tuple[Any, Any] | None:
        """The captured step for bucket ``b``; ``None`` (and eager steps from then on) when
        capture fails, so a driver or library quirk costs speed, not service."""
        import torch

        if b not in self.graphs:
            try:
                self.graphs[b] = self._capture(b)
            except Exception as exc:
                log.warning("CUDA graph capture failed, decoding eagerly: %r", exc)
                self.graph_error = repr(exc)
                self.use_graphs = self.pad_to_bucket = False
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                return None
        return self.graphs[b]

    def _capture(self, b: int) -> tuple[Any, Any]:
        import torch

        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside capture (allocator, cuBLAS handles)
                self._decode(b)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self._decode(b)
        return graph, out

    def move(self, src: int, dst: int) -> None:
        """Move slot ``src``'s KV into slot ``dst`` (compaction after a sequence ends)."""
        for kc, vc in zip(self.k, self.v, strict=True):
            kc[dst].copy_(kc[src])
            vc[dst].copy_(vc[src])


QKV, GATE_UP = ("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")

# module -> (the layer names fused, the stacked weight, the stacked bias or None). Kept here,
# not as an attribute on the torch module, and weakly: a model's entries go with its weights.
_FUSED: weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], Any, Any]] = (
    weakref.WeakKeyDictionary()
)


def _fused(module: Any, names: tuple[str, ...]) -> tuple[Any, Any]:
    """One weight (and bias) for the linear layers ``names`` of ``module``, stacked by rows.

    Made once per module, in place: the layers' parameters become views into the stacked
    tensor, so the model (``generate()``, other engines sharing it) runs unchanged and the
    weights are not held twice; later calls, from any decoder, reuse it."""
    cached = _FUSED.get(module)
    if cached is not None and cached[0] == names:
        return cached[1], cached[2]
    import torch

    layers = [getattr(module, name) for name in names]
    biases = [layer.bias for layer in layers]
    if any(b is None for b in biases) and any(b is not None for b in biases):
        raise ValueError(f"{type(module).__name__}: some of {names} have a bias, not all")
    with torch.no_grad():
        weight = torch.cat([layer.weight for layer in layers])
        bias = None if biases[0] is None else torch.cat(biases)
        row = 0
        for layer in layers:
            rows = layer.weight.shape[0]
            layer.weight.data = weight[row : row + rows]
            if bias is not None:
                layer.bias.data = bias[row : row + rows]
            row += rows
    _FUSED[module] = (names, weight, bias)
    return weight, bias


# -- the scheduler --------------------------------------------------------------------------------
_DONE = object()


@dataclass(eq=False)
class GenerationRequest:
    """One sequence's way through the scheduler; tokens arrive on ``queue`` (then ``_DONE``)."""

    prompt_ids: list[int]
    sampling: Sampling
    eos_token_id: int | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generator: Any = None
    produced: int = 0
    last_token: int = 0

    def emit(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the requester's event loop is closed: nobody listens any more
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def position(self) -> int:
        """Where the next token's KV goes: after the prompt and the tokens fed back so far."""
        return len(self.prompt_ids) + self.produced - 1


class BatchScheduler:
    """The thread that batches concurrent requests onto one ``SlotDecoder``."""

    def __init__(
        self,
        decoder_factory: Callable[[], Decoder],
        *,
        max_batch: int,
        batch_window_s: float,
        name: str = "engine",
    ) -> None:
        self._factory = decoder_factory
        self.decoder: Decoder | None = None
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self._pending: deque[GenerationRequest] = deque()
        self._active: list[GenerationRequest] = []  # index == slot
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._name = name
        self.max_concurrent = 0  # the largest batch a decode step has run, for tests
        self._closed = False

    @property
    def active(self) -> int:
        """Sequences holding a slot now."""
        return len(self._active)

    def submit(self, request: GenerationRequest) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the engine {self._name} is closed")
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"batch-{self._name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    # -- thread side ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the scheduler thread is alive (it starts with the first request)."""
        return self._thread is not None

    def close(self) -> None:
        """Finish the live sequences, refuse new ones, then end the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            admitted = self._admit()
            if admitted is None:  # closed and idle: nothing will decode again
                with self._cond:
                    self._thread = None
                self.decoder = None  # the KV cache (and the decoder's hold on the weights) goes
                return
            try:
                if self.decoder is None:
                    self.decoder = self._factory()
                if admitted:
                    self._prefill(admitted)
                self._drop_finished()
                if self._active:
                    self._step()
                    self._drop_finished()
            except Exception as exc:
                for request in [*admitted, *self._active]:
                    request.emit(exc)
                self._active = []

    def _admit(self) -> list[GenerationRequest] | None:
        """Take queued requests into free slots; when idle, wait for work and a batch window.
        ``None``: closed and idle, the thread ends."""
        with self._cond:
            while not self._pending and not self._active:
                if self._closed:
                    return None
                self._cond.wait()
            if not self._active and self.batch_window_s > 0:
                deadline = time.monotonic() + self.batch_window_s
                while len(self._pending) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            free = self.max_batch - len(self._active)
            taken: list[GenerationRequest] = []
            while self._pending and len(taken) < free:
                request = self._pending.popleft()
                if request.cancelled.is_set():
                    request.emit(_DONE)
                else:
                    taken.append(request)
            return taken

    def _prefill(self, requests: list[GenerationRequest]) -> None:
        assert self.decoder is not None
        slots = list(range(len(self._active), len(self._active) + len(requests)))
        logits = self.decoder.prefill(slots, [r.prompt_ids for r in requests])
        self._active.extend(requests)
        self._deliver(requests, logits)

    def _step(self) -> None:
        assert self.decoder is not None
        active = self._active
        self.max_concurrent = max(self.max_concurrent, len(active))
        logits = self.decoder.decode([r.last_token for r in active], [r.position for r in active])
        self._deliver(active, logits)

    def _deliver(self, requests: list[GenerationRequest], logits: Any) -> None:
        """Hand each request its token: one wake-up per event loop per step, not per token."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[GenerationRequest, int]]] = {}
        for request, token in zip(requests, _sample_rows(logits, requests), strict=True):
            request.last_token = token
            request.produced += 1
            by_loop.setdefault(request.loop, []).append((request, token))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # that event loop is closed: nobody listens any more
                for request, _ in items:
                    request.cancelled.set()

    def _drop_finished(self) -> None:
        assert self.decoder is not None
        slot = 0
        while slot < len(self._active):
            request = self._active[slot]
            if not self._finished(request):
                slot += 1
                continue
            request.emit(_DONE)
            last = len(self._active) - 1
            if slot != last:
                self.decoder.move(last, slot)
                self._active[slot] = self._active[last]
            self._active.pop()

    def _finished(self, request: GenerationRequest) -> bool:
        return (
            request.cancelled.is_set()
            or request.produced >= request.sampling.max_tokens
            or (request.produced > 0 and request.last_token == request.eos_token_id)
            or request.position >= self._max_len()
        )

    def _max_len(self) -> int:
        assert self.decoder is not None
        return self.decoder.max_len


def _put_all(items: list[tuple[GenerationRequest, int]]) -> None:
    for request, token in items:
        request.queue.put_nowait(token)


def _sample_rows(logits: Any, requests: list[GenerationRequest]) -> list[int]:
    """One token per row: greedy rows with one argmax, the others sampled with their own RNG."""
    import torch

    greedy = [i for i, r in enumerate(requests) if r.sampling.temperature == 0]
    tokens = [0] * len(requests)
    if greedy:
        picked = torch.argmax(logits[greedy], dim=-1).tolist()
        for i, token in zip(greedy, picked, strict=True):
            tokens[i] = int(token)
    for i, request in enumerate(requests):
        if request.sampling.temperature != 0:
            tokens[i] = _sample(logits[i].float().cpu(), request.sampling, request.generator)
    return tokens


def _sample(logits: Any, sampling: Sampling, generator: Any) -> int:
    import torch

    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) - sorted_probs < sampling.top_p
        # The likeliest token always stays: a top_p below float32's smallest value (1e-80) is
        # 0 against the tensor, which kept none and made multinomial raise (a 500).
        keep[0] = True
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


DONE = _DONE
