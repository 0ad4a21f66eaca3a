"""Example plugin: flags shouted words (three or more capital letters in a row, not acronyms
from a short allow-list). Copy this folder to start a plugin of your own."""

import re

from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores, Span

_SHOUT = re.compile(r"\b[A-Z]{3,}\b")
_ALLOWED = {"USA", "NASA", "HTML", "JSON", "UTC", "GPU", "CPU", "DNA", "BBC", "SQL", "API"}


class ShoutingPlugin:
    def __init__(self):
        self.min_ratio = 0.3
        self.calls: list[str] = []

    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="flags shouted (ALL CAPS) words",
                          scales=["token", "document"], horizons=["short", "medium", "long"])

    @hookimpl
    def ufarsap_configure(self, params):
        unknown = set(params) - {"min_ratio"}
        if unknown:
            raise ValueError(f"unknown parameters: {sorted(unknown)}")
        self.min_ratio = float(params.get("min_ratio", self.min_ratio))

    def _spans(self, text):
        return [Span(start=m.start(), end=m.end(), severity=0.5, label="shouting")
                for m in _SHOUT.finditer(text) if m.group() not in _ALLOWED]

    @hookimpl
    def ufarsap_score_token(self, batch):
        self.calls.append("token")
        spans = [self._spans(s.text) for s in batch.samples]
        return ScaleScores(sample_scores=[1.0 if not sp else 0.5 for sp in spans], spans=spans)

    @hookimpl
    def ufarsap_score_document(self, batch):
        self.calls.append("document")
        scores = []
        for s in batch.samples:
            words = max(1, len(s.text.split()))
            ratio = len(self._spans(s.text)) / words
            scores.append(max(0.0, 1.0 - ratio / self.min_ratio) if ratio else 1.0)
        return ScaleScores(sample_scores=scores, details={"plugin": "safety.shouting"})
