"""Line-by-line checks of an uploaded JSONL file, by purpose (pure: bytes in, problems out).

* ``fine-tune``: each line is ``{"messages": [{"role", "content"}, …]}`` in the chat format,
  with roles ``system``, ``user`` and ``assistant``, string contents, and at least one
  ``assistant`` message (what the model learns to say).
* ``batch``: each line is ``{"custom_id", "method": "POST", "url", "body"}``; ``custom_id``s
  are unique in the file and every line names the same ``url`` (one endpoint per batch), one of
  ``BATCH_URLS``.

The first ``MAX_REPORTED`` problems come back, each with its 1-based line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FINE_TUNE = "fine-tune"
BATCH = "batch"
BATCH_URLS = ("/v1/chat/completions", "/v1/embeddings")
CHAT_ROLES = ("system", "user", "assistant")
MAX_REPORTED = 10  # problems reported per upload
MAX_LINES = 50_000  # lines per file (OpenAI's bound for a batch)
CUSTOM_ID_MAX = 512


@dataclass(frozen=True, slots=True)
class LineProblem:
    line: int  # 1-based
    message: str
    param: str | None = None  # the field of the line, dotted (``messages[1].role``)

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message, "param": self.param}


@dataclass(frozen=True, slots=True)
class JsonlReport:
    lines: int  # non-empty lines read
    problems: list[LineProblem]


def check_jsonl(content: bytes, purpose: str) -> JsonlReport:
    """Check every line of ``content`` for ``purpose``; stops collecting at ``MAX_REPORTED``."""
    problems: list[LineProblem] = []
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        return JsonlReport(0, [LineProblem(line, "the file is not valid UTF-8")])
    seen_ids: set[str] = set()
    urls: set[str] = set()
    count = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        count += 1
        if count > MAX_LINES:
            problems.append(LineProblem(number, f"a file holds at most {MAX_LINES} lines"))
            break
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
            problems.append(LineProblem(number, f"not valid JSON: {msg}"))
        else:
            if not isinstance(record, dict):
                problems.append(LineProblem(number, "each line must be a JSON object"))
            elif purpose == FINE_TUNE:
                problems.extend(_fine_tune_line(number, record))
            else:
                problems.extend(_batch_line(number, record, seen_ids, urls))
        if len(problems) >= MAX_REPORTED:
            break
    if count == 0 and not problems:
        problems.append(LineProblem(1, "the file has no lines"))
    return JsonlReport(count, problems[:MAX_REPORTED])


def _fine_tune_line(number: int, record: dict[str, Any]) -> list[LineProblem]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return [LineProblem(number, "'messages' must be a non-empty list", "messages")]
    assistant = False
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return [LineProblem(number, f"{where} must be an object", where)]
        role = message.get("role")
        if role not in CHAT_ROLES:
            allowed = ", ".join(CHAT_ROLES)
            return [LineProblem(number, f"{where}.role must be one of {allowed}", f"{where}.role")]
        if not isinstance(message.get("content"), str):
            return [LineProblem(number, f"{where}.content must be a string", f"{where}.content")]
        assistant = assistant or role == "assistant"
    if not assistant:
        return [LineProblem(number, "an example needs at least one assistant message", "messages")]
    return []


def _batch_line(
    number: int, record: dict[str, Any], seen_ids: set[str], urls: set[str]
) -> list[LineProblem]:
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= CUSTOM_ID_MAX:
        msg = f"'custom_id' must be a string of 1 to {CUSTOM_ID_MAX} characters"
        return [LineProblem(number, msg, "custom_id")]
    if custom_id in seen_ids:
        return [LineProblem(number, f"duplicate custom_id {custom_id!r}", "custom_id")]
    seen_ids.add(custom_id)
    if record.get("method") != "POST":
        return [LineProblem(number, "'method' must be 'POST'", "method")]
    url = record.get("url")
    if url not in BATCH_URLS:
        return [LineProblem(number, f"'url' must be one of {', '.join(BATCH_URLS)}", "url")]
    assert isinstance(url, str)
    if urls and url not in urls:
        (first,) = urls
        msg = f"every line of a batch must have the same url; earlier lines have {first}"
        return [LineProblem(number, msg, "url")]
    urls.add(url)
    if not isinstance(record.get("body"), dict):
        return [LineProblem(number, "'body' must be an object", "body")]
    return []
