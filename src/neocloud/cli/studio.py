"""CLI for AI Studio: ``neocloud studio models [list|add|remove]`` and ``neocloud studio chat``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from neocloud.cli.output import Column, api_call, out, print_json, print_table
from neocloud.cli.state import STATE

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
    ("$/1M IN", lambda m: m["pricing"]["input_per_m_tokens"]),
    ("$/1M OUT", lambda m: m["pricing"]["output_per_m_tokens"]),
    ("DEPRECATED", "deprecated_on"),
    ("SERVABLE", lambda m: "yes" if m["servable"] else "no"),
]

models_app = typer.Typer(
    help="The model catalog; operator admins add and remove models (local checkpoints or "
    "OpenAI-compatible upstreams such as vLLM and SGLang)."
)
studio_app.add_typer(models_app, name="models")


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
    listing = STATE.client().get("studio/models")
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
    input_price: Annotated[str, typer.Option("--input-price", help="Per 1M tokens")] = "0",
    output_price: Annotated[str, typer.Option("--output-price", help="Per 1M tokens")] = "0",
    flavor: Annotated[str, typer.Option("--flavor", help="base or fast")] = "base",
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
    body: dict[str, Any] = {
        "id": model_id,
        "input_price_per_m": input_price,
        "output_price_per_m": output_price,
        "flavor": flavor,
    }
    if path is not None:
        body["path"] = str(path.resolve())
    if upstream is not None:
        body["upstream_urls"] = [u.strip() for u in upstream.split(",") if u.strip()]
        body["upstream_model"] = upstream_model
    if context is not None:
        body["context_length"] = context
    if deprecated_on is not None:
        body["deprecated_on"] = deprecated_on
    created = STATE.client().post("studio/models", body)
    if json_:
        print_json(created)
        return
    print_table([created], MODEL_COLUMNS)


@models_app.command("remove")
@api_call
def models_remove(model_id: Annotated[str, typer.Argument(help="A registered model's id")]) -> None:
    """Stop serving a registered model (built-in models cannot be removed)."""
    STATE.client().delete(f"studio/models/{model_id}")
    out.print(f"removed {model_id}")


@studio_app.command("chat")
@api_call
def chat(
    message: Annotated[str, typer.Argument(help="What to say")],
    model: Annotated[str, typer.Option("--model", "-m")] = "neocloud/tiny-llama",
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 128,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.7,
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


APPS: dict[str, typer.Typer] = {"studio": studio_app}
