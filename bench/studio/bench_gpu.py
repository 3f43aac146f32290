"""The built-in engine against plain ``generate()`` on a Llama-3-8B-shaped model, on one GPU.

The model is built in code (Llama-3-8B's shape: 32 layers, hidden 4096, 32 query and 8 KV heads,
MLP 14336, vocabulary 128256, untied head) with random bf16 weights: nothing is downloaded.
For batch 1, 8 and 32 (128-token prompts, 128 output tokens, greedy, no end-of-sequence) it
runs, in the same process:

* the built-in engine: ``BatchScheduler`` + ``SlotDecoder`` as the server runs them (static KV
  cache, the decode step replayed as a CUDA graph per batch bucket, one batched forward per
  step, requests submitted and their tokens drained through asyncio queues); no tokenizer, so
  the figure leaves out detokenization;
* the engine with CUDA graphs off, and the engine with the model's own norm/RoPE modules instead
  of its fused ops (``SlotDecoder(fused_ops=False)``), at batch 1 (what each is worth);
* transformers' ``model.generate()`` with its defaults (dynamic cache, eager launches).

Tokens/s are output tokens over wall time, prefill included. Beside them: the memory-bandwidth
roofline (every weight byte read once per decode step; HBM bandwidth measured here with a large
device-to-device copy), and the anchors: vLLM ≈ 12,500 output tokens/s for Llama-3-8B on one
H100 at high batch; plain ``generate()`` on one H200 measured 11.8 / 108 / 277 tokens/s at batch
1 / 8 / 32. Targets: ≥ 50% of the roofline at batch 1, ≥ 4,000 tokens/s at batch 32.

Before timing, each engine run is checked: every request got exactly the asked number of tokens,
and the engine's greedy tokens at batch 1 are compared with ``generate()``'s (bf16 can split a
near-tie, so the shared prefix is reported; in ``--smoke`` mode, float32 on the CPU, they must
match exactly).

``--smoke`` runs the same code on the CPU with a tiny config (seconds); the test suite runs it.
Needs only torch and transformers (and this repository's ``src`` on the path, which ``gpu.sh``
sets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from neocloud.studio.engines.base import Sampling
from neocloud.studio.engines.batching import (
    DONE,
    BatchScheduler,
    GenerationRequest,
    SlotDecoder,
)

VLLM_H100_TOKS = 12_500  # Llama-3-8B, one H100, offline, high batch (vLLM's published figure)
GENERATE_H200_TOKS = {1: 11.8, 8: 108.0, 32: 277.0}  # plain generate() measured on one H200
TARGET_ROOFLINE_SHARE_B1 = 0.5
TARGET_TOKS_B32 = 4_000


@dataclass
class Run:
    batch: int
    engine_toks: float = 0.0
    engine_no_graphs_toks: float | None = None
    engine_unfused_toks: float | None = None
    generate_toks: float = 0.0
    roofline_toks: float = 0.0
    match_prefix: int | None = None
    notes: list[str] = field(default_factory=list)


def llama_config(smoke: bool) -> Any:
    from transformers import LlamaConfig

    shape: dict[str, Any] = (
        {
            "hidden_size": 64,
            "intermediate_size": 160,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 512,
            "max_position_embeddings": 512,
            "rope_theta": 500000.0,
        }
        if smoke
        else {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "max_position_embeddings": 8192,
            "rope_theta": 500000.0,
        }
    )
    config = LlamaConfig(
        **shape, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=None, pad_token_id=0
    )
    config.eos_token_id = None  # every sequence runs its full length
    return config


def build_model(config: Any, device: str, dtype: Any) -> Any:
    import torch
    from transformers import LlamaForCausalLM

    with torch.device(device):  # built in float32 (32 GB for 8B), then cast
        model: Any = LlamaForCausalLM(config)
    model.to(dtype=dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():  # explicit random weights, whatever the library's init does
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0)  # RMSNorm scales
            else:
                std = 0.02 if "embed" in name else param.shape[-1] ** -0.5
                param.normal_(0.0, std, generator=generator)
    model.to(device=device, dtype=dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def hbm_bandwidth(device: str, smoke: bool) -> float:
    """Bytes/s of a large device-to-device copy (read + write)."""
    import torch

    n = (64 << 20) if smoke else (4 << 30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    reps = 5 if smoke else 20
    start = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    _sync(device)
    return 2 * n * reps / (time.perf_counter() - start)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def prompts_for(batch: int, prompt_len: int, vocab: int) -> list[list[int]]:
    import torch

    generator = torch.Generator().manual_seed(1234)
    ids = torch.randint(1, vocab, (batch, prompt_len), generator=generator)
    return [row.tolist() for row in ids]


def run_engine(
    scheduler: BatchScheduler, prompts: list[list[int]], gen_len: int
) -> tuple[float, list[list[int]]]:
    """Submit every prompt at once, drain every stream; (seconds, tokens per request)."""

    async def go() -> tuple[float, list[list[int]]]:
        loop = asyncio.get_running_loop()
        sampling = Sampling(max_tokens=gen_len, temperature=0)
        requests = [
            GenerationRequest(prompt_ids=p, sampling=sampling, eos_token_id=None, loop=loop)
            for p in prompts
        ]

        async def drain(request: GenerationRequest) -> list[int]:
            tokens: list[int] = []
            while True:
                item = await request.queue.get()
                if item is DONE:
                    return tokens
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, int)
                tokens.append(item)

        start = time.perf_counter()
        for request in requests:
            scheduler.submit(request)
        outputs = await asyncio.gather(*(drain(r) for r in requests))
        return time.perf_counter() - start, list(outputs)

    return asyncio.run(go())


def run_generate(model: Any, prompts: list[list[int]], gen_len: int) -> tuple[float, list[int]]:
    """Plain ``generate()``; (seconds, the first sequence's new tokens)."""
    import torch

    ids = torch.tensor(prompts, device=model.device)
    mask = torch.ones_like(ids)
    _sync(model.device.type)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=gen_len, do_sample=False
        )
    _sync(model.device.type)
    seconds = time.perf_counter() - start
    new = out[:, ids.shape[1] :]
    if new.shape[1] != gen_len:
        raise AssertionError(f"generate() made {new.shape[1]} tokens, not {gen_len}")
    return seconds, new[0].tolist()


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def run(
    *, smoke: bool, batches: list[int], prompt_len: int, gen_len: int, out: Any = sys.stdout
) -> dict[str, Any]:
    import torch
    import transformers

    device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    if not smoke and device != "cuda":
        raise SystemExit("no CUDA device: run with --smoke for the CPU check")
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    started = time.perf_counter()
    config = llama_config(smoke)
    model = build_model(config, device, dtype)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = hbm_bandwidth(device, smoke)
    roofline_per_seq = bandwidth / weight_bytes  # decode steps/s if only weights were read
    max_len = prompt_len + gen_len
    max_batch = max(batches)

    def scheduler(cuda_graphs: bool, slots: int, fused_ops: bool = True) -> BatchScheduler:
        decoder = SlotDecoder(
            model, max_batch=slots, max_len=max_len, cuda_graphs=cuda_graphs, fused_ops=fused_ops
        )
        return BatchScheduler(lambda: decoder, max_batch=slots, batch_window_s=0.002)

    engine = scheduler(True, max_batch)
    runs: list[Run] = []
    for batch in batches:
        run_ = Run(batch=batch, roofline_toks=batch * roofline_per_seq)
        prompts = prompts_for(batch, prompt_len, config.vocab_size)
        run_engine(engine, prompts, min(gen_len, 4))  # warm-up: captures this bucket's graph
        seconds, tokens = run_engine(engine, prompts, gen_len)
        if any(len(t) != gen_len for t in tokens):
            raise AssertionError(f"batch {batch}: the engine did not return {gen_len} tokens each")
        run_.engine_toks = batch * gen_len / seconds
        try:
            run_generate(model, prompts[:1], 2)  # warm-up
            g_seconds, g_tokens = run_generate(model, prompts, gen_len)
        except Exception as exc:
            if smoke:
                raise
            # Keep the engine's figures even if this transformers' generate() balks.
            run_.notes.append(f"generate() failed: {exc!r}")
        else:
            run_.generate_toks = batch * gen_len / g_seconds
            run_.match_prefix = shared_prefix(tokens[0], g_tokens)
        if batch == 1 and device == "cuda":
            plain = scheduler(False, 1)
            run_engine(plain, prompts, 4)
            p_seconds, _ = run_engine(plain, prompts, gen_len)
            run_.engine_no_graphs_toks = gen_len / p_seconds
        if batch == 1:
            unfused = scheduler(True, 1, fused_ops=False)
            run_engine(unfused, prompts, 4)
            u_seconds, u_tokens = run_engine(unfused, prompts, gen_len)
            run_.engine_unfused_toks = gen_len / u_seconds
            if smoke and u_tokens != tokens:
                raise AssertionError("the fused and the module ops gave different tokens")
        graph_error = getattr(engine.decoder, "graph_error", None)
        if graph_error:
            run_.notes.append(f"CUDA graph capture failed, ran eagerly: {graph_error}")
        runs.append(run_)
        if smoke and run_.match_prefix != gen_len:
            raise AssertionError(
                f"batch {batch}: engine and generate() differ after {run_.match_prefix} tokens"
            )
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "smoke": smoke,
        "params": sum(p.numel() for p in model.parameters()),
        "weight_bytes": weight_bytes,
        "hbm_bytes_per_s": bandwidth,
        "roofline_toks_per_seq": roofline_per_seq,
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "runs": [vars(r) for r in runs],
        "seconds": time.perf_counter() - started,
    }
    report(result, out)
    return result


def report(result: dict[str, Any], out: Any) -> None:
    w = out.write
    w(
        f"{result['device']}  torch {result['torch']}  transformers {result['transformers']}  "
        f"{result['params'] / 1e9:.2f}B params, {result['weight_bytes'] / 1e9:.2f} GB weights\n"
    )
    w(
        f"memory bandwidth (measured copy): {result['hbm_bytes_per_s'] / 1e9:,.0f} GB/s -> "
        "roofline "
        f"{result['roofline_toks_per_seq']:.1f} tokens/s per sequence\n"
    )
    w(f"prompt {result['prompt_len']} tokens, {result['gen_len']} output tokens, greedy\n\n")
    w(
        f"{'batch':>5} {'engine tok/s':>13} {'% roofline':>10} {'no graphs':>10} {'unfused':>9} "
        f"{'generate tok/s':>15} {'x generate':>10} {'H200 generate':>14} {'same tokens':>12}\n"
    )
    for r in result["runs"]:
        share = r["engine_toks"] / r["roofline_toks"] * 100
        plain = r["engine_no_graphs_toks"]
        unfused = r["engine_unfused_toks"]
        anchor = None if result["smoke"] else GENERATE_H200_TOKS.get(r["batch"])
        same = r["match_prefix"]
        w(
            f"{r['batch']:>5} {r['engine_toks']:>13,.1f} {share:>9.1f}% "
            f"{(f'{plain:,.1f}' if plain else '-'):>10} "
            f"{(f'{unfused:,.1f}' if unfused else '-'):>9} {r['generate_toks']:>15,.1f} "
            f"{r['engine_toks'] / (r['generate_toks'] or float('nan')):>9.1f}x "
            f"{(f'{anchor:,.1f}' if anchor else '-'):>14} "
            f"{'-' if same is None else same:>5}/{result['gen_len']}\n"
        )
    for r in result["runs"]:
        for note in r["notes"]:
            w(f"note (batch {r['batch']}): {note}\n")
    w(f"\nanchor: vLLM ~{VLLM_H100_TOKS:,} output tok/s, Llama-3-8B, one H100, high batch\n")
    if not result["smoke"]:
        by_batch = {r["batch"]: r for r in result["runs"]}
        if 1 in by_batch:
            share = by_batch[1]["engine_toks"] / by_batch[1]["roofline_toks"]
            verdict = "met" if share >= TARGET_ROOFLINE_SHARE_B1 else "NOT met"
            w(f"target batch 1 >= 50% of roofline: {share * 100:.1f}% ({verdict})\n")
        if 32 in by_batch:
            toks = by_batch[32]["engine_toks"]
            verdict = "met" if toks >= TARGET_TOKS_B32 else "NOT met"
            w(f"target batch 32 >= {TARGET_TOKS_B32:,} tok/s: {toks:,.0f} ({verdict})\n")
    w(f"wall time {result['seconds']:.0f} s\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU")
    parser.add_argument("--batches", default=None, help="comma-separated (default 1,8,32)")
    parser.add_argument("--prompt-len", type=int, default=None)
    parser.add_argument("--gen-len", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    default_batches = "1,4,8" if args.smoke else "1,8,32"
    result = run(
        smoke=args.smoke,
        batches=[int(b) for b in (args.batches or default_batches).split(",")],
        prompt_len=args.prompt_len or (16 if args.smoke else 128),
        gen_len=args.gen_len or (16 if args.smoke else 128),
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
