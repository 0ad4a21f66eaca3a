"""Calling the scoring hooks for every scale x horizon cell, and checking what comes back.

The engine calls a plugin only for the cells its ``PluginInfo`` declares; cells nobody serves
are absent from the result (masked, not faked). Every result is checked (one score per sample,
finite, in range; spans inside the text); a bad result is the plugin's fault and is reported
naming the plugin and hook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.text import make_sample, split_sentences as sentence_spans  # noqa: F401 (re-exported)
from ufarsap_engine.schemas import (
    SCALES,
    AlignmentState,
    Feedback,
    Horizon,
    Sample,
    ScaleScores,
    Span,
    TextBatch,
)


@dataclass
class CellScores:
    """All plugins' results for one batch at one horizon, keyed by (plugin, scale)."""

    horizon: Horizon
    batch: TextBatch
    results: dict[tuple[str, str], ScaleScores] = field(default_factory=dict)

    def paradigm_sample_scores(self, paradigm_of: dict[str, str]) -> dict[str, list[float | None]]:
        """Per paradigm, each sample's mean score over the plugins and scales that scored it."""
        n = len(self.batch)
        sums: dict[str, list[float]] = {}
        counts: dict[str, list[int]] = {}
        for (plugin, _scale), res in self.results.items():
            p = paradigm_of[plugin]
            s, c = sums.setdefault(p, [0.0] * n), counts.setdefault(p, [0] * n)
            for i, v in enumerate(res.sample_scores):
                if v is not None:
                    s[i] += v
                    c[i] += 1
        return {p: [s / c if c else None for s, c in zip(sums[p], counts[p])] for p in sums}

    def feedback(self, i: int) -> Feedback:
        """What the engine would hand ``ufarsap_refine`` for sample ``i``: every flagged span."""
        return Feedback(spans=[sp for _, sp in self.flagged_spans()[i]])

    def flagged_spans(self) -> list[list[tuple[str, Span]]]:
        """Per sample, every flagged span with the plugin that flagged it."""
        out: list[list[tuple[str, Span]]] = [[] for _ in self.batch.samples]
        for (plugin, _scale), res in self.results.items():
            for i, spans in enumerate(res.spans or []):
                out[i].extend((plugin, sp) for sp in spans)
        return out


def score_batch(host: PluginHost, batch: TextBatch, horizon: Horizon, state: AlignmentState,
                only: list[str] | None = None,
                known: dict[tuple[str, str], ScaleScores] | None = None) -> CellScores:
    """Call every scale's scoring hook at ``horizon`` on the plugins that serve that cell
    (``only``: just these of the host's plugins; a plugin's upstream is then still handed over
    only where it was scored in this call). ``known``: results per (plugin, scale) already at
    hand (an annotation's): taken as they are, not called, and handed over as upstream.

    Plugins are called in dependency order (``PluginHost.layers``): those that use nobody
    first; a plugin that declares ``PluginInfo.uses`` is then called with its own copy of the
    batch whose ``upstream`` holds the results, at every scale, of the selected plugins it uses.
    So a document is scored once per plugin, and a plugin left out is left out everywhere."""
    cells = CellScores(horizon=horizon, batch=batch)
    known = known or {}
    for layer in host.layers():
        for scale in SCALES:
            cells.results.update({(n, scale): known[(n, scale)] for n in layer if (n, scale) in known})
            serving = [n for n in layer if n in host.info and host.info[n].serves(scale, horizon)
                       and (only is None or n in only) and (n, scale) not in known]
            plain = [n for n in serving if not host.upstream_of(n)]
            calls = [(plain, batch)] if plain else []
            calls += [([n], _with_upstream(batch, host.upstream_of(n), cells.results))
                      for n in serving if n not in plain]
            for names, given in calls:
                _call_scale(host, cells, scale, names, given, horizon, state)
    # A plugin quarantined part-way through contributes nothing to this batch.
    cells.results = {k: v for k, v in cells.results.items() if k[0] not in host.quarantined}
    return cells


def _with_upstream(batch: TextBatch, used: list[str], results: dict[tuple[str, str], ScaleScores]) -> TextBatch:
    """``batch`` with the results so far of the plugins in ``used`` attached (``TextBatch.upstream``)."""
    upstream: dict[str, dict[str, ScaleScores]] = {}
    for (plugin, scale), res in results.items():
        if plugin in used:
            upstream.setdefault(plugin, {})[scale] = res
    return batch.model_copy(update={"upstream": upstream})


def _call_scale(host: PluginHost, cells: CellScores, scale: str, only: list[str], batch: TextBatch,
                horizon: Horizon, state: AlignmentState) -> None:
    hook = f"ufarsap_score_{scale}"
    results = host.call(hook, only=only, expect=ScaleScores, batch=batch, horizon=horizon, state=state)
    for plugin, res in results.items():
        problem = check_scores(res, batch, scale)
        if problem:
            host.fail(plugin, hook, problem)
            continue
        cells.results[(plugin, scale)] = res


def score_texts(plugins: PluginHost | list[str], texts: list[str | Sample], horizon: Horizon | str = Horizon.SHORT,
                state: AlignmentState | None = None, params: dict[str, dict] | None = None) -> CellScores:
    """Score ``texts`` the way the engine does: through a host (names: a strict one, configured
    with ``params``), in dependency order, with upstream results handed over. The one way for
    tests, scripts and plugin authors to see a plugin's scores with the plugins it builds on."""
    host = plugins if isinstance(plugins, PluginHost) else PluginHost(list(plugins), strict=True)
    if not isinstance(plugins, PluginHost):
        for name in host.names:
            host.call("ufarsap_configure", only=[name], params=dict((params or {}).get(name, {})))
    samples = [t if isinstance(t, Sample) else make_sample(str(i), t) for i, t in enumerate(texts)]
    return score_batch(host, TextBatch(samples=samples), Horizon(horizon), state or AlignmentState())


def is_flagged(scale: str, score, spans, units, threshold: float) -> bool:
    """Whether one sample's result at ``scale`` flags it: flagged spans (token scale), a sentence
    below ``threshold`` (sentence scale), else the sample's score below ``threshold``; the same
    rule by which the objective turns scores into flagged tokens."""
    if scale == "token" and spans is not None:
        return bool(spans)
    if scale == "sentence" and units is not None:
        return any(u < threshold for u in units)
    return score is not None and score < threshold


def _is_score(v) -> bool:
    """A finite real number in [0, 1] (bools and non-numbers are not scores)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0


def check_sample(score, spans, units, sample: Sample, i: int) -> str | None:
    """What is wrong with one sample's score, spans and unit scores, or ``None``.

    Checked where the engine takes and where it uses a result, not only by ``ScaleScores``'
    validators: a plugin can change its lists after the model was built, or build it with
    ``model_construct``; what the engine uses is what counts."""
    if score is not None and not _is_score(score):
        return f"sample_scores[{i}] is {score!r}, not a finite number in [0, 1]"
    for sp in spans or []:
        if not isinstance(sp, Span):
            return f"spans of sample {i} hold {type(sp).__name__}, not Span"
        if not (isinstance(sp.start, int) and isinstance(sp.end, int) and 0 <= sp.start <= sp.end):
            return f"span [{sp.start}, {sp.end}) of sample {i} is not an ordered pair of offsets"
        if not (_is_score(sp.severity) and sp.severity > 0.0):
            return f"span [{sp.start}, {sp.end}) of sample {i} has severity {sp.severity!r}, not in (0, 1]"
        if sp.end > len(sample.text):
            return f"span [{sp.start}, {sp.end}) of sample {i} is outside its text (length {len(sample.text)})"
    if units is not None:
        want = max(1, len(sample.sentences))
        if len(units) != want:
            return f"returned {len(units)} unit_scores for sample {i}, which has {want} sentences"
        bad = [u for u in units if not _is_score(u)]
        if bad:
            return f"unit_scores of sample {i} hold {bad[0]!r}, not a finite number in [0, 1]"
    return None


def check_scores(res: ScaleScores, batch: TextBatch, scale: str) -> str | None:
    """What is wrong with a scoring result, or ``None``."""
    n = len(batch)
    for name in ("sample_scores", "spans", "unit_scores"):
        value = getattr(res, name)
        if (value is not None or name == "sample_scores") and not isinstance(value, list):
            return f"{name} is {type(value).__name__}, not a list"
    if len(res.sample_scores) != n:
        return f"returned {len(res.sample_scores)} sample_scores for a batch of {n}"
    if res.spans is not None and len(res.spans) != n:
        return f"returned spans for {len(res.spans)} samples, batch has {n}"
    if res.unit_scores is not None and len(res.unit_scores) != n:
        return f"returned unit_scores for {len(res.unit_scores)} samples, batch has {n}"
    for i, sample in enumerate(batch.samples):
        problem = check_sample(res.sample_scores[i], res.spans[i] if res.spans is not None else None,
                               res.unit_scores[i] if res.unit_scores is not None else None, sample, i)
        if problem:
            return problem
    return None
