"""Documents as the engine's ``Sample`` inputs, read exactly as the trainer reads them.

One reader for every part of the engine (training, hook-only runs, evolution probes): the
trainer's ``read_documents`` renders JSONL records (``text``, ``prompt`` + ``response``, or
``messages``) into text, so the character spans plugins flag line up with the tokens trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ufarsap_engine.schemas import Message

EMBEDDED_DIR = Path(__file__).parent / "embedded"


def default_corpus_path() -> Path:
    return EMBEDDED_DIR / "corpus.jsonl"


def iter_documents(path: str | Path | None) -> Iterator[tuple[str, str, dict]]:
    """Yield ``(doc_id, text, extras)`` for every non-empty document of a .txt/.jsonl file or a
    saved HF dataset (``None``: the embedded corpus); ``extras`` holds ``messages``/``prompt``."""
    from ufarsap_engine.trainer.data import DataSpec, read_documents

    for d in read_documents(DataSpec(path=str(path) if path else None)):
        extras: dict = {}
        if d.messages:
            extras["messages"] = [Message(role=m["role"], content=m["content"]) for m in d.messages]
        if d.prompt is not None:
            extras["prompt"] = d.prompt
        yield str(d.doc_id), d.text, extras
