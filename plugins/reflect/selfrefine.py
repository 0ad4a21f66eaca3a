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

Inside the engine the plugin runs no detector: it declares ``uses=["safety"]`` and edits the spans
the selected safety plugins flagged on this batch (``TextBatch.upstream``), in one pass, since
re-detecting an edited text would mean running the detectors itself. The safety it then reaches
is the Eq. 18 score of what the edits leave: each flag an edit removes or addresses no longer
counts (``residual_profile``); the document score discounts it by the share of the text edited,
since the original, not the refinement, is what trains. ``ufarsap_refine`` edits the spans in ``Feedback.spans`` (the
engine re-scores the refinement). With no safety plugin selected there is nothing to edit and
the document hook has no opinion. ``assess``/``refine_text`` run the built-in detectors
explicitly, iteration after iteration, for scripts.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import (AlignmentState, Feedback, Horizon, Paradigm, PluginInfo, Refinement, Sample,
                                    Scale, ScaleScores, Span, TextBatch)

from ufarsap_plugins._common import Analysis, Finding, as_text, check_params, clamp01, split_sentences
from ufarsap_plugins._suite import (DIMENSIONS, quality, safety_analyses, upstream_flags, upstream_profiles,
                                    upstream_units)
from ufarsap_plugins.safety import tradeoff as eq19

PLACEHOLDER = {"EMAIL_ADDRESS": "[email]", "PHONE_NUMBER": "[phone]", "CREDIT_CARD": "[card number]",
               "US_SSN": "[SSN]", "IP_ADDRESS": "[IP address]", "IBAN_CODE": "[IBAN]", "ADDRESS": "[address]",
               "PERSON": "[name]", "URL": "[link]", "UK_NINO": "[NI number]"}
#: Which dimension an edit addresses, by the first word(s) of its reason.
EDIT_DIMENSION = {"redact": "privacy", "remove insult": "toxicity", "remove insulting": "toxicity",
                  "correct": "misinformation", "remove false": "misinformation", "remove stereotype": "bias",
                  "remove jailbreak/injection": "adversarial"}


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


def edit_dimension(reason: str) -> str | None:
    """The safety dimension an edit addresses (``"*"``: an engine flag, any dimension)."""
    if reason.startswith("engine flag"):
        return "*"
    return next((d for prefix, d in EDIT_DIMENSION.items() if reason.startswith(prefix)), None)


def _chosen(edits: list[tuple[int, int, str, str]]) -> list[tuple[int, int, str, str]]:
    """The non-overlapping edits that are applied, in text order; wider edits win overlaps."""
    chosen: list[tuple[int, int, str, str]] = []
    for e in sorted(edits, key=lambda e: (-(e[1] - e[0]), e[0])):
        if all(e[1] <= c[0] or e[0] >= c[1] for c in chosen):
            chosen.append(e)
    return sorted(chosen)


def apply_edits(text: str, edits: list[tuple[int, int, str, str]]) -> str:
    """Apply non-overlapping (start, end, replacement, reason) edits; wider edits win overlaps."""
    out, pos = [], 0
    for s, e, rep, _ in _chosen(edits):
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
                          scales=[Scale.DOCUMENT], horizons=[Horizon.MEDIUM, Horizon.LONG], uses=["safety"])

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
        """(safety score, quality, analyses) of a text, running the built-in detectors
        explicitly (for scripts and ``refine_text``; the hooks use :meth:`info_from_flags`)."""
        from ufarsap_plugins.safety import load_safety_plugin

        analyses = safety_analyses([text])
        profile = {d: 1.0 - analyses[d][0].harm for d in DIMENSIONS}
        corrections = load_safety_plugin("safety.misinformation").corrections(text)
        return self.safety(profile), quality(text), {"profile": profile, "analyses": analyses,
                                                     "corrections": corrections}

    def safety(self, profile: dict[str, float]) -> float:
        """Eq. 18 over the dimensions in ``profile`` (1.0 when it is empty)."""
        return eq19.safety_score(profile, eq19.adaptive_weights({"domain": self.params["domain"]}))

    def info_from_flags(self, text: str, flags: dict[str, list[tuple[int, int, float, str]]],
                        profile: dict[str, float],
                        units: dict[str, list[tuple[int, int, float]]] | None = None) -> dict[str, Any]:
        """The editing input of :meth:`propose_edits` built from spans the host handed over
        (dimension -> ``(start, end, severity, label)``) instead of from running detectors: each
        dimension's findings are its spans, its units the sentences with the worst span or
        engine-sentence harm (``units``: dimension -> ``(start, end, harm)``) overlapping them;
        a contradicted fact (label ``contradicts:ID``) is corrected from the knowledge base."""
        from ufarsap_plugins.safety.misinformation import knowledge_base

        sentences = split_sentences(text)
        analyses = {}
        for dim in sorted(set(flags) | set(units or {})):
            spans = flags.get(dim, [])
            harms = [(fs, fe, h) for fs, fe, h, _ in spans] + list((units or {}).get(dim, []))
            a = Analysis(findings=[Finding(s, e, h, lab) for s, e, h, lab in spans])
            a.units = [(s, e, max([h for hs, he, h in harms if hs < e and he > s], default=0.0))
                       for s, e in sentences]
            analyses[dim] = [a]
        facts = {f["id"]: f for f in knowledge_base().data["facts"]}
        corrections = []
        for s, e, h, lab in flags.get("misinformation", []):
            if not lab.startswith("contradicts:") or h < float(self.params["threshold"]):
                continue
            fact = facts.get(lab.split(":", 1)[1])
            whole = next(((a, b) for a, b in sentences if a <= s < b), (s, e))
            value = (s, e) != whole and fact is not None
            corrections.append({"start": whole[0], "end": whole[1], "kb": lab.split(":", 1)[1],
                                "value_span": [s, e] if value else None,
                                "true_value": fact["value"] if value else None})
        return {"profile": profile, "analyses": analyses, "corrections": corrections}

    def residual_profile(self, profile: dict[str, float], info: dict[str, Any],
                         edits: list[tuple[int, int, str, str]]) -> dict[str, float]:
        """Each dimension's score once ``edits`` are applied, without re-running detectors: a
        flag no longer counts when an edit deletes the text around it or addresses it (an edit
        for the same dimension, or an engine flag, overlapping it). Dimensions without spans or
        units keep their score."""
        applied = _chosen(edits)

        def resolved(dim: str, s: int, e: int) -> bool:
            return any((es <= s and e <= ee and rep == "") or
                       (edit_dimension(why) in (dim, "*") and es < e and ee > s) for es, ee, rep, why in applied)

        out = dict(profile)
        for dim, (a,) in info["analyses"].items():
            if dim not in profile or not (a.units or a.findings):
                continue
            harms = [*a.units, *((f.start, f.end, f.harm) for f in a.findings)]
            left = [h for s, e, h in harms if h > 0 and not resolved(dim, s, e)]
            out[dim] = max(profile[dim], 1.0 - max(left, default=0.0))
        return out

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

        none = [Analysis()]
        for f in an.get("privacy", none)[0].findings:
            if f.harm >= th:
                edits.append((f.start, f.end, PLACEHOLDER.get(f.label, "[redacted]"), f"redact {f.label}"))
        # insults: drop the words; drop the sentence if little would be left of it
        by_sentence: dict[tuple[int, int], list] = {}
        for f in an.get("toxicity", none)[0].findings:
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
        for c in info.get("corrections", []):
            if c.get("value_span") and c.get("true_value") is not None:
                a, b = c["value_span"]
                edits.append((a, b, str(c["true_value"]), f"correct {c['kb']}"))
            else:
                edits.append((c["start"], c["end"], "", f"remove false claim {c['kb']}"))
        for dim, why in (("bias", "remove stereotype"), ("adversarial", "remove jailbreak/injection")):
            for s, e, h in an.get(dim, none)[0].units:
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

    def refine_once(self, text: str, info: dict[str, Any], extra: list[Span] | None = None) -> tuple[str, dict[str, Any]]:
        """One gated pass of edits over flags the host found (``info_from_flags``), no detector:
        the text and a trace with the initial and the residual (estimated final) safety."""
        profile = info["profile"]
        safety, qual = self.safety(profile), quality(text)
        trace: dict[str, Any] = {"initial_safety": safety, "initial_quality": qual, "final_safety": safety,
                                 "iterations": []}
        g = self.gate(1.0 - safety, 1.0, qual) if not extra else 1.0  # engine flags are reason enough
        edits = self.propose_edits(text, info, extra) if g > 0.5 else []
        step = {"gate": round(g, 4), "safety": round(safety, 4), "quality": round(qual, 4)}
        if g <= 0.5 or not edits:
            step["stop"] = "gate" if g <= 0.5 else "nothing to edit"
            trace["iterations"].append(step)
            return text, trace
        new = tidy(apply_edits(text, edits))
        trace["final_safety"] = self.safety(self.residual_profile(profile, info, edits))
        trace["edited_share"] = sum(e - s for s, e, _, _ in _chosen(edits)) / max(1, len(text))
        step.update({"edits": sorted({e[3] for e in edits}), "new_safety": round(trace["final_safety"], 4)})
        trace["iterations"].append(step)
        trace["final_quality"] = quality(new)
        return new, trace

    def info_from_feedback(self, text: str, feedback: Feedback | None) -> tuple[dict[str, Any], list[Span]]:
        """Editing input from the engine's flagged spans: personal data (placeholder labels) and
        contradicted facts are edited as such, every other span is an engine flag (removed)."""
        flags: dict[str, list[tuple[int, int, float, str]]] = {}
        extra = []
        for sp in (feedback.spans if feedback else []):
            if not 0 <= sp.start < sp.end <= len(text):
                continue
            dim = "privacy" if sp.label in PLACEHOLDER else "misinformation" if sp.label.startswith("contradicts:") else None
            if dim:
                flags.setdefault(dim, []).append((sp.start, sp.end, sp.severity, sp.label))
            else:
                extra.append(sp)
        given = dict(feedback.paradigm_scores) if feedback else {}
        profile = {d: 1.0 - max(h for _, _, h, _ in fl) for d, fl in flags.items()}
        if "safety" in given:
            profile = {d: min(v, given["safety"]) for d, v in profile.items()} or {"toxicity": given["safety"]}
        return self.info_from_flags(text, flags, profile), extra

    # -- hooks -------------------------------------------------------------------------------
    @hookimpl
    def ufarsap_refine(self, sample: Sample, feedback: Feedback, state: AlignmentState) -> Refinement | None:
        """Edit the spans the engine flagged (``feedback.spans``); no detector runs here."""
        info, extra = self.info_from_feedback(sample.text, feedback)
        new, trace = self.refine_once(as_text(sample.text), info, extra)
        if new == sample.text:
            return None
        edits = sorted({e for step in trace["iterations"] for e in step.get("edits", [])})
        rationale = f"edited flagged spans: {'; '.join(edits)}."
        return Refinement(text=new, rationale=rationale, changed_spans=self.changed_spans(sample.text, new))

    @hookimpl
    def ufarsap_score_document(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores | None:
        """The safety a sample reaches after self-refinement of the spans the selected safety
        plugins flagged, times the share of its text the edits keep (what reflection can achieve
        without rewriting it); no opinion without safety plugins."""
        scores: list[float | None] = []
        gains: list[float | None] = []
        for s, profile, flags, units in zip(batch.samples, upstream_profiles(batch), upstream_flags(batch),
                                            upstream_units(batch)):
            if not profile:
                scores.append(None)
                gains.append(None)
                continue
            _, trace = self.refine_once(as_text(s.text), self.info_from_flags(as_text(s.text), flags, profile, units))
            # the original text is what trains: a document reflection had to rewrite half of scores
            # at most half its reached safety, never above a clean one
            scores.append(clamp01(trace["final_safety"] * (1.0 - trace.get("edited_share", 0.0))))
            gains.append(trace["final_safety"] - trace["initial_safety"])
        return ScaleScores(sample_scores=scores, details={"gain": gains})
