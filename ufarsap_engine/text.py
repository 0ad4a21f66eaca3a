"""The engine's text helpers, public for plugin authors and their tests.

``split_sentences`` is the one sentence rule of the engine, plugins and benchmark: it fills
``Sample.sentences`` (one ``unit_scores`` entry is expected per span it returns), the built-in
plugins cut its spans into detector units (``ufarsap_plugins._common.split_sentences``), and the
benchmark's judges split with it. ``make_sample`` builds a ``Sample`` exactly as the engine
does, so a plugin's tests see the engine's sentences.
"""

from __future__ import annotations

import re

from ufarsap_engine.schemas import Sample

# A sentence ends after a run of . ! ? (and any closing quotes or brackets) followed by
# whitespace or the end of the text, or at a line break. "3.14" and "e.g.x" do not end one.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s|$)|\n")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence character spans ``[start, end)`` of ``text``, in order, whitespace trimmed at both
    ends, covering all of its non-blank text (a simple, predictable rule)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        _add_trimmed(spans, text, start, m.start() if m.group() == "\n" else m.end())
        start = m.end()
    _add_trimmed(spans, text, start, len(text))
    return spans


def _add_trimmed(spans: list[tuple[int, int]], text: str, start: int, end: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


def make_sample(sample_id: str, text: str, **extra) -> Sample:
    """A ``Sample`` as the engine builds it: ``sentences`` from :func:`split_sentences`."""
    return Sample(sample_id=sample_id, text=text, sentences=split_sentences(text), **extra)


__all__ = ["make_sample", "split_sentences"]
