"""Dynamic batching in the built-in engine: concurrent requests share forward passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.engines.base import ChatMessage, Sampling
from neocloud.studio.runtime import TINY_LLAMA, StudioRuntime, builtin_catalog

pytest.importorskip("torch")

from neocloud.studio.engines import hf
from neocloud.studio.engines.batching import SlotDecoder
from neocloud.studio.engines.hf import EngineConfig, HFTextEngine

QUESTIONS = [
    "Count to five.",
    "What does the cow say?",
    "Hello!",
    "What is the capital of France?",
    "What color is the sky?",
]


async def _ask(engine: HFTextEngine, question: str, max_tokens: int = 40) -> tuple[str, int]:
    ids = engine.encode(engine.render_chat([ChatMessage("user", question)]))
    text, tokens = "", 0
    async for piece in engine.stream(ids, Sampling(max_tokens=max_tokens, temperature=0)):
        text += piece.text
        tokens += piece.tokens
    return text, tokens


def _passes(engine: HFTextEngine) -> int:
    decoder = engine.scheduler.decoder
    return 0 if decoder is None else decoder.forward_passes


def _one_at_a_time_then_together(engine: HFTextEngine) -> None:
    async def run() -> None:
        alone = []
        before = _passes(engine)
        for q in QUESTIONS:
            alone.append(await _ask(engine, q))
        sequential_passes = _passes(engine) - before
        before = _passes(engine)
        together = await asyncio.gather(*(_ask(engine, q) for q in QUESTIONS))
        batched_passes = _passes(engine) - before

        assert list(together) == alone  # greedy: the same text and token counts
        assert len({text for text, _ in alone}) == len(QUESTIONS)
        # One at a time: a prefill and a step per token for each request. Together: one batched
        # prefill, then one step per token of the longest answer.
        assert sequential_passes == sum(tokens for _, tokens in alone)
        assert batched_passes == max(tokens for _, tokens in alone)
        assert engine.scheduler.max_concurrent >= 2

    asyncio.run(run())


def test_concurrent_requests_share_forward_passes() -> None:
    engine = HFTextEngine("t", TINY_LLAMA, EngineConfig(max_batch=8, batch_window_s=0.25))
    _one_at_a_time_then_together(engine)


def test_fallback_decoder_gives_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Architectures the batched decoder does not compute run on transformers' own forward."""
    monkeypatch.setattr(hf, "supports", lambda model, max_len: False)
    engine = HFTextEngine("seq", TINY_LLAMA, EngineConfig(max_batch=8, batch_window_s=0.25))
    batched = HFTextEngine("b", TINY_LLAMA, EngineConfig(max_batch=8, batch_window_s=0.0))

    async def run() -> None:
        for q in QUESTIONS[:3]:
            assert await _ask(engine, q) == await _ask(batched, q)

    asyncio.run(run())
    assert isinstance(engine.scheduler.decoder, hf.SequentialDecoder)


def test_more_requests_than_slots_wait_and_join_between_steps() -> None:
    engine = HFTextEngine("small", TINY_LLAMA, EngineConfig(max_batch=2, batch_window_s=0.0))

    async def run() -> None:
        alone = [await _ask(engine, q) for q in QUESTIONS]
        together = await asyncio.gather(*(_ask(engine, q) for q in QUESTIONS))
        assert list(together) == alone

    asyncio.run(run())
    assert engine.scheduler.max_concurrent == 2


def test_an_aborted_stream_frees_its_slot() -> None:
    engine = HFTextEngine("abort", TINY_LLAMA, EngineConfig(max_batch=4, batch_window_s=0.0))

    async def run() -> int:
        ids = engine.encode("the")
        stream = engine.stream(ids, Sampling(max_tokens=400, temperature=1.0, seed=7))
        assert isinstance(stream, AsyncGenerator)
        received = 0
        async for piece in stream:
            received += piece.tokens
            if received == 3:
                break
        await stream.aclose()  # what the server does when the client goes away
        deadline = time.monotonic() + 10
        while engine.scheduler.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return received

    assert asyncio.run(run()) == 3
    assert engine.scheduler.active == 0
    decoder = engine.scheduler.decoder
    assert decoder is not None
    assert decoder.decode_steps < 50  # the sequence stopped long before its 400 tokens


def test_the_fast_flavor_runs_on_its_own_latency_tuned_engine() -> None:
    catalog = builtin_catalog()
    base = catalog.models["neocloud/tiny-llama"]
    fast = catalog.models["neocloud/tiny-llama-fast"]
    base_engine, fast_engine = catalog.text_engine(base), catalog.text_engine(fast)
    assert isinstance(base_engine, HFTextEngine)
    assert isinstance(fast_engine, HFTextEngine)
    assert base_engine is not fast_engine
    assert base_engine.scheduler is not fast_engine.scheduler
    assert fast_engine.config.batch_window_s == 0 < base_engine.config.batch_window_s
    assert fast_engine.config.max_batch < base_engine.config.max_batch
    assert fast.output_price_per_m > base.output_price_per_m
    assert fast.input_price_per_m > base.input_price_per_m
    assert base_engine.loaded.model is fast_engine.loaded.model


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_concurrent_api_requests_are_batched(
    settings: Settings, db: Database, clock: VirtualClock, admin_key: str
) -> None:
    """Through the OpenAI API: concurrent chats share steps; a stop sequence ends only its own."""
    app = create_app(settings=settings, db=db, clock=clock)
    runtime: StudioRuntime = app.state.studio
    runtime.catalog = builtin_catalog()
    engine = runtime.catalog.text_engines["builtin-tiny-llama"]
    assert isinstance(engine, HFTextEngine)

    def ask(oai: openai.OpenAI, question: str, stop: str | None = None) -> tuple[str, int]:
        out = oai.chat.completions.create(
            model="neocloud/tiny-llama",
            messages=[{"role": "user", "content": question}],
            temperature=0,
            max_tokens=40,
            stop=stop,
        )
        assert out.usage is not None
        return out.choices[0].message.content or "", out.usage.completion_tokens

    with TestClient(app) as http:
        oai = openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
        )
        alone = [ask(oai, q) for q in QUESTIONS]
        with ThreadPoolExecutor(len(QUESTIONS) + 1) as pool:
            together = list(pool.map(lambda q: ask(oai, q), QUESTIONS))
            stopped = pool.submit(ask, oai, "What does the cow say?", " moo")
            assert stopped.result()[0] == "The cow says"
    assert together == alone
    assert engine.scheduler.max_concurrent >= 2
    # The stopped request answered as soon as its stop text appeared; the scheduler frees its
    # slot at its next step, so give it a moment rather than racing it. A leaked slot still fails.
    deadline = time.monotonic() + 5
    while engine.scheduler.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.scheduler.active == 0


def test_text_that_may_start_a_stop_sequence_is_held_back() -> None:
    assert hf._sendable("The cow says m", [" moo"]) == len("The cow says")
    assert hf._sendable("The cow says ", [" moo"]) == len("The cow says")  # " " may start it
    assert hf._sendable("The cow says", [" moo"]) == len("The cow says")
    assert hf._sendable("The cow sa", [" moo", "XY"]) == len("The cow sa")
    assert hf._sendable("caf\ufffd", []) == len("caf")  # an incomplete UTF-8 sequence waits


def test_bucket_padded_steps_give_the_same_answers() -> None:
    """What a CUDA-graph step does (fixed bucket sizes, scratch rows past the live slots),
    checked on the CPU: 3 live sequences run in a bucket of 4, then 2, then 1."""
    plain = HFTextEngine("plain", TINY_LLAMA, EngineConfig(max_batch=8, batch_window_s=0.25))
    padded = HFTextEngine("padded", TINY_LLAMA, EngineConfig(max_batch=8, batch_window_s=0.25))

    async def run(engine: HFTextEngine) -> list[tuple[str, int]]:
        return list(await asyncio.gather(*(_ask(engine, q) for q in QUESTIONS[:3])))

    expected = asyncio.run(run(plain))
    decoder = padded.scheduler._factory()
    decoder.pad_to_bucket = True  # type: ignore[attr-defined]
    padded.scheduler.decoder = decoder
    assert asyncio.run(run(padded)) == expected
    assert len({tokens for _, tokens in expected}) > 1  # sequences ended at different steps


def test_a_failed_graph_capture_falls_back_to_eager_steps() -> None:
    engine = HFTextEngine("nograph", TINY_LLAMA, EngineConfig(max_batch=4, batch_window_s=0.0))
    decoder = engine.scheduler._factory()
    assert isinstance(decoder, SlotDecoder)
    decoder.use_graphs = decoder.pad_to_bucket = True  # capture cannot work without CUDA
    engine.scheduler.decoder = decoder
    reference = HFTextEngine("ref", TINY_LLAMA, EngineConfig(max_batch=4, batch_window_s=0.0))
    assert asyncio.run(_ask(engine, "Hello!")) == asyncio.run(_ask(reference, "Hello!"))
    assert decoder.graph_error is not None
    assert not decoder.use_graphs


@pytest.mark.parametrize(
    ("model_type", "bias"),
    [("llama", False), ("mistral", False), ("qwen2", True)],
)
def test_the_decoder_matches_generate_on_each_supported_architecture(
    model_type: str, bias: bool
) -> None:
    """Random tiny checkpoints of every architecture ``supports()`` names (Qwen2's Q/K/V carry
    biases, which the fused projection must stack too): greedy tokens equal ``generate()``'s,
    with the fused ops and with the model's own modules, and the model itself is unchanged
    by the fusion (its parameters become views of the stacked tensors)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = {
        "hidden_size": 64,
        "intermediate_size": 112,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 300,
        "max_position_embeddings": 128,
    }
    config = AutoConfig.for_model(model_type, **shape)
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(1.0, 0.1)
            else:  # biases and matrices: every part of each layer moves the logits
                param.normal_(0.0, param.shape[-1] ** -0.5)
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.bias is not None) is bias
    prompt = torch.randint(1, 300, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected_logits = model(prompt).logits
        expected = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False
        )[0, 9:].tolist()

    def greedy(decoder: SlotDecoder) -> list[int]:
        first = decoder.prefill([0], [prompt[0].tolist()])
        torch.testing.assert_close(first[0], expected_logits[0, -1])
        tokens = [int(first.argmax(-1))]
        while len(tokens) < 12:
            logits = decoder.decode(tokens[-1:], [9 + len(tokens) - 1])
            tokens.append(int(logits.argmax(-1)))
        return tokens

    assert greedy(SlotDecoder(model, max_batch=2, max_len=64, fused_ops=False)) == expected
    assert greedy(SlotDecoder(model, max_batch=2, max_len=64)) == expected
    storage = attn.q_proj.weight.untyped_storage().data_ptr()
    assert attn.v_proj.weight.untyped_storage().data_ptr() == storage  # views of one tensor
    with torch.inference_mode():
        torch.testing.assert_close(model(prompt).logits, expected_logits)
