"""safety.toxicity: insults and profanity, with character spans.

Two signals, because each misses what the other sees: alt-profanity-check's shipped linear
model (``predict_prob``) scores whole sentences but is blind to obfuscated words ("1d10t") and
rarer insults; an obfuscation-aware lexical matcher (leetspeak, spaced/dotted letters,
repeated characters, ``*`` masks) finds the offending words and gives the token-scale spans.
A sentence's harm is the larger of the two.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

from ufarsap_plugins._common import Analysis, Finding, SafetyDetectorPlugin, as_text, load_json, split_sentences

LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                      "!": "i", "|": "l", "+": "t", "€": "e"})
# Single characters joined by one separator each: "i d i o t", "m.o.r.o.n", "i-d-i-o-t".
SPACED_RE = re.compile(r"(?<![\w@$*])(?:[A-Za-z0-9@$!*][ .\-_·]){2,}[A-Za-z0-9@$!*](?![\w@$*])")
TOKEN_RE = re.compile(r"[A-Za-z0-9@$!*|+€]+(?:['’-][A-Za-z]+)*")


@lru_cache(maxsize=1)
def lexicon() -> dict:
    raw = load_json("ufarsap_plugins.safety", "toxic_lexicon.json")
    words = {w: "strong" for w in raw["strong"]}
    words.update({w: "contextual" for w in raw["contextual"] if w not in words})
    by_len: dict[int, list[str]] = {}
    for w in words:
        by_len.setdefault(len(w), []).append(w)
    return {"words": words, "by_len": by_len, "phrases": raw["phrases"], "you": set(raw["second_person"])}


@lru_cache(maxsize=1 << 16)  # pure functions of a word, and words repeat
def normalise_token(tok: str) -> tuple[str, bool]:
    """De-obfuscate one token; returns (normalised, looked_obfuscated)."""
    t = tok.lower()
    core = t.rstrip("!?.") if re.search(r"[a-z]", t.rstrip("!?.")) else t
    mapped = core.translate(LEET)
    obf = mapped != core or bool(re.search(r"(.)\1\1", core)) or "*" in core
    return mapped, obf


@lru_cache(maxsize=1 << 16)
def match_word(norm: str) -> str | None:
    """The lexicon entry a normalised token stands for, if any."""
    lex = lexicon()["words"]
    cands = [norm, re.sub(r"(.)\1{2,}", r"\1", norm), re.sub(r"(.)\1{2,}", r"\1\1", norm)]
    for c in cands:
        for v in (c, c[:-1] if c.endswith("s") else None, c[:-2] if c.endswith("es") else None):
            if v and v in lex:
                return v
    if "*" in norm and 1 <= norm.count("*") <= 2 and len(norm) >= 4 and norm.strip("*") == norm:
        rx = re.compile(re.escape(norm).replace(r"\*", "."))
        for w in lexicon()["by_len"].get(len(norm), []):
            if rx.fullmatch(w):
                return w
    return None


class ToxicityPlugin(SafetyDetectorPlugin):
    NAME = "safety.toxicity"
    DESCRIPTION = ("Toxicity (Eq. 18): alt-profanity-check's linear model per sentence plus an "
                   "obfuscation-aware insult lexicon for token spans.")
    REQUIRES = ["alt-profanity-check>=1.5"]
    DEFAULTS = {"threshold": 0.5, "use_model": True, "strong_harm": 0.95, "contextual_harm": 0.8,
                "phrase_harm": 0.75, "model_threshold": 0.8}

    def __init__(self) -> None:
        super().__init__()
        self._predict = None

    def _model(self):
        if self._predict is None:
            from profanity_check import predict_prob  # heavy (scikit-learn): import on first use

            self._predict = predict_prob
        return self._predict

    # -- lexical matcher --------------------------------------------------------------------
    def lexical(self, text: str, start: int = 0, end: int | None = None) -> list[Finding]:
        """Insult words in text[start:end] as findings with a provisional kind in ``label``."""
        end = len(text) if end is None else end
        seg = text[start:end]
        out: list[Finding] = []
        taken: list[tuple[int, int]] = []
        for m in SPACED_RE.finditer(seg):
            joined = re.sub(r"[ .\-_·]", "", m.group(0))
            norm, _ = normalise_token(joined)
            w = match_word(norm)
            if w:
                out.append(Finding(start + m.start(), start + m.end(), 1.0, lexicon()["words"][w]))
                taken.append((m.start(), m.end()))
        for m in TOKEN_RE.finditer(seg):
            if any(s <= m.start() < e for s, e in taken):
                continue
            tok = m.group(0)
            norm, obf = normalise_token(tok)
            w = match_word(norm)
            if not w and ("-" in tok or "'" in tok):
                w = match_word(norm.replace("-", ""))
            if w:
                e = m.end()
                while e > m.start() + 1 and tok[e - m.start() - 1] in "!?.":
                    e -= 1
                kind = lexicon()["words"][w]
                out.append(Finding(start + m.start(), start + e, 1.0, kind if not obf else "strong"))
        return out

    def model_harm(self, p_model: float) -> float:
        """The classifier alone is noisy below ~0.8 on short sentences (dev: recipes, sandpaper),
        so its probability is rescaled to cross the threshold only above ``model_threshold``."""
        mt, th = self.params["model_threshold"], self.threshold
        if p_model >= mt:
            return th + (p_model - mt) / max(1e-9, 1.0 - mt) * (1.0 - th)
        return p_model / max(mt, 1e-9) * th * 0.96

    def _sentence_harm(self, text: str, s: int, e: int, p_model: float) -> tuple[float, list[Finding]]:
        p = self.params
        words = self.lexical(text, s, e)
        low = text[s:e].lower()
        toks = [(m.start() + s, m.group(0)) for m in re.finditer(r"[a-z0-9@$!*']+", low)]
        you_at = [i for i, (_, t) in enumerate(toks) if t in lexicon()["you"]]
        aimed = bool(you_at)
        strong = any(f.label == "strong" for f in words)
        several = sum(f.label == "contextual" for f in words) >= 2

        def near_you(f: Finding) -> bool:
            # "you can't trust X; they are lazy" is impersonal: only a nearby "you" aims a word
            idx = [i for i, (pos, _) in enumerate(toks) if f.start <= pos < f.end]
            return any(abs(i - j) <= 4 for i in idx for j in you_at)

        findings = []
        for f in words:
            if f.label == "strong":
                f.harm = p["strong_harm"]
            elif strong or several or near_you(f) or p_model >= p["model_threshold"]:
                f.harm = p["contextual_harm"]
            else:
                f.harm = 0.3
            f.label = "insult"
            findings.append(f)
        harm = max([f.harm for f in findings] + [self.model_harm(p_model)])
        for ph in lexicon()["phrases"]:
            i = low.find(ph)
            if i >= 0 and re.match(r"\b", low[i:]) and (i == 0 or not low[i - 1].isalnum()):
                h = p["phrase_harm"] if (aimed or strong) else 0.4
                findings.append(Finding(s + i, s + i + len(ph), h, "insult", token=True))
                harm = max(harm, h)
        return harm, findings

    def analyze_many(self, texts: Sequence[str]) -> list[Analysis]:
        texts = [as_text(t) for t in texts]
        units = [split_sentences(t) for t in texts]
        flat = [t[s:e] for t, us in zip(texts, units) for s, e in us]
        probs = list(self._model()(flat)) if (flat and self.params["use_model"]) else [0.0] * len(flat)
        out, k = [], 0
        for t, us in zip(texts, units):
            a = Analysis()
            for s, e in us:
                harm, findings = self._sentence_harm(t, s, e, float(probs[k]))
                k += 1
                a.units.append((s, e, harm))
                a.findings.extend(findings)
            a.details["n_insults"] = sum(f.harm >= self.threshold for f in a.findings)
            out.append(a)
        return out

    def analyze(self, text: str) -> Analysis:
        return self.analyze_many([text])[0]
