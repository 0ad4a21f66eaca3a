"""The engine's text helpers, public for plugin authors and their tests.

``split_sentences`` is the very rule the engine uses to fill ``Sample.sentences`` (one
``unit_scores`` entry is expected per span it returns), and ``make_sample`` builds a
``Sample`` exactly as the engine does, so a plugin's tests see the engine's sentences.
"""

from ufarsap_engine.alignment.scoring import make_sample, sentence_spans as split_sentences

__all__ = ["make_sample", "split_sentences"]
