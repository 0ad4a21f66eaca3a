"""One document renderer: how a corpus record becomes the text that is trained on, evaluated
and benchmarked (the trainer's data, conditional training's rewritten corpus, the labelled
evaluation set and the benchmark all call :func:`render_record`, so a record's tokens are the
same everywhere).

- ``{"text": ...}``: the text itself;
- ``{"prompt", "response"}``: ``prompt + "\\n" + response`` (no newline when the prompt already
  ends in whitespace);
- ``{"messages": [{"role", "content"}, ...]}``: one ``role: content`` line per message, each
  ending in ``"\\n"``.

``fields`` gives where each source field starts in the text (``"text"``, ``"prompt"``,
``"response"``, ``"messages[i]"`` for a message's content), so spans labelled on a field can be
moved onto the rendered text; ``response_ranges`` are the character ranges of the response or of
the assistant turns (what ``loss_on = "response"`` trains on; ``None`` for a plain text: all of it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator


@dataclass
class Rendered:
    text: str
    fields: dict[str, int] = field(default_factory=dict)
    response_ranges: list[tuple[int, int]] | None = None
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None


def render_record(rec: Any, text_field: str = "text") -> Rendered:
    """Render one record; a record of the wrong shape raises ``ValueError`` saying what is wrong."""
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    if text_field in rec:
        text = rec[text_field]
        if not isinstance(text, str):
            raise ValueError(f"field '{text_field}' must be a string")
        return Rendered(text, {text_field: 0})
    if "prompt" in rec or "response" in rec:
        prompt, response = rec.get("prompt"), rec.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise ValueError("'prompt' and 'response' must both be strings")
        sep = "" if (not prompt or prompt[-1].isspace()) else "\n"
        start = len(prompt) + len(sep)
        text = prompt + sep + response
        return Rendered(text, {"prompt": 0, "response": start}, [(start, len(text))], prompt=prompt)
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("'messages' must be a non-empty list")
        parts, fields, ranges, pos = [], {}, [], 0
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"messages[{j}] needs string 'role' and 'content'")
            head = f"{m['role']}: "
            fields[f"messages[{j}]"] = pos + len(head)
            parts.append(head + m["content"] + "\n")
            if m["role"] == "assistant":
                ranges.append((pos + len(head), pos + len(head) + len(m["content"]) + 1))
            pos += len(parts[-1])
        return Rendered("".join(parts), fields, ranges,
                        messages=[{"role": m["role"], "content": m["content"]} for m in msgs])
    raise ValueError(f"no '{text_field}', 'prompt'+'response' or 'messages' field "
                     f"(keys: {', '.join(sorted(rec)) or 'none'})")


def jsonl_records(path, lines: Iterable[tuple[int, str]] | None = None) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a JSONL file (``lines``: already
    read ``(number, text)`` pairs, for a reader with its own decoding checks). A line that is not
    JSON is a ``UserError`` naming the file and line: the one JSONL parser of the engine."""
    from ufarsap_engine.errors import UserError

    if lines is None:
        lines = enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1)
    for n, line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        yield n, rec


def read_prompt_file(path) -> list[str]:
    """Prompts from a JSONL file, one ``{"prompt": "..."}`` object per line (blank lines skipped),
    for ``generate --prompts`` and the on-policy phase (``run --prompts``). A missing file or a bad
    line is a ``UserError`` naming the file and line."""
    from ufarsap_engine.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file {path} does not exist; give a JSONL file with one {{\"prompt\": ...}} per line")
    out = []
    for n, rec in jsonl_records(path):
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"]:
            raise UserError(f"{path}:{n}: needs a non-empty string field 'prompt'")
        out.append(rec["prompt"])
    if not out:
        raise UserError(f"prompts file {path} holds no prompts")
    return out
