"""CLI for AI Studio: ``neocloud studio models [list|add|remove]``, ``neocloud studio chat``,
``neocloud studio usage``, ``neocloud studio limits get|set``, ``neocloud studio budget
get|set`` and ``neocloud studio batches list|get|create|cancel``; ``neocloud studio files …``
and ``neocloud studio finetune …`` (``studio_jobs``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from neocloud.cli.output import (
    Column,
    api_call,
    money,
    out,
    print_json,
    print_object,
    print_table,
    when,
)
from neocloud.cli.state import ORG_HELP, STATE
from neocloud.cli.studio_jobs import files_app, finetune_app
from neocloud.cli.times import FORMS, parse_when
from neocloud.kernel.clock import rfc3339

studio_app = typer.Typer(
    help="AI Studio: the OpenAI-compatible API under /v1.", no_args_is_help=True
)

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]

MODEL_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("ENGINE", "engine"),
    ("SOURCE", "source"),
    ("FLAVOR", "flavor"),
    ("CONTEXT", "context_length"),
    ("PER 1M IN", lambda m: _price(m, "input_per_m_tokens")),
    ("PER 1M OUT", lambda m: _price(m, "output_per_m_tokens")),
    ("DEPRECATED", "deprecated_on"),
    ("SERVABLE", lambda m: "yes" if m["servable"] else "no"),
]


def _price(model: dict[str, Any], key: str) -> str:
    pricing = model["pricing"]
    return money(pricing[key], pricing.get("currency", "USD"))


models_app = typer.Typer(
    help="The model catalog; operator admins add and remove models (local checkpoints or "
    "OpenAI-compatible upstreams such as vLLM and SGLang)."
)
studio_app.add_typer(models_app, name="models")
studio_app.add_typer(files_app, name="files")
studio_app.add_typer(finetune_app, name="finetune")


@models_app.callback(invoke_without_command=True)
@api_call
def models(ctx: typer.Context, json_: Json = False) -> None:
    """The catalog (same as ``models list``)."""
    if ctx.invoked_subcommand is None:
        _list_models(json_)


@models_app.command("list")
@api_call
def models_list(json_: Json = False) -> None:
    """Every model with its engine, context, prices per 1M tokens, flavor and deprecation."""
    _list_models(json_)


def _list_models(json_: bool) -> None:
    listing = STATE.client().studio.models.list()
    if json_:
        print_json(listing)
        return
    print_table(listing["data"], MODEL_COLUMNS)


@models_app.command("add")
@api_call
def models_add(
    path: Annotated[
        Path | None, typer.Option("--path", help="A local Hugging Face causal-LM directory")
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream", help="Base URL(s) of an OpenAI-compatible server, comma-separated"
        ),
    ] = None,
    model_id: Annotated[
        str | None, typer.Option("--id", help="The model's id (default: the directory's name)")
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option("--upstream-model", help="The name the upstream knows it by")
    ] = None,
    context: Annotated[int | None, typer.Option("--context", help="Context length")] = None,
    input_price: Annotated[
        str | None, typer.Option("--input-price", help="Per 1M tokens (required; 0 is free)")
    ] = None,
    output_price: Annotated[
        str | None, typer.Option("--output-price", help="Per 1M tokens (required; 0 is free)")
    ] = None,
    flavor: Annotated[
        Literal["base", "fast"], typer.Option("--flavor", help="The model's serving flavor")
    ] = "base",
    deprecated_on: Annotated[str | None, typer.Option("--deprecated-on", help="YYYY-MM-DD")] = None,
    json_: Json = False,
) -> None:
    """Serve a local checkpoint (--path) or register an upstream (--upstream, --id)."""
    if (path is None) == (upstream is None):
        raise typer.BadParameter("give either --path or --upstream")
    if model_id is None:
        if path is None:
            raise typer.BadParameter("--id is required with --upstream")
        model_id = path.resolve().name
    created = STATE.client().studio.models.add(
        model_id,
        path=str(path.resolve()) if path is not None else None,
        upstream_urls=[u.strip() for u in (upstream or "").split(",") if u.strip()],
        upstream_model=upstream_model,
        context_length=context,
        input_price_per_m=input_price,
        output_price_per_m=output_price,
        flavor=flavor,
        deprecated_on=deprecated_on,
    )
    if json_:
        print_json(created)
        return
    print_table([created], MODEL_COLUMNS)


@models_app.command("remove")
@api_call
def models_remove(model_id: Annotated[str, typer.Argument(help="A registered model's id")]) -> None:
    """Stop serving a registered model (built-in models cannot be removed)."""
    STATE.client().studio.models.remove(model_id)
    out.print(f"removed {model_id}")


@studio_app.command("chat")
@api_call
def chat(
    message: Annotated[str, typer.Argument(help="What to say")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="A model id from `studio models`")
    ] = "neocloud/tiny-llama",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Most tokens in the answer")
    ] = 128,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Sampling temperature (0: greedy)")
    ] = 0.7,
    json_: Json = False,
) -> None:
    """One chat turn; prints the answer and the tokens it used."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": message}],
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    answer = STATE.client().post("/v1/chat/completions", body)
    if json_:
        print_json(answer)
        return
    out.print(answer["choices"][0]["message"]["content"], highlight=False)
    usage = answer["usage"]
    out.print(
        f"[dim]{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens "
        f"({answer['choices'][0]['finish_reason']})[/dim]"
    )


# -- usage ------------------------------------------------------------------------------------

# --by's words (the CLI's) -> the API's group_by fields; api_key_id is accepted as well.
_BY = {"model": "model", "key": "api_key_id", "api_key_id": "api_key_id", "endpoint": "endpoint"}
_GROUP_HEADERS = {"model": "MODEL", "api_key_id": "KEY", "endpoint": "ENDPOINT"}


def _groups(by: str | None) -> list[str]:
    """``--by model,key`` as the API's group_by fields; an unknown word is a usage error."""
    groups = []
    for word in (by or "").split(","):
        if not word.strip():
            continue
        if word.strip() not in _BY:
            raise typer.BadParameter(
                f"--by takes model, key or endpoint (comma-separated), not {word.strip()!r}",
                param_hint="'--by'",
            )
        groups.append(_BY[word.strip()])
    return groups


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _usage_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per group and non-empty bucket, in time order."""
    return [
        {"start_time": bucket["start_time"], **result}
        for bucket in report["buckets"]
        for result in bucket["results"]
    ]


@studio_app.command("usage")
@api_call
def usage(
    org: Annotated[str | None, typer.Option("--org", help=ORG_HELP)] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help=f"{FORMS} (default: the start of this month, UTC)",
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Same forms as --since (default: now)")
    ] = None,
    bucket: Annotated[
        Literal["1d", "1h", "1m"],
        typer.Option("--bucket", help="Bucket width: a day, hour, minute"),
    ] = "1d",
    by: Annotated[
        str | None,
        typer.Option("--by", help="Group by any of model, key, endpoint (comma-separated)"),
    ] = None,
    json_: Json = False,
) -> None:
    """Tokens and requests per day (hour, minute), by model, key or endpoint."""
    now = STATE.clock.now()
    groups = _groups(by)
    report = STATE.client().studio.usage(
        parse_when(since, now) if since else rfc3339(_month_start(now)),
        end_time=parse_when(until, now, option="--until") if until else None,
        bucket_width=bucket,
        group_by=groups or None,
        org_id=STATE.maybe_org_id(org),
    )
    if json_:
        print_json(report)
        return
    _print_usage(report)


def _print_usage(report: dict[str, Any]) -> None:
    columns: list[Column] = [("START", "start_time")]
    columns += [(_GROUP_HEADERS[g], g) for g in report["group_by"]]
    columns += [
        ("IN TOKENS", "input_tokens"),
        ("OUT TOKENS", "output_tokens"),
        ("REQUESTS", "num_model_requests"),
        ("ABORTED", "aborted_requests"),
    ]
    title = (
        f"{report['org_id']} · {when(report['start_time'])} to {when(report['end_time'])} · "
        f"per {report['bucket_width']}"
    )
    print_table(_usage_rows(report), columns, title=title)
    t = report["totals"]
    out.print(
        f"TOTAL  {t['input_tokens']} in / {t['output_tokens']} out tokens, "
        f"{t['num_model_requests']} requests ({t['aborted_requests']} aborted)"
    )


# -- key rate limits ----------------------------------------------------------------------------

limits_app = typer.Typer(
    help="Per-key rate limits (operator staff read, operator admins set).", no_args_is_help=True
)
studio_app.add_typer(limits_app, name="limits")

LIMIT_FIELDS: list[Column] = [
    ("key", "key_id"),
    ("requests/min", lambda k: _override(k, "requests_per_minute")),
    ("tokens/min", lambda k: _override(k, "tokens_per_minute")),
]


def _override(limits: dict[str, Any], name: str) -> str:
    effective = limits[f"effective_{name}"]
    if limits[name] is None:
        return f"{effective} (default)"
    return str(effective)


def _limit_value(text: str | None, current: int | None, option: str) -> int | None:
    """``N`` sets a limit, ``default`` clears the override, nothing keeps what is there."""
    if text is None:
        return current
    if text.strip().lower() == "default":
        return None
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(
            f"{option} takes a whole number or 'default', not {text!r}"
        ) from None


KeyId = Annotated[str, typer.Argument(help="An API key id (key_…)")]


@limits_app.command("get")
@api_call
def limits_get(key_id: KeyId, json_: Json = False) -> None:
    """A key's limits: its overrides, or the defaults they fall back to."""
    print_object(STATE.client().studio.key_limits(key_id), as_json=json_, fields=LIMIT_FIELDS)


@limits_app.command("set")
@api_call
def limits_set(
    key_id: KeyId,
    rpm: Annotated[
        str | None, typer.Option("--rpm", help="Requests per minute, or 'default'")
    ] = None,
    tpm: Annotated[
        str | None, typer.Option("--tpm", help="Tokens per minute, or 'default'")
    ] = None,
    json_: Json = False,
) -> None:
    """Override a key's requests or tokens per minute; a limit not named is kept."""
    if rpm is None and tpm is None:
        raise typer.BadParameter("give --rpm, --tpm or both (a number, or 'default')")
    client = STATE.client()
    current = client.studio.key_limits(key_id)
    changed = client.studio.set_key_limits(
        key_id,
        requests_per_minute=_limit_value(rpm, current["requests_per_minute"], "--rpm"),
        tokens_per_minute=_limit_value(tpm, current["tokens_per_minute"], "--tpm"),
    )
    print_object(changed, as_json=json_, fields=LIMIT_FIELDS)


# -- org budgets --------------------------------------------------------------------------------

budget_app = typer.Typer(
    help="Per-org monthly token budgets and suspension (operator admins set).",
    no_args_is_help=True,
)
studio_app.add_typer(budget_app, name="budget")

BUDGET_FIELDS: list[Column] = [
    ("org", "org_id"),
    ("monthly tokens", lambda b: _or_none(b["monthly_token_limit"])),
    ("used this month", "used_this_month"),
    ("suspended", lambda b: "yes" if b["suspended"] else "no"),
]


def _or_none(value: int | None) -> str:
    return "none" if value is None else str(value)


Org = Annotated[str | None, typer.Option("--org", help=ORG_HELP)]


@budget_app.command("get")
@api_call
def budget_get(org: Org = None, json_: Json = False) -> None:
    """An org's monthly token budget, its tokens this month and whether it is suspended."""
    budget = STATE.client().studio.org_budget(STATE.org_id(org))
    print_object(budget, as_json=json_, fields=BUDGET_FIELDS)


@budget_app.command("set")
@api_call
def budget_set(
    org: Org = None,
    monthly_tokens: Annotated[
        str | None,
        typer.Option("--monthly-tokens", help="Tokens per calendar month, or 'none'"),
    ] = None,
    suspend: Annotated[
        bool | None,
        typer.Option("--suspend/--resume", help="Refuse every call / serve the org again"),
    ] = None,
    json_: Json = False,
) -> None:
    """Set an org's monthly token budget, or suspend or resume it; what is not named is kept."""
    if monthly_tokens is None and suspend is None:
        raise typer.BadParameter("give --monthly-tokens, --suspend or --resume")
    client = STATE.client()
    org_id = STATE.org_id(org)
    current = client.studio.org_budget(org_id)
    limit = current["monthly_token_limit"]
    if monthly_tokens is not None:
        if monthly_tokens.strip().lower() == "none":
            limit = None
        else:
            try:
                limit = int(monthly_tokens)
            except ValueError:
                raise typer.BadParameter(
                    f"--monthly-tokens takes a whole number or 'none', not {monthly_tokens!r}"
                ) from None
    changed = client.studio.set_org_budget(
        org_id,
        monthly_token_limit=limit,
        suspended=current["suspended"] if suspend is None else suspend,
    )
    print_object(changed, as_json=json_, fields=BUDGET_FIELDS)


APPS: dict[str, typer.Typer] = {"studio": studio_app}


batches_app = typer.Typer(
    help="Batches (/v1/batches): a file of requests run offline at the batch price.",
    no_args_is_help=True,
)
studio_app.add_typer(batches_app, name="batches")

BATCH_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("STATUS", "status"),
    ("ENDPOINT", "endpoint"),
    ("DONE", lambda b: f"{b['request_counts']['completed']}/{b['request_counts']['total']}"),
    ("FAILED", lambda b: b["request_counts"]["failed"]),
    ("CREATED", lambda b: when(_unix(b["created_at"]))),
    ("OUTPUT", "output_file_id"),
]
BATCH_FIELDS: list[Column] = [
    ("id", "id"),
    ("status", "status"),
    ("endpoint", "endpoint"),
    ("input file", "input_file_id"),
    ("output file", "output_file_id"),
    ("error file", "error_file_id"),
    ("total", lambda b: b["request_counts"]["total"]),
    ("completed", lambda b: b["request_counts"]["completed"]),
    ("failed", lambda b: b["request_counts"]["failed"]),
    ("created", lambda b: when(_unix(b["created_at"]))),
    ("expires", lambda b: when(_unix(b["expires_at"]))),
    (
        "errors",
        lambda b: (
            "; ".join(
                f"line {e.get('line')}: {e['message']}" for e in (b["errors"] or {}).get("data", [])
            )
            or None
        ),
    ),
]
BatchId = Annotated[str, typer.Argument(help="A batch id (batch_…)")]


def _unix(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    from datetime import UTC

    return rfc3339(datetime.fromtimestamp(seconds, tz=UTC))


@batches_app.command("list")
@api_call
def batches_list(
    after: Annotated[str | None, typer.Option(help="List after this batch id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="At most this many")] = 20,
    json_: Json = False,
) -> None:
    """The org's batches, newest first."""
    page = STATE.client().studio.batches.list(after=after, limit=limit)
    if json_:
        print_json(page)
        return
    print_table(page["data"], BATCH_COLUMNS)
    if page["has_more"]:
        out.print(f"More: --after {page['last_id']}")


@batches_app.command("get")
@api_call
def batches_get(batch_id: BatchId, json_: Json = False) -> None:
    """A batch: its state, counts and files."""
    print_object(STATE.client().studio.batches.get(batch_id), as_json=json_, fields=BATCH_FIELDS)


@batches_app.command("create")
@api_call
def batches_create(
    input_file_id: Annotated[str, typer.Argument(help="A file uploaded with purpose batch")],
    endpoint: Annotated[
        str, typer.Option(help="/v1/chat/completions or /v1/embeddings")
    ] = "/v1/chat/completions",
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="KEY=VALUE (repeatable, at most 16)")
    ] = None,
    json_: Json = False,
) -> None:
    """Run the requests of a batch file within 24 hours, at the batch price."""
    pairs: dict[str, str] = {}
    for item in metadata or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--metadata takes KEY=VALUE, not {item!r}")
        pairs[key] = value
    made = STATE.client().studio.batches.create(
        input_file_id, endpoint=endpoint, metadata=pairs or None
    )
    print_object(made, as_json=json_, fields=BATCH_FIELDS)


@batches_app.command("cancel")
@api_call
def batches_cancel(batch_id: BatchId, json_: Json = False) -> None:
    """Cancel: what finished stays in the output file; the rest is reported as cancelled."""
    print_object(STATE.client().studio.batches.cancel(batch_id), as_json=json_, fields=BATCH_FIELDS)
