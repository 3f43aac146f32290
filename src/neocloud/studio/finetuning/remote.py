"""A fine-tuning job's training on the node compute gave it (the ``node`` runner's far end).

Run on the node as ``python -m neocloud.studio.finetuning.remote WORK BASE`` with this package's
few modules on ``PYTHONPATH`` (``node.py`` ships them: this module, ``training``, ``domain``,
``jsonl`` and ``kernel.errors``) and torch, transformers and peft installed on the node (its
image's Python). ``WORK`` holds what the worker staged: ``job.json`` (hyperparameters, seed,
the epoch to resume after), ``train.json`` and ``valid.json`` (the examples, already tokenized
by the worker) and, when resuming, ``checkpoints/epoch-<n>``; ``BASE`` the base model's files.

It speaks one JSON object per line on standard output: ``start`` (host, pid, device), ``step``
(the step's metrics) and ``epoch`` (the epoch's checkpoint as a base64 ``.tar.gz``, which the
worker keeps: a job resumes from it on any node). Standard input is the controller's: when it
reaches end-of-file (the worker stopped the job, or its connection or process died) the
training stops at once, so a node never trains a job nobody is watching.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

from neocloud.studio.finetuning.domain import Hyperparameters
from neocloud.studio.finetuning.training import Example, StepMetrics, Trainer, device

CONTROLLER_GONE = 75  # the exit status when standard input closed before training finished


def pack_dir(path: Path) -> bytes:
    """``path``'s files as a ``.tar.gz`` (names relative to it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for item in sorted(path.rglob("*")):
            if item.is_file():
                tar.add(item, arcname=str(item.relative_to(path)))
    return buffer.getvalue()


def unpack_dir(data: bytes, path: Path) -> None:
    """Write the ``.tar.gz`` ``data`` into ``path`` (refusing names that leave it)."""
    path.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(path, filter="data")


def encode_examples(examples: list[Example]) -> str:
    return json.dumps([[e.ids, e.labels] for e in examples])


def decode_examples(text: str) -> list[Example]:
    return [Example(list(ids), list(labels)) for ids, labels in json.loads(text)]


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _watch_controller() -> None:
    """Exit as soon as standard input closes: the controller went. (``os.read``, not the
    buffered ``sys.stdin``: a daemon thread blocked holding that buffer's lock makes the
    interpreter abort at its exit.)"""
    while os.read(0, 65536):
        pass
    os._exit(CONTROLLER_GONE)


def main(argv: list[str]) -> None:
    work, base = Path(argv[0]), Path(argv[1])
    threading.Thread(target=_watch_controller, daemon=True).start()
    job = json.loads((work / "job.json").read_text())
    hp = Hyperparameters(**job["hyperparameters"])
    train = decode_examples((work / "train.json").read_text())
    valid = decode_examples((work / "valid.json").read_text())
    trainer = Trainer(base, hp, int(job["seed"]), work / "checkpoints")
    _say({"kind": "start", "host": socket.gethostname(), "pid": os.getpid(), "device": device()})

    def on_step(m: StepMetrics) -> None:
        _say({"kind": "step", **{k: getattr(m, k) for k in StepMetrics.__slots__}})

    def on_epoch(epoch: int, step: int, path: Path) -> None:
        packed = base64.b64encode(pack_dir(path)).decode("ascii")
        _say({"kind": "epoch", "epoch": epoch, "step": step, "checkpoint": packed})
        for older in path.parent.glob("epoch-*"):  # the worker holds them now
            if older != path:
                shutil.rmtree(older, ignore_errors=True)

    trainer.run(
        train, valid, start_epoch=int(job["start_epoch"]), on_step=on_step, on_epoch=on_epoch
    )
    _say({"kind": "done"})
    # Everything is said and flushed: end here, not through the interpreter's shutdown, which
    # aborts (SIGABRT) when a daemon thread (the engine's, the controller watch) holds a lock.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
