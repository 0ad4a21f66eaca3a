"""reflect.selfrefine: recursive self-refinement of flagged spans (paper Eq. 15).

One iteration: score the text with the safety evaluators -> edit what they flag -> re-score.
Edits are conservative and explainable: personal data becomes a typed placeholder ("[email]"), a
wrong fact value is replaced by the knowledge base's true value, an insult word is removed (the
whole sentence if little is left of it), a stereotype, false-claim or jailbreak sentence is
removed. Spans the engine flags (``Feedback.spans``) are edited the same way.

The loop continues while the Eq. 15 gate says so:
    continue = sigmoid(w . [improvement potential, resource budget, quality] + b) > 0.5
with improvement potential = 1 - current safety score, budget = share of iterations left,
quality = the current quality proxy; at most ``max_iterations`` (3) rounds.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import (AlignmentState, Feedback, Horizon, Paradigm, PluginInfo, Refinement, Sample,
                                    Scale, ScaleScores, Span, TextBatch)

from ufarsap_plugins._common import as_text, check_params, clamp01, split_sentences
from ufarsap_plugins._suite import DIMENSIONS, quality, safety_analyses
from ufarsap_plugins.safety import tradeoff as eq19

PLACEHOLDER = {"EMAIL_ADDRESS": "[email]", "PHONE_NUMBER": "[phone]", "CREDIT_CARD": "[card number]",
               "US_SSN": "[SSN]", "IP_ADDRESS": "[IP address]", "IBAN_CODE": "[IBAN]", "ADDRESS": "[address]",
               "PERSON": "[name]", "URL": "[link]", "UK_NINO": "[NI number]"}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def tidy(text: str) -> str:
    """Clean up what deletions leave behind: doubled spaces, space before punctuation, empty
    clauses (", ,"), a leading comma."""
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r" +([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])\s*([,.;:!?])", r"\2", text)
    text = re.sub(r"(^|\n)\s*[,;:]\s*", r"\1", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def apply_edits(text: str, edits: list[tuple[int, int, str, str]]) -> str:
    """Apply non-overlapping (start, end, replacement, reason) edits; wider edits win overlaps."""
    chosen: list[tuple[int, int, str, str]] = []
    for e in sorted(edits, key=lambda e: (-(e[1] - e[0]), e[0])):
        if all(e[1] <= c[0] or e[0] >= c[1] for c in chosen):
            chosen.append(e)
    out, pos = [], 0
    for s, e, rep, _ in sorted(chosen):
        out.append(text[pos:s])
        out.append(rep)
        pos = e
    out.append(text[pos:])
    return "".join(out)


class SelfRefinePlugin:
    NAME = "reflect.selfrefine"
    DEFAULTS: dict[str, Any] = {"max_iterations": 3, "gate_weights": [6.0, 2.0, -1.0], "gate_bias": -2.0,
                                "threshold": 0.5, "detect": True, "domain": "general"}

    def __init__(self) -> None:
        self.params = dict(self.DEFAULTS)

    @hookimpl
    def ufarsap_plugin_info(self) -> PluginInfo:
        return PluginInfo(paradigm=Paradigm.REFLECT,
                          description="Recursive self-refinement (Eq. 15): redact, correct or remove flagged spans, "
                                      "re-score, continue while the sigmoid gate says so (max 3 iterations).",
                          scales=[Scale.DOCUMENT], horizons=[Horizon.MEDIUM, Horizon.LONG],
                          requires=["alt-profanity-check>=1.5", "presidio-analyzer>=2.2", "vaderSentiment>=3.3"])

    @hookimpl
    def ufarsap_configure(self, params: dict[str, Any]) -> None:
        p = check_params(params, self.DEFAULTS, self.NAME)
        if not 1 <= int(p["max_iterations"]) <= 10:
            raise ValueError(f"{self.NAME}: max_iterations must be 1..10")
        if len(p["gate_weights"]) != 3:
            raise ValueError(f"{self.NAME}: gate_weights needs 3 numbers (potential, budget, quality)")
        self.params = p

    # -- scoring -----------------------------------------------------------------------------
    def assess(self, text: str) -> tuple[float, float, dict[str, Any]]:
        """(safety score, quality, analyses) of a text."""
        analyses = safety_analyses([text])
        profile = {d: 1.0 - analyses[d][0].harm for d in DIMENSIONS}
        w = eq19.adaptive_weights({"domain": self.params["domain"]})
        return eq19.safety_score(profile, w), quality(text), {"profile": profile, "analyses": analyses}

    def gate(self, potential: float, budget: float, qual: float) -> float:
        w, b = self.params["gate_weights"], self.params["gate_bias"]
        return sigmoid(w[0] * potential + w[1] * budget + w[2] * qual + b)

    # -- editing -----------------------------------------------------------------------------
    def propose_edits(self, text: str, info: dict[str, Any], extra: list[Span] | None = None) -> list[tuple[int, int, str, str]]:
        th = float(self.params["threshold"])
        an = info["analyses"]
        edits: list[tuple[int, int, str, str]] = []
        sentences = split_sentences(text)

        def sentence_of(pos: int) -> tuple[int, int]:
            for s, e in sentences:
                if s <= pos < e:
                    return s, e
            return pos, pos

        for f in an["privacy"][0].findings:
            if f.harm >= th:
                edits.append((f.start, f.end, PLACEHOLDER.get(f.label, "[redacted]"), f"redact {f.label}"))
        # insults: drop the words; drop the sentence if little would be left of it
        by_sentence: dict[tuple[int, int], list] = {}
        for f in an["toxicity"][0].findings:
            if f.harm >= th:
                by_sentence.setdefault(sentence_of(f.start), []).append(f)
        for (s, e), fs in by_sentence.items():
            kept = text[s:e]
            for f in sorted(fs, key=lambda f: -f.start):
                kept = kept[: f.start - s] + kept[f.end - s:]
            content = [w for w in re.findall(r"[A-Za-z]{3,}", kept)
                       if w.lower() not in {"you", "are", "such", "the", "and", "what", "your", "this", "that"}]
            if len(content) < 4 or quality(tidy(kept)) < 0.6:
                edits.append((s, e, "", "remove insulting sentence"))
            else:
                edits.extend((f.start, f.end, "", "remove insult") for f in fs)
        # facts: correct the value when the KB knows it, else drop the sentence
        from ufarsap_plugins.safety import load_safety_plugin

        for c in load_safety_plugin("safety.misinformation").corrections(text):
            if c.get("value_span") and c.get("true_value") is not None:
                a, b = c["value_span"]
                edits.append((a, b, str(c["true_value"]), f"correct {c['kb']}"))
            else:
                edits.append((c["start"], c["end"], "", f"remove false claim {c['kb']}"))
        for dim, why in (("bias", "remove stereotype"), ("adversarial", "remove jailbreak/injection")):
            for s, e, h in an[dim][0].units:
                if h >= th and (s, e) in sentences:
                    edits.append((s, e, "", why))
        for sp in extra or []:
            if 0 <= sp.start < sp.end <= len(text):
                edits.append((sp.start, sp.end, PLACEHOLDER.get(sp.label, ""), f"engine flag {sp.label or 'span'}"))
        return edits

    def refine_text(self, text: str, extra: list[Span] | None = None) -> tuple[str, dict[str, Any]]:
        """The refinement loop; returns the final text and a trace of every iteration."""
        text = as_text(text)
        max_it = int(self.params["max_iterations"])
        safety, qual, info = self.assess(text)
        trace: dict[str, Any] = {"initial_safety": safety, "initial_quality": qual, "iterations": []}
        current = text
        for it in range(max_it):
            budget = (max_it - it) / max_it
            g = self.gate(1.0 - safety, budget, qual)
            step = {"gate": round(g, 4), "safety": round(safety, 4), "quality": round(qual, 4)}
            if g <= 0.5:
                step["stop"] = "gate"
                trace["iterations"].append(step)
                break
            edits = self.propose_edits(current, info, extra if it == 0 else None)
            if not edits:
                step["stop"] = "nothing to edit"
                trace["iterations"].append(step)
                break
            new = tidy(apply_edits(current, edits))
            new_safety, new_qual, new_info = self.assess(new)
            step.update({"edits": sorted({e[3] for e in edits}), "new_safety": round(new_safety, 4)})
            trace["iterations"].append(step)
            if new == current:
                break
            current, safety, qual, info = new, new_safety, new_qual, new_info
        trace.update({"final_safety": safety, "final_quality": qual})
        return current, trace

    @staticmethod
    def changed_spans(old: str, new: str) -> list[Span]:
        out = []
        for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
            if tag != "equal":
                out.append(Span(start=i1, end=i2, severity=1.0, label=tag))
        return out

    # -- hooks -------------------------------------------------------------------------------
    @hookimpl
    def ufarsap_refine(self, sample: Sample, feedback: Feedback, state: AlignmentState) -> Refinement | None:
        new, trace = self.refine_text(sample.text, feedback.spans if feedback else None)
        if new == sample.text:
            return None
        edits = sorted({e for step in trace["iterations"] for e in step.get("edits", [])})
        rationale = (f"{len([s for s in trace['iterations'] if 'edits' in s])} iteration(s): " + "; ".join(edits) +
                     f". Safety {trace['initial_safety']:.2f} -> {trace['final_safety']:.2f}.")
        return Refinement(text=new, rationale=rationale, changed_spans=self.changed_spans(sample.text, new))

    @hookimpl
    def ufarsap_score_document(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        """The safety a sample reaches after self-refinement (what reflection can achieve)."""
        scores, gains = [], []
        for s in batch.samples:
            _, trace = self.refine_text(s.text)
            scores.append(clamp01(trace["final_safety"]))
            gains.append(trace["final_safety"] - trace["initial_safety"])
        return ScaleScores(sample_scores=scores, details={"gain": gains})
