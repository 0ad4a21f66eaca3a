"""Reading documents (plain text or JSONL) into the engine's ``Sample`` form for scoring.

JSONL lines hold ``text``, or ``prompt`` + ``response``, or ``messages`` (multi-turn). A
conversation is rendered as ``Role: content`` lines, the same way the trainer renders it, so
the character spans plugins flag line up with the tokens trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ufarsap_engine.errors import UserError
from ufarsap_engine.schemas import Message

EMBEDDED_DIR = Path(__file__).parent / "embedded"


def default_corpus_path() -> Path:
    return EMBEDDED_DIR / "corpus.jsonl"


def render_messages(messages: list[dict]) -> str:
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def record_to_text(rec: dict, where: str) -> tuple[str, dict]:
    """Return (text, extras) for one JSONL record, or raise a ``UserError`` naming ``where``."""
    if not isinstance(rec, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise UserError(f"{where}: 'messages' must be a list of {{role, content}} objects")
        return render_messages(msgs), {"messages": [Message(role=m["role"], content=str(m["content"])) for m in msgs]}
    if "text" in rec:
        if not isinstance(rec["text"], str):
            raise UserError(f"{where}: 'text' must be a string")
        return rec["text"], {}
    if "prompt" in rec and "response" in rec:
        return f"{rec['prompt']}\n{rec['response']}", {"prompt": str(rec["prompt"])}
    raise UserError(f"{where}: no 'text', 'messages' or 'prompt'+'response' field")


def iter_documents(path: str | Path) -> Iterator[tuple[str, str, dict]]:
    """Yield ``(doc_id, text, extras)`` from a ``.jsonl`` file or a plain-text file
    (plain text: one document per blank-line-separated paragraph)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"data file {p} does not exist")
    if p.is_dir():
        raise UserError(f"data path {p} is a directory; give a .txt or .jsonl file")
    raw = p.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    if p.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            body, extras = record_to_text(rec, where)
            yield str(rec.get("id", f"{p.stem}-{lineno}")), body, extras
    else:
        for i, para in enumerate(x for x in text.split("\n\n") if x.strip()):
            yield f"{p.stem}-{i}", para.strip(), {}
