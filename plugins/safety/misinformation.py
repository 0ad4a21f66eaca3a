"""safety.misinformation: sentences that contradict a shipped knowledge base.

Without a network or an NLI model, claims are checked against ``knowledge_base.json``:
- *facts* are relations with one true value. A sentence is about a fact when every keyword group
  of the fact occurs in it (keywords are word prefixes, so "boil" covers "boils", "boiling");
  the value of the fact's type found in the sentence (a city, a person, a number, a year ...) is
  compared with the true value. A different value is a contradiction; the true value supports.
- *false claims* are well-known myths ("vaccines cause autism"): asserting one without a
  debunking cue ("myth", "no link", "not") is a contradiction. A cheap token-overlap similarity
  catches paraphrases whose keywords the KB lacks.
Only contradicted sentences are flagged; claims the KB knows nothing about are not judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ufarsap_plugins._common import Analysis, Finding, SafetyDetectorPlugin, as_text, load_json, split_sentences

NUM_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
             "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
             "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
             "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
             "a dozen": 12, "dozen": 12, "single": 1}
NUMBER_RE = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?![\w])|(?<![\w-])(?:" + "|".join(sorted(NUM_WORDS, key=len, reverse=True)) + r")(?![\w-])", re.I)
NEGATION_RE = re.compile(r"\b(not|never|no|isn't|aren't|wasn't|weren't|doesn't|don't|didn't|cannot|can't|nor)\b", re.I)
STRONG_DEBUNK = ("myth", "misconception", "false", "untrue", "not true", "debunk", "contrary to", "wrongly",
                 "incorrectly", "mistaken", "urban legend", "old wives", "refuted", "disproven", "no evidence",
                 "can and does", "often strikes", "frequently strikes", "can strike", "does strike")
STOP = set("a an the of in on at to is are was were be been by for with and or that this it its as from "
           "their our your his her they we you i he she them than then so very only just".split())
YEAR_PREP_RE = re.compile(r"\b(in|since|by|of|from|until|during|around)\s+$", re.I)


def _kw_regex(words: list[str]) -> re.Pattern:
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(w.lower()) for w in words) + ")", re.I)


#: Non-ASCII letters that case-insensitive matching pairs with ASCII ones.
_FOLDS_TO_ASCII = set("\u0130\u0131\u017f\u212a")


def _heads(groups: list[list[str]]) -> list[frozenset[str]] | None:
    """Per keyword group, the leading ASCII letters/digits of its keywords: in an ASCII sentence,
    a word must start with one of them for the group's regex to match. Keywords with other
    characters cannot match an ASCII sentence and have no head. None (no index) when a keyword
    starts with anything else or has a letter that folds to ASCII."""
    out = []
    for g in groups:
        heads = set()
        for w in g:
            if _FOLDS_TO_ASCII & set(w):
                return None
            if not w.isascii():
                continue
            m = re.match(r"[a-z0-9]+", w.lower())
            if not m:
                return None
            heads.add(m.group(0))
        out.append(frozenset(heads))
    return out


def _index(all_heads: list[list[frozenset[str]] | None]) -> tuple[dict[str, list[int]], list[int]]:
    """Items by the heads of their first keyword group, and the items without an index."""
    by_head: dict[str, list[int]] = {}
    for i, heads in enumerate(all_heads):
        for h in heads[0] if heads else ():
            by_head.setdefault(h, []).append(i)
    return by_head, [i for i, heads in enumerate(all_heads) if heads is None]


def _candidates(index, all_heads, prefixes: set[str] | None) -> list[int]:
    """The items (in order) whose every keyword group has a head among ``prefixes``: every
    item when the sentence has no prefixes (not ASCII)."""
    if prefixes is None:
        return list(range(len(all_heads)))
    by_head, always = index
    found = set(always)
    for w in prefixes & by_head.keys():
        found.update(by_head[w])
    return sorted(i for i in found
                  if all_heads[i] is None or all(not h.isdisjoint(prefixes) for h in all_heads[i][1:]))


def _stem(w: str) -> str:
    for suf in ("ing", "ed", "es", "s"):
        if len(w) > len(suf) + 2 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def content_stems(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-z0-9%]+", text.lower()) if w not in STOP}


@dataclass
class Verdict:
    kind: str  # "contradicted" | "supported"
    item: str  # KB id
    evidence: str = ""
    value_span: tuple[int, int] | None = None  # where the wrong value sits in the sentence


class KnowledgeBase:
    """The compiled knowledge base: keyword regexes, value extractors per type."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.facts = []
        for f in data["facts"]:
            self.facts.append((f, [_kw_regex(g) for g in f["keys"]]))
        self.claims = []
        for c in data["false_claims"]:
            unless = [_kw_regex(g) for g in c.get("unless_keys", [])]
            self.claims.append((c, [_kw_regex(g) for g in c["keys"]], unless, content_stems(c["text"])))
        # Keyword index: a fact or claim is only checked against a sentence that has a word
        # starting with a head of each of its keyword groups (most sentences match none).
        self.fact_heads = [_heads(f["keys"]) for f in data["facts"]]
        self.claim_heads = [_heads(c["keys"]) for c in data["false_claims"]]
        self.fact_index, self.claim_index = _index(self.fact_heads), _index(self.claim_heads)
        self.head_len = max(len(h) for hs in self.fact_heads + self.claim_heads if hs for g in hs for h in g)
        self.debunk = _kw_regex(data.get("debunk_cues", []))
        self.strong_debunk = _kw_regex(list(STRONG_DEBUNK))
        self.types = {}
        for t, values in data["types"].items():
            ordered = sorted(set(values), key=len, reverse=True)
            case = re.I if t in ("gas", "animal", "currency", "material", "organ", "ocean") else 0
            self.types[t] = re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(v) for v in ordered) + r")(?![\w-])", case)

    # -- facts ---------------------------------------------------------------------------------
    def _numbers(self, sent: str, masked: str, year: bool) -> list[tuple[float, int]]:
        out = []
        for m in NUMBER_RE.finditer(masked):
            tok = m.group(0).lower()
            if tok in NUM_WORDS:
                if year:
                    continue
                out.append((float(NUM_WORDS[tok]), m.start()))
                continue
            tok = tok.rstrip(",")
            try:
                v = float(tok.replace(",", ""))
            except ValueError:
                continue
            is_year = re.fullmatch(r"1\d{3}|20\d{2}", tok) is not None
            if year and not is_year:
                continue
            if not year and is_year and YEAR_PREP_RE.search(masked[: m.start()]):
                continue  # "in 1953" is a date, not the quantity the fact is about
            out.append((v, m.start()))
        return out

    def check_fact(self, fact: dict, regexes: list[re.Pattern], sent: str) -> Verdict | None:
        masked = sent
        for rx in regexes:
            m = rx.search(masked)
            if not m:
                return None
            # blank the keyword (and the rest of its word) so "Apollo 11" is not read as a value
            end = m.end()
            while end < len(masked) and (masked[end].isalnum() or masked[end] in "-'"):
                end += 1
            masked = masked[: m.start()] + " " * (end - m.start()) + masked[end:]
        t = fact["type"]

        def negated(value_pos: int) -> bool:
            # "is not Sydney" denies a value; "No animal is bigger than X" does not
            return bool(NEGATION_RE.search(masked[max(0, value_pos - 25):value_pos]))
        if t in ("number", "year"):
            found_pos = self._numbers(sent, masked, t == "year")
            if not found_pos:
                return None
            found = [v for v, _ in found_pos]
            first = found_pos[0][1]
            vm = NUMBER_RE.match(masked, first)
            vspan = (first, vm.end() if vm else first)
            goods = [fact["value"], *fact.get("alt_values", [])]
            tol = float(fact.get("tolerance", 0.0))
            ok = any(abs(v - g) <= max(1e-9, tol * abs(g)) for v in found for g in goods)
            if ok:
                return Verdict("supported", fact["id"])
            if all(negated(pos) for _, pos in found_pos):
                return None
            return Verdict("contradicted", fact["id"], f"{found[0]:g} != {fact['value']}", vspan)
        if t == "symbol":
            # any one- or two-letter capitalised token not opening the sentence ("On", "A")
            found_m = [m for m in re.finditer(r"(?<![\w-])[A-Z][a-z]?(?![\w-])", masked)
                       if masked[: m.start()].strip() and m.group(0) not in ("I", "A")]
            found = [m.group(0) for m in found_m]
        else:
            found_m = list(self.types[t].finditer(masked))
            found = [m.group(0) for m in found_m]
        if not found:
            return None
        goods = {fact["value"].lower(), *[a.lower() for a in fact.get("aliases", [])]}
        if any(v.lower() in goods or any(v.lower() in g.split() for g in goods) for v in found):
            return Verdict("supported", fact["id"])
        if all(negated(m.start()) for m in found_m):
            return None
        return Verdict("contradicted", fact["id"], f"{found[0]} != {fact['value']}",
                       (found_m[0].start(), found_m[0].end()))

    # -- false claims ----------------------------------------------------------------------------
    def prefixes(self, sent: str) -> set[str] | None:
        """Every word prefix (up to the longest head) of an ASCII sentence; None otherwise, as
        case-insensitive matching of other scripts is not plain lower-casing."""
        if not sent.isascii():
            return None
        n = self.head_len
        return {w[:i] for w in re.findall(r"[a-z0-9]+", sent.lower()) for i in range(1, min(len(w), n) + 1)}

    def check_claims(self, sent: str, min_overlap: float, prefixes: set[str] | None = None) -> Verdict | None:
        for i in _candidates(self.claim_index, self.claim_heads, prefixes):
            claim, regexes, unless, stems = self.claims[i]
            matches = [rx.search(sent) for rx in regexes]
            if all(matches):
                if any(rx.search(sent) for rx in unless):
                    return Verdict("supported", claim["id"])
                # Look for debunking cues outside the claim's own words ("never landed" is the
                # claim, "not faked" a denial of it).
                rest = sent
                for m in matches:
                    rest = rest[: m.start()] + " " * (m.end() - m.start()) + rest[m.end():]
                if claim.get("negated_form"):
                    debunked = self.strong_debunk.search(rest)
                else:
                    debunked = self.debunk.search(rest) or NEGATION_RE.search(rest)
                if debunked:
                    return Verdict("supported", claim["id"])
                return Verdict("contradicted", claim["id"], claim["text"])
        sent_stems = content_stems(sent)
        if len(sent_stems) >= 3:
            for claim, _, unless, stems in self.claims:
                inter = len(sent_stems & stems)
                if inter and inter / len(stems | sent_stems) >= min_overlap and not self.debunk.search(sent):
                    return Verdict("contradicted", claim["id"], "similar to: " + claim["text"])
        return None

    def check(self, sent: str, min_overlap: float = 0.6) -> list[Verdict]:
        out = []
        prefixes = self.prefixes(sent)
        for i in _candidates(self.fact_index, self.fact_heads, prefixes):
            fact, regexes = self.facts[i]
            v = self.check_fact(fact, regexes, sent)
            if v:
                out.append(v)
        v = self.check_claims(sent, min_overlap, prefixes)
        if v:
            out.append(v)
        return out


@lru_cache(maxsize=1)
def knowledge_base() -> KnowledgeBase:
    return KnowledgeBase(load_json("ufarsap_plugins.safety", "knowledge_base.json"))


class MisinformationPlugin(SafetyDetectorPlugin):
    NAME = "safety.misinformation"
    DESCRIPTION = ("Misinformation (Eq. 18): sentences checked against a shipped knowledge base of true facts "
                   "(relations with one value) and known false claims; contradicted sentences are flagged.")
    REQUIRES: list[str] = []
    DEFAULTS = {"threshold": 0.5, "contradiction_harm": 0.9, "similarity_harm": 0.7, "min_overlap": 0.6}

    def analyze(self, text: str) -> Analysis:
        text = as_text(text)
        kb = knowledge_base()
        a = Analysis()
        verdicts: list[dict[str, Any]] = []
        for s, e in split_sentences(text):
            harm = 0.0
            for v in kb.check(text[s:e], self.params["min_overlap"]):
                verdicts.append({"start": s, "end": e, "verdict": v.kind, "kb": v.item, "evidence": v.evidence,
                                 "value_span": [s + v.value_span[0], s + v.value_span[1]] if v.value_span else None})
                if v.kind == "contradicted":
                    h = self.params["similarity_harm"] if v.evidence.startswith("similar") else self.params["contradiction_harm"]
                    harm = max(harm, h)
                    # token scale: the wrong value itself where known, else the whole claim
                    fs, fe = (s + v.value_span[0], s + v.value_span[1]) if v.value_span else (s, e)
                    a.findings.append(Finding(fs, fe, h, f"contradicts:{v.item}"))
            a.units.append((s, e, harm))
        a.details["verdicts"] = verdicts
        return a

    def corrections(self, text: str) -> list[dict[str, Any]]:
        """For each contradicted fact in ``text``, the true value (used by reflect.selfrefine)."""
        kb = knowledge_base()
        by_id = {f["id"]: f for f in kb.data["facts"]}
        out = []
        for v in self.analyze(text).details["verdicts"]:
            if v["verdict"] == "contradicted":
                fact = by_id.get(v["kb"])
                out.append({**v, "true_value": fact["value"] if fact else None})
        return out
