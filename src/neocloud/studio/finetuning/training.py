"""LoRA training with ``peft`` on a local Hugging Face checkpoint (CPU, or the GPU when present).

An example is a chat (``messages``) rendered with the model's chat template; the loss is taken
on each assistant message's tokens and the end-of-sequence token after it (what the model must
learn to say, and to stop), never on the prompt. Each epoch visits the examples in an order
fixed by the job's seed and the epoch, so a job resumed from a checkpoint trains exactly as an
uninterrupted one. A checkpoint (the adapter and the optimizer's state) is written at the end of
every epoch under ``<checkpoint_dir>/epoch-<n>``, renamed into place when complete.

The optimizer is AdamW on the LoRA weights; the learning rate decays linearly from
``hp.learning_rate`` to 0 over the job's steps (a function of the step, so a resumed job keeps
the schedule), and gradients are clipped to a norm of ``MAX_GRAD_NORM``.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.studio.finetuning.domain import LORA_TARGETS, Hyperparameters, steps_per_epoch
from neocloud.studio.jsonl import LineProblem

IGNORE = -100  # the label of a token the loss skips
MAX_VALIDATION_EXAMPLES = 64  # the validation loss of a step reads at most this many
MAX_GRAD_NORM = 1.0  # gradients are clipped to this norm before each step


@dataclass(frozen=True, slots=True)
class Example:
    ids: list[int]
    labels: list[int]  # IGNORE where the loss does not look

    @property
    def tokens(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class StepMetrics:
    step: int  # 1-based, over the whole job
    epoch: int  # 1-based
    train_loss: float
    valid_loss: float | None
    train_mean_token_accuracy: float
    total_steps: int


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft asks transformers ``is_gradient_checkpointing``, which transformers 5 deprecates
    with a FutureWarning on every wrap: theirs to settle, not a caller's to see."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(base_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_path)


def build_examples(
    tokenizer: Any, content: bytes, *, max_len: int
) -> tuple[list[Example], list[LineProblem]]:
    """Examples of a fine-tune JSONL file (already checked at upload), and the lines that do
    not fit the model's context."""
    examples: list[Example] = []
    problems: list[LineProblem] = []
    for number, raw in enumerate(content.decode("utf-8").split("\n"), start=1):
        if not raw.strip():
            continue
        messages = json.loads(raw)["messages"]
        example = _example(tokenizer, messages)
        if example.tokens > max_len:
            msg = f"the example is {example.tokens} tokens; the model's context is {max_len}"
            problems.append(LineProblem(number, msg, "messages"))
        elif all(label == IGNORE for label in example.labels):
            problems.append(LineProblem(number, "no assistant tokens to learn", "messages"))
        else:
            examples.append(example)
    return examples, problems


def _render(tokenizer: Any, messages: list[dict[str, Any]], *, prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    return str(text)


def _example(tokenizer: Any, messages: list[dict[str, Any]]) -> Example:
    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    ids: list[int] = []
    labels: list[int] = []
    consumed = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], prompt=True)
        context = encode(prefix[len(consumed) :] if prefix.startswith(consumed) else prefix)
        answer = [*encode(message["content"]), tokenizer.eos_token_id]
        ids += context + answer
        labels += [IGNORE] * len(context) + answer
        consumed = _render(tokenizer, messages[: i + 1], prompt=False)
    return Example(ids, labels)


def examples_tokens(examples: list[Example]) -> int:
    return sum(e.tokens for e in examples)


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The order of the examples in ``epoch`` (1-based): fixed by the seed and the epoch."""
    order = list(range(count))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def _batch(examples: list[Example], pad_id: int, dev: str) -> dict[str, Any]:
    import torch

    width = max(e.tokens for e in examples)
    ids = [e.ids + [pad_id] * (width - e.tokens) for e in examples]
    labels = [e.labels + [IGNORE] * (width - e.tokens) for e in examples]
    mask = [[1] * e.tokens + [0] * (width - e.tokens) for e in examples]
    return {
        "input_ids": torch.tensor(ids, device=dev),
        "labels": torch.tensor(labels, device=dev),
        "attention_mask": torch.tensor(mask, device=dev),
    }


def _loss_and_accuracy(model: Any, batch: dict[str, Any]) -> tuple[Any, float]:
    out = model(**batch)
    logits = out.logits[:, :-1]
    target = batch["labels"][:, 1:]
    seen = target != IGNORE
    hits = (logits.argmax(-1) == target) & seen
    accuracy = float(hits.sum()) / max(1, int(seen.sum()))
    return out.loss, accuracy


class Trainer:
    """One job's training: the base model with a LoRA adapter, its optimizer, checkpoints."""

    def __init__(
        self,
        base_path: Path,
        hp: Hyperparameters,
        seed: int,
        checkpoint_dir: Path,
        *,
        cpu_threads: int | None = 1,
    ) -> None:
        """``cpu_threads``: torch's intra-op threads when training on the CPU (process-wide,
        as for the serving engines; 1 suits the small built-in model on a shared CPU: a step
        was several times slower with a thread per core under load). None: torch's default."""
        self.cpu_threads = cpu_threads
        self.base_path = base_path
        self.hp = hp
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.device = device()
        self.model: Any = None
        self.optimizer: Any = None
        self.trainable: list[Any] = []
        self.tokenizer = load_tokenizer(base_path)

    def max_len(self) -> int:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.base_path)
        return int(getattr(config, "max_position_embeddings", 2048))

    def _build(self, resume_from: Path | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.seed)
        if self.device == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        base: Any = AutoModelForCausalLM.from_pretrained(self.base_path)
        base = base.to(device=self.device, dtype=torch.float32)
        with quiet_peft():
            self._wrap(base, resume_from)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=self.hp.learning_rate)
        if resume_from is not None:
            state = torch.load(resume_from / "optimizer.pt", map_location=self.device)
            self.optimizer.load_state_dict(state)

    def _wrap(self, base: Any, resume_from: Path | None) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model

        if resume_from is None:
            config = LoraConfig(
                r=self.hp.lora_rank,
                lora_alpha=self.hp.lora_alpha,
                lora_dropout=0.0,
                target_modules=list(LORA_TARGETS),
                task_type="CAUSAL_LM",
            )
            self.model = get_peft_model(base, config)
        else:
            self.model = PeftModel.from_pretrained(base, resume_from, is_trainable=True)

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch-{epoch}"

    def run(
        self,
        train: list[Example],
        valid: list[Example],
        *,
        start_epoch: int,
        on_step: Callable[[StepMetrics], None],
        on_epoch: Callable[[int, int, Path], None],
    ) -> None:
        """Train epochs ``start_epoch + 1 … n_epochs`` (resuming from epoch ``start_epoch``'s
        checkpoint when it is not 0). ``on_step`` after each optimizer step; ``on_epoch(epoch,
        step, checkpoint)`` once its checkpoint is written. Either may raise to stop."""
        import torch

        self._build(self.checkpoint_path(start_epoch) if start_epoch else None)
        per_epoch = steps_per_epoch(len(train), self.hp.batch_size)
        total = per_epoch * self.hp.n_epochs
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        step = start_epoch * per_epoch
        for epoch in range(start_epoch + 1, self.hp.n_epochs + 1):
            order = epoch_order(len(train), self.seed, epoch)
            for start in range(0, len(order), self.hp.batch_size):
                chosen = [train[i] for i in order[start : start + self.hp.batch_size]]
                self.model.train()
                loss, accuracy = _loss_and_accuracy(self.model, _batch(chosen, pad, self.device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.trainable, MAX_GRAD_NORM)
                for group in self.optimizer.param_groups:  # linear decay: a function of the step
                    group["lr"] = self.hp.learning_rate * (1 - step / total)
                self.optimizer.step()
                self.optimizer.zero_grad()
                step += 1
                valid_loss = self._valid_loss(valid, pad) if valid else None
                on_step(StepMetrics(step, epoch, float(loss.detach()), valid_loss, accuracy, total))
            with torch.no_grad():
                path = self._save(epoch)
            on_epoch(epoch, step, path)

    def _valid_loss(self, valid: list[Example], pad: int) -> float:
        import torch

        self.model.eval()
        chosen = valid[:MAX_VALIDATION_EXAMPLES]
        with torch.no_grad():
            losses = [
                float(self.model(**_batch([e], pad, self.device)).loss) * e.tokens for e in chosen
            ]
        return sum(losses) / max(1, sum(e.tokens for e in chosen))

    def _save(self, epoch: int) -> Path:
        import torch

        final = self.checkpoint_path(epoch)
        partial = final.with_name(final.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        self.model.save_pretrained(partial)
        torch.save(self.optimizer.state_dict(), partial / "optimizer.pt")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        return final
