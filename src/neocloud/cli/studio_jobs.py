"""CLI for the studio's jobs: ``neocloud studio files upload|list|get|content|delete`` and
``neocloud studio finetune create|list|get|cancel|events|checkpoints|delete-model``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from neocloud.cli.output import Column, api_call, out, print_json, print_object, print_table
from neocloud.cli.state import STATE

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
FileId = Annotated[str, typer.Argument(help="A file id (file-…)")]
JobId = Annotated[str, typer.Argument(help="A fine-tuning job id (ftjob-…)")]


def _epoch(value: int | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


FILE_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("FILENAME", "filename"),
    ("PURPOSE", "purpose"),
    ("BYTES", "bytes"),
    ("STATUS", "status"),
    ("CREATED", lambda f: _epoch(f["created_at"])),
]
JOB_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("MODEL", "model"),
    ("STATUS", "status"),
    ("FINE-TUNED MODEL", lambda j: j["fine_tuned_model"] or "-"),
    ("TRAINED TOKENS", lambda j: j["trained_tokens"] if j["trained_tokens"] is not None else "-"),
    ("CREATED", lambda j: _epoch(j["created_at"])),
    ("ERROR", lambda j: (j["error"] or {}).get("message", "") or j.get("queued_reason") or ""),
]
EVENT_COLUMNS: list[Column] = [
    ("CREATED", lambda e: _epoch(e["created_at"])),
    ("LEVEL", "level"),
    ("MESSAGE", "message"),
]
CHECKPOINT_COLUMNS: list[Column] = [
    ("STEP", "step_number"),
    ("TRAIN LOSS", lambda c: _loss(c["metrics"].get("train_loss"))),
    ("VALID LOSS", lambda c: _loss(c["metrics"].get("valid_loss"))),
    ("CHECKPOINT", "fine_tuned_model_checkpoint"),
]


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


files_app = typer.Typer(help="Files for fine-tuning and batches (/v1/files).", no_args_is_help=True)
finetune_app = typer.Typer(
    help="LoRA fine-tuning jobs (/v1/fine_tuning/jobs).", no_args_is_help=True
)


@files_app.command("upload")
@api_call
def files_upload(
    path: Annotated[Path, typer.Argument(help="A JSONL file", exists=True, dir_okay=False)],
    purpose: Annotated[str, typer.Option("--purpose", help="fine-tune or batch")],
    json_: Json = False,
) -> None:
    """Upload a JSONL file; its lines are checked and the first problems named by line."""
    made = STATE.client().studio.files.upload(path, purpose=purpose)
    print_object(made, as_json=json_, fields=FILE_COLUMNS)


@files_app.command("list")
@api_call
def files_list(
    purpose: Annotated[str | None, typer.Option("--purpose", help="Only this purpose")] = None,
    json_: Json = False,
) -> None:
    """Your organization's files, newest first."""
    page = STATE.client().studio.files.list(purpose=purpose)
    if json_:
        print_json(page)
        return
    print_table(page["data"], FILE_COLUMNS)


@files_app.command("get")
@api_call
def files_get(file_id: FileId, json_: Json = False) -> None:
    """One file: name, purpose, bytes, status."""
    print_object(STATE.client().studio.files.get(file_id), as_json=json_, fields=FILE_COLUMNS)


@files_app.command("content")
@api_call
def files_content(
    file_id: FileId,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout)")
    ] = None,
) -> None:
    """A file's content."""
    content = STATE.client().studio.files.content(file_id)
    if output is None:
        sys.stdout.write(content.decode())
    else:
        output.write_bytes(content)
        out.print(f"wrote {len(content)} bytes to {output}")


@files_app.command("delete")
@api_call
def files_delete(file_id: FileId) -> None:
    """Delete a file and its content."""
    STATE.client().studio.files.delete(file_id)
    out.print(f"deleted {file_id}")


@finetune_app.command("create")
@api_call
def finetune_create(
    model: Annotated[str, typer.Option("--model", "-m", help="The base model")],
    training_file: Annotated[str, typer.Option("--training-file", help="A fine-tune file id")],
    validation_file: Annotated[
        str | None, typer.Option("--validation-file", help="A fine-tune file id")
    ] = None,
    suffix: Annotated[str | None, typer.Option("--suffix", help="In the model's name")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed, for a repeatable run")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="n_epochs (default 3)")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Default 1")] = None,
    lr_multiplier: Annotated[
        float | None, typer.Option("--lr-multiplier", help="Times 1e-3 (default 1)")
    ] = None,
    lora_rank: Annotated[int | None, typer.Option("--lora-rank", help="Default 8")] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha", help="Default 16")] = None,
    json_: Json = False,
) -> None:
    """Start a LoRA fine-tune of a base model; follow it with `finetune events`."""
    given = {
        "n_epochs": epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": lr_multiplier,
        "lora_rank": lora_rank,
        "lora_alpha": lora_alpha,
    }
    hp: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    job = STATE.client().studio.fine_tuning.create(
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        hyperparameters=hp or None,
    )
    print_object(job, as_json=json_, fields=JOB_COLUMNS)


@finetune_app.command("list")
@api_call
def finetune_list(json_: Json = False) -> None:
    """Your organization's fine-tuning jobs, newest first."""
    page = STATE.client().studio.fine_tuning.list(limit=100)
    if json_:
        print_json(page)
        return
    print_table(page["data"], JOB_COLUMNS)


@finetune_app.command("get")
@api_call
def finetune_get(job_id: JobId, json_: Json = False) -> None:
    """One fine-tuning job: state, model, hyperparameters, the fine-tuned model once done."""
    job = STATE.client().studio.fine_tuning.get(job_id)
    print_object(job, as_json=json_, fields=JOB_COLUMNS)


@finetune_app.command("cancel")
@api_call
def finetune_cancel(job_id: JobId, json_: Json = False) -> None:
    """Cancel a job that has not finished (a running one stops at its next step)."""
    job = STATE.client().studio.fine_tuning.cancel(job_id)
    print_object(job, as_json=json_, fields=JOB_COLUMNS)


@finetune_app.command("events")
@api_call
def finetune_events(
    job_id: JobId,
    limit: Annotated[int, typer.Option("--limit", help="Most recent N (at most 100)")] = 20,
    json_: Json = False,
) -> None:
    """The job's events, oldest first: state changes and each step's losses."""
    page = STATE.client().studio.fine_tuning.events(job_id, limit=limit)
    if json_:
        print_json(page)
        return
    print_table(list(reversed(page["data"])), EVENT_COLUMNS)


@finetune_app.command("checkpoints")
@api_call
def finetune_checkpoints(job_id: JobId, json_: Json = False) -> None:
    """The job's checkpoints (one per epoch), the latest first."""
    page = STATE.client().studio.fine_tuning.checkpoints(job_id, limit=100)
    if json_:
        print_json(page)
        return
    print_table(page["data"], CHECKPOINT_COLUMNS)


@finetune_app.command("delete-model")
@api_call
def finetune_delete_model(
    model_id: Annotated[str, typer.Argument(help="A fine-tuned model (ft:…)")],
) -> None:
    """Stop serving a fine-tuned model of your organization (role admin)."""
    STATE.client().studio.fine_tuning.delete_model(model_id)
    out.print(f"deleted {model_id}")
