"""CLI for AI Studio: ``neocloud studio models`` and ``neocloud studio chat``."""

from __future__ import annotations

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
    ("FLAVOR", "flavor"),
    ("CONTEXT", "context_length"),
    ("$/1M IN", lambda m: m["pricing"]["input_per_m_tokens"]),
    ("$/1M OUT", lambda m: m["pricing"]["output_per_m_tokens"]),
    ("DEPRECATED", "deprecated_on"),
]


@studio_app.command("models")
@api_call
def models(json_: Json = False) -> None:
    """The models that can be called now, with their prices per 1M tokens."""
    listing = STATE.client().get("/v1/models")
    if json_:
        print_json(listing)
        return
    print_table(listing["data"], MODEL_COLUMNS)


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
