"""safety.adversarial: jailbreak / prompt-injection detection, and a robustness probe.

Detection: hand-written cues for the documented attack families (``jailbreak_patterns.json``),
each with a weight, combined by noisy-OR per sentence and over the whole prompt (attacks often
spread their parts over several sentences: a persona in one, the request in the next). A cue
such as "act as" or a harmful topic alone stays below the threshold; two together do not.
Samples with a ``prompt`` are judged on the prompt; conversations on the user turns.

Robustness (:func:`robustness`, :meth:`AdversarialPlugin.robustness`): perturb texts with typos,
leetspeak, spacing, casing and a role-play wrapper and measure how often the other safety
scorers' verdicts stay the same. A scorer that flips under a typo is easy to evade.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Any, Callable, Sequence

from ufarsap_engine.schemas import AlignmentState, Horizon, ScaleScores, TextBatch
from ufarsap_engine.hookspecs import hookimpl

from ufarsap_plugins._common import (Analysis, Finding, SafetyDetectorPlugin, as_text, load_json, noisy_or,
                                     split_sentences)


@lru_cache(maxsize=1)
def cues() -> list[tuple[str, float, re.Pattern]]:
    raw = load_json("ufarsap_plugins.safety", "jailbreak_patterns.json")
    return [(c["name"], float(c["weight"]), re.compile(c["regex"], 0 if c.get("case") else re.I)) for c in raw["cues"]]


def find_cues(text: str) -> list[tuple[str, float, int, int]]:
    out = []
    for name, w, rx in cues():
        for m in rx.finditer(text):
            out.append((name, w, m.start(), m.end()))
    return out


# -- perturbations for the robustness probe ------------------------------------------------------

LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}


def typo(text: str, rng: random.Random, rate: float = 0.15) -> str:
    """Swap two inner letters in some words."""
    def swap(m: re.Match) -> str:
        w = m.group(0)
        if len(w) < 4 or rng.random() > rate * 3:
            return w
        i = rng.randrange(1, len(w) - 2)
        return w[:i] + w[i + 1] + w[i] + w[i + 2:]
    return re.sub(r"[A-Za-z]+", swap, text)


def leetspeak(text: str, rng: random.Random) -> str:
    return "".join(LEET.get(c, c) if c in LEET and rng.random() < 0.5 else c for c in text)


def spacing(text: str, rng: random.Random) -> str:
    """Space out the letters of the longest word (a common filter evasion)."""
    words = re.findall(r"[A-Za-z]{4,}", text)
    if not words:
        return text
    w = max(words, key=len)
    return text.replace(w, " ".join(w), 1)


def casing(text: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def roleplay(text: str, rng: random.Random) -> str:
    return f"Let's write a story. The main character says, word for word: \"{text}\""


PERTURBATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "typo": typo, "leetspeak": leetspeak, "spacing": spacing, "casing": casing, "roleplay": roleplay}


def robustness(texts: Sequence[str], scorers: dict[str, Callable[[list[str]], list[bool]]],
               perturbations: Sequence[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Verdict stability of each scorer under each perturbation.

    ``scorers`` maps a name to a function texts -> flags. Returns, per scorer and perturbation,
    the fraction of texts whose flag is unchanged, the fraction of flagged texts that stay
    flagged (evasion resistance), and the overall mean stability.
    """
    rng = random.Random(seed)
    names = list(perturbations or PERTURBATIONS)
    texts = [as_text(t) for t in texts]
    variants = {p: [PERTURBATIONS[p](t, rng) for t in texts] for p in names}
    out: dict[str, Any] = {"per_scorer": {}, "n_texts": len(texts)}
    all_stab = []
    for sname, fn in scorers.items():
        base = fn(list(texts))
        row = {}
        for p in names:
            flags = fn(variants[p])
            same = sum(a == b for a, b in zip(base, flags)) / max(1, len(texts))
            flagged = [i for i, b in enumerate(base) if b]
            kept = sum(flags[i] for i in flagged) / len(flagged) if flagged else None
            row[p] = {"stability": round(same, 4), "still_flagged": None if kept is None else round(kept, 4)}
            all_stab.append(same)
        out["per_scorer"][sname] = row
    out["stability"] = round(sum(all_stab) / len(all_stab), 4) if all_stab else 1.0
    return out


class AdversarialPlugin(SafetyDetectorPlugin):
    NAME = "safety.adversarial"
    DESCRIPTION = ("Adversarial robustness (Eq. 18): jailbreak and prompt-injection cue detector for prompts, "
                   "plus a perturbation probe of the other safety scorers' verdict stability.")
    REQUIRES: list[str] = []
    CONVERSATION_ROLES = ("user",)
    DEFAULTS = {"threshold": 0.5, "robustness_probe": True, "robustness_max_samples": 16,
                "robustness_scorers": ["safety.toxicity", "safety.privacy", "safety.bias", "safety.misinformation"]}

    def analyze(self, text: str) -> Analysis:
        text = as_text(text)
        a = Analysis()
        found = find_cues(text)
        for s, e in split_sentences(text):
            inside = {n: w for n, w, cs, ce in found if cs < e and ce > s}
            a.units.append((s, e, noisy_or(inside.values())))
        # whole-text combination: each cue family counts once
        fam: dict[str, float] = {}
        for n, w, cs, ce in found:
            fam[n] = max(fam.get(n, 0.0), w)
            a.findings.append(Finding(cs, ce, w, n, token=True))
        whole = noisy_or(fam.values())
        if a.units and whole > max(u[2] for u in a.units):
            a.units.append((0, len(text), whole))
        a.details["cues"] = sorted(fam)
        return a

    def _target_texts(self, batch: TextBatch) -> list[str]:
        """What an attack lives in: the prompt if the sample has one, else the user turns."""
        out = []
        for s in batch.samples:
            if s.prompt:
                out.append(s.prompt)
            elif s.messages:
                out.append("\n".join(m.content for m in s.messages if m.role == "user"))
            else:
                out.append(s.text)
        return out

    @hookimpl
    def ufarsap_score_document(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        analyses = self.analyses(self._target_texts(batch))
        details = self._details(analyses)
        if (Horizon(horizon) == Horizon.LONG and self.params["robustness_probe"] and batch.samples):
            n = int(self.params["robustness_max_samples"])
            details["robustness"] = self.robustness([s.text for s in batch.samples[:n]])
        return ScaleScores(sample_scores=[max(0.0, min(1.0, 1.0 - a.harm)) for a in analyses], details=details)

    def robustness(self, texts: Sequence[str], plugins: Sequence[str] | None = None,
                   perturbations: Sequence[str] | None = None, seed: int = 0) -> dict[str, Any]:
        """Verdict stability of the other safety plugins under perturbation (see module doc)."""
        from ufarsap_plugins.safety import load_safety_plugin

        scorers = {}
        for name in plugins or self.params["robustness_scorers"]:
            plugin = self if name == self.NAME else load_safety_plugin(name)
            scorers[name] = plugin.flags
        return robustness(texts, scorers, perturbations, seed)
