"""Studio benchmark: LoRA fine-tuning throughput (trained tokens per second) of the built-in
tiny Llama, on this machine's CPU (or its GPU when torch sees one).

Issue #18 sets no figure; the anchor printed beside it is the same model's forward-only
throughput on the same batches (what serving pays to read a prompt), measured in the same run:
a training step is a forward, a backward and an optimizer step, so the ratio says what training
costs over reading.

The run makes ``--examples`` chat examples (a question and a short answer each), trains
``--epochs`` epochs of batches of ``--batch-size`` with the studio's ``Trainer`` (the code the
fine-tuning worker runs, checkpoints included), and first checks that the training loss fell
(a benchmark of a trainer that does not learn measures nothing). Tokens are the examples'
tokens (prompt and answer, no padding), as the job's ``trained_tokens`` and its bill count them.

Rerun:  .venv/bin/python bench/studio/bench_finetune.py [--examples N] [--epochs N]
        [--batch-size N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

from neocloud.studio.finetuning.domain import Hyperparameters
from neocloud.studio.finetuning.training import (
    StepMetrics,
    Trainer,
    build_examples,
    device,
    examples_tokens,
)
from neocloud.studio.runtime import TINY_LLAMA

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


def dataset(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        thing = " ".join(rng.choice(WORDS) for _ in range(3))
        answer = " ".join(rng.choice(WORDS) for _ in range(4))
        messages = [
            {"role": "user", "content": f"What is the code word of {thing} number {i}?"},
            {"role": "assistant", "content": f"The code word is {answer}."},
        ]
        lines.append(json.dumps({"messages": messages}))
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    import torch

    hp = Hyperparameters(
        n_epochs=args.epochs, batch_size=args.batch_size, learning_rate_multiplier=5
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(TINY_LLAMA, hp, 7, Path(tmp), cpu_threads=args.threads or None)
        examples, problems = build_examples(
            trainer.tokenizer, dataset(args.examples), max_len=trainer.max_len()
        )
        assert not problems, problems
        losses: list[float] = []
        checkpoints: list[int] = []

        def on_step(m: StepMetrics) -> None:
            losses.append(m.train_loss)

        start = time.perf_counter()
        trainer.run(
            examples,
            [],
            start_epoch=0,
            on_step=on_step,
            on_epoch=lambda epoch, step, path: checkpoints.append(step),
        )
        elapsed = time.perf_counter() - start
        first = sum(losses[:5]) / 5
        last = sum(losses[-5:]) / 5
        assert last < first * 0.8, f"the loss did not fall: {first:.3f} -> {last:.3f}"
        assert len(checkpoints) == args.epochs
        trained = examples_tokens(examples) * args.epochs

        # The anchor: forward passes only, the same batches, no gradients.
        model = trainer.model
        model.eval()
        pad = trainer.tokenizer.pad_token_id or 0
        batches = [
            examples[i : i + args.batch_size] for i in range(0, len(examples), args.batch_size)
        ]
        read_start = time.perf_counter()
        with torch.no_grad():
            for _ in range(args.epochs):
                for chunk in batches:
                    width = max(e.tokens for e in chunk)
                    ids = torch.tensor([e.ids + [pad] * (width - e.tokens) for e in chunk])
                    mask = torch.tensor([[1] * e.tokens + [0] * (width - e.tokens) for e in chunk])
                    model(input_ids=ids.to(trainer.device), attention_mask=mask.to(trainer.device))
        read = time.perf_counter() - read_start

    threads = torch.get_num_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {device()}, {threads} threads")
    tokens = examples_tokens(examples)
    steps = len(losses)
    print(f"data: {len(examples)} examples, {tokens} tokens an epoch, {args.epochs} epochs,")
    print(f"      batch {args.batch_size}, {steps} steps")
    print(f"loss: {first:.3f} -> {last:.3f} (mean of the first and last 5 steps)")
    train_rate, read_rate = trained / elapsed, trained / read
    print(f"fine-tune:   {train_rate:8.0f} trained tokens/s ({elapsed:.2f} s, with checkpoints)")
    print(f"anchor read: {read_rate:8.0f} tokens/s, forward only, same batches ({read:.2f} s)")
    print(f"training runs at {train_rate / read_rate * 100:.0f} % of reading's rate")


if __name__ == "__main__":
    main()
