"""safety.privacy: personal data (PII) with character spans and per-type counts.

Structured identifiers come from presidio-analyzer's predefined *pattern* recognizers (email,
credit card with Luhn check, US SSN, IP v4/v6, IBAN with checksum, phone numbers via
``phonenumbers``, URL) called directly, i.e. with no NLP engine: presidio's default engine
downloads a spaCy model, which is impossible offline. Person names and street addresses, which
presidio finds only through NER, come from our own patterns (honorifics, a given-name list, cue
phrases; house number + street type). A name alone is weak evidence (famous people, historical
figures), so it only counts as personal data next to other PII or a personal-data cue.
"""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from ufarsap_plugins._common import Analysis, Finding, SafetyDetectorPlugin, as_text, load_lines, split_sentences

# presidio score -> our harm; validated identifiers (checksums) are near-certain personal data.
BASE_HARM = {"EMAIL_ADDRESS": 0.95, "CREDIT_CARD": 0.95, "IBAN_CODE": 0.95, "US_SSN": 0.85, "IP_ADDRESS": 0.8,
             "PHONE_NUMBER": 0.75, "ADDRESS": 0.75, "URL": 0.3, "PERSON": 0.35, "UK_NINO": 0.85,
             "MAC_ADDRESS": 0.5}
CONTEXT = {"US_SSN": ("ssn", "social security", "social-security"),
           "PHONE_NUMBER": ("phone", "call", "tel", "mobile", "cell", "reach me", "contact", "number", "ring"),
           "IP_ADDRESS": ("ip", "server", "login", "address", "host")}
PERSONAL_CUES = re.compile(
    r"\b(my name is|date of birth|\bdob\b|lives at|moved to|home address|account holder|social security|"
    r"phone number|mobile number|email address|e-mail address|patient record|employee record)\b", re.I)
# What a piece of text must contain for each recognizer to find anything in it (their patterns
# need it): the expensive ones (phone numbers, URLs) are skipped on the many texts without.
DIGIT_RE = re.compile(r"\d")
NEEDS_DIGIT = {"CREDIT_CARD", "US_SSN", "IBAN_CODE", "PHONE_NUMBER", "UK_NINO"}
WARM_UP = "Call +1 212 555 0100 or mail jane@example.com, see https://www.example.org from 192.168.0.1."
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


STRICT_SUFFIX = ("Street", "St", "Road", "Rd", "Avenue", "Ave", "Lane", "Ln", "Drive", "Dr", "Boulevard", "Blvd",
                 "Court", "Ct", "Close", "Crescent", "Terrace", "Place", "Pl", "Way", "Square", "Sq", "Mews",
                 "Gardens", "Grove", "Parkway", "Pkwy", "Highway", "Hwy", "Circle", "Cir", "Trail", "Row", "Walk",
                 "Wharf", "Rise", "Hill", "Park", "Green", "Vale", "View", "Alley", "Plaza")
LOOSE_SUFFIX = ("Bridge", "Brook", "Brooks", "Burg", "Bypass", "Camp", "Canyon", "Cape", "Causeway", "Center",
                "Centre", "Cliff", "Cliffs", "Club", "Common", "Commons", "Corner", "Corners", "Course", "Courts",
                "Cove", "Coves", "Creek", "Crest", "Crossing", "Crossroad", "Curve", "Dale", "Dam", "Divide",
                "Drives", "Estate", "Estates", "Expressway", "Extension", "Fall", "Falls", "Ferry", "Field",
                "Fields", "Flat", "Flats", "Ford", "Fords", "Forest", "Forge", "Forges", "Fork", "Forks", "Fort",
                "Freeway", "Garden", "Gateway", "Glen", "Glens", "Greens", "Groves", "Harbor", "Harbour", "Harbors",
                "Haven", "Heights", "Hills", "Hollow", "Inlet", "Island", "Islands", "Isle", "Junction",
                "Junctions", "Key", "Keys", "Knoll", "Knolls", "Lake", "Lakes", "Land", "Landing", "Light",
                "Lights", "Loaf", "Lock", "Locks", "Lodge", "Loop", "Mall", "Manor", "Manors", "Meadow",
                "Meadows", "Mill", "Mills", "Mission", "Motorway", "Mount", "Mountain", "Mountains", "Neck",
                "Orchard", "Oval", "Overpass", "Parks", "Pass", "Passage", "Path", "Pike", "Pine", "Pines",
                "Plain", "Plains", "Point", "Points", "Port", "Ports", "Prairie", "Radial", "Ramp", "Ranch",
                "Rapid", "Rapids", "Rest", "Ridge", "Ridges", "River", "Roads", "Route", "Rue", "Run", "Shoal",
                "Shoals", "Shore", "Shores", "Skyway", "Spring", "Springs", "Spur", "Spurs", "Squares",
                "Station", "Stravenue", "Stream", "Streets", "Summit", "Throughway", "Trace", "Track",
                "Trafficway", "Tunnel", "Turnpike", "Underpass", "Union", "Unions", "Valley", "Valleys", "Via",
                "Viaduct", "Views", "Village", "Villages", "Ville", "Vista", "Walks", "Wall", "Ways", "Well",
                "Wells", "Close", "Approach", "Chase", "Croft", "Drove", "End", "Gate", "Hall", "Heath", "Lea",
                "Side", "Yard")
_CAPWORD = r"[A-Z][a-zA-Z'’\-]+"
_UNIT = r"(?:(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Studio|Room|Floor|#)\s*\d+[A-Za-z]?)"
ADDRESS_RE = re.compile(
    rf"(?:{_UNIT}[,\s]+)?\b(\d{{1,5}}[A-Za-z]?)\s+((?:{_CAPWORD}\s+){{0,3}}?)"
    rf"(?P<suffix>{'|'.join(sorted(set(STRICT_SUFFIX + LOOSE_SUFFIX), key=len, reverse=True))})\b\.?"
    rf"(?:,?\s+{_UNIT})?")
ADDRESS_UNIT_RE = re.compile(rf"\b{_UNIT}[,\s]*\n?\s*(?:{_CAPWORD}\s+){{1,3}}(?:{'|'.join(sorted(set(STRICT_SUFFIX + LOOSE_SUFFIX), key=len, reverse=True))})\b")
POSTCODE_RE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b")
HONORIFIC_RE = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame)\.?\s+(?:{_CAPWORD}\s+){{0,2}}{_CAPWORD}")
CUE_NAME_RE = re.compile(rf"(?i:\b(?:my name is|name of|holder|patient|customer|employee record:|employee|"
                         rf"contact|this is|it's|i am|i'm)\s+)((?:{_CAPWORD}\s+){{0,2}}{_CAPWORD})")
NAME_PAIR_RE = re.compile(rf"\b({_CAPWORD})((?:\s+{_CAPWORD}){{1,2}})")
NOT_SURNAME = {"Street", "Road", "Avenue", "The", "And", "Or", "But", "Is", "Was", "University", "Ocean", "Sea",
               "River", "Lake", "Mount", "City", "County", "Park", "Day", "Monday", "Tuesday", "Wednesday",
               "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March", "April", "May",
               "June", "July", "August", "September", "October", "November", "December"}


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    return frozenset(load_lines("ufarsap_plugins.safety", "first_names.txt"))


@lru_cache(maxsize=1)
def _offline_tld():
    import tldextract

    # The bundled public-suffix snapshot; no network fetch (tldextract's default tries one).
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=1)
def _url_like():
    import regex  # presidio's regex engine, so case folding is the same as in its URL patterns

    # every URL pattern has [a-z0-9.-], then ".", then a top-level domain (all start with a-z)
    return regex.compile(r"[a-z0-9.\-][.][a-z]", regex.I | regex.M | regex.S)


def could_match(entity: str, chunk: str, has_digit: bool) -> bool:
    """Whether the recognizer of ``entity`` can find anything in ``chunk`` at all."""
    if entity in NEEDS_DIGIT:
        return has_digit
    if entity == "EMAIL_ADDRESS":
        return "@" in chunk
    if entity == "IP_ADDRESS":
        return has_digit or ":" in chunk
    if entity == "URL":
        return _url_like().search(chunk) is not None
    return True


#: What presidio's package imports (guarded, as optional) only for its NLP engines, which the
#: pattern recognizers never use: transformers (its engine) and torch (through spaCy's thinc).
OPTIONAL_FOR_PRESIDIO = ("transformers", "torch")


@contextmanager
def _without(names: tuple[str, ...]):
    """Hide the modules in ``names`` that are not loaded yet for the imports inside the block
    (``import x`` raises ImportError), then unhide them: importing them costs 3-4 s in every
    fresh annotation worker. A process that has loaded them already (the trainer) keeps them."""
    hidden = [n for n in names if n not in sys.modules]
    for n in hidden:
        sys.modules[n] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for n in hidden:
            if sys.modules.get(n, 0) is None:
                del sys.modules[n]


@lru_cache(maxsize=1)
def recognizers() -> list:
    """presidio's predefined pattern recognizers (imported lazily: presidio is slow to import)."""
    with _without(OPTIONAL_FOR_PRESIDIO):
        import presidio_analyzer  # noqa: F401  (the package, once, without the optional engines)
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UkNinoRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str):
            return _offline_tld()(pattern_text).fqdn != ""

    class OfflineUrlRecognizer(UrlRecognizer):
        def validate_result(self, pattern_text: str):
            return None  # keep presidio's score; URLs are weak evidence anyway

    recs = [OfflineEmailRecognizer(), CreditCardRecognizer(), UsSsnRecognizer(), IpRecognizer(), IbanRecognizer(),
            PhoneRecognizer(supported_regions=("US", "GB", "IE", "AU", "CA", "NZ", "DE", "FR", "IN")),
            UkNinoRecognizer(), OfflineUrlRecognizer()]
    # One call each now compiles their patterns and loads phone metadata (about a second), so
    # that cost is paid when the plugin loads, not by whichever document first needs them.
    for rec in recs:
        rec.analyze(WARM_UP, rec.supported_entities, None)
    return recs


class PrivacyPlugin(SafetyDetectorPlugin):
    NAME = "safety.privacy"
    DESCRIPTION = ("Privacy (Eq. 18): presidio pattern recognizers (email, card, SSN, IP, IBAN, phone, URL) "
                   "without an NLP engine, plus name and street-address patterns; spans and counts per type.")
    REQUIRES = ["presidio-analyzer>=2.2"]
    DEFAULTS = {"threshold": 0.5, "names": True, "addresses": True, "chunk_chars": 5000,
                "entities": ["EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "IP_ADDRESS", "IBAN_CODE", "PHONE_NUMBER",
                             "URL", "UK_NINO", "PERSON", "ADDRESS"]}

    # -- detectors ---------------------------------------------------------------------------
    def _presidio(self, text: str) -> list[Finding]:
        """Run the recognizers over overlapping chunks, so long documents are covered in full."""
        size = max(500, int(self.params["chunk_chars"]))
        overlap = 200
        out, seen = [], set()
        start = 0
        while True:
            chunk = text[start:start + size]
            has_digit = DIGIT_RE.search(chunk) is not None
            for rec in recognizers():
                if not could_match(rec.supported_entities[0], chunk, has_digit):
                    continue
                try:
                    results = rec.analyze(chunk, rec.supported_entities, None)
                except Exception:  # a recognizer must never take the scorer down on odd input
                    continue
                for r in results or []:
                    key = (r.entity_type, r.start + start, r.end + start)
                    if key not in seen:
                        seen.add(key)
                        out.append(Finding(key[1], key[2], float(r.score), r.entity_type))
            if start + size >= len(text):
                break
            start += size - overlap
        return out

    def _cards(self, text: str) -> list[Finding]:
        """Luhn-valid 13-19 digit numbers: presidio's card regex misses newer ranges such as
        the 2-series Mastercard BINs (2221-2720)."""
        out = []
        for m in CARD_RE.finditer(text):
            digits = re.sub(r"\D", "", m.group(0))
            if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 2:
                out.append(Finding(m.start(), m.end(), 1.0, "CREDIT_CARD"))
        return out

    def _addresses(self, text: str) -> list[Finding]:
        out = []
        if not DIGIT_RE.search(text):  # both patterns start from a house or unit number
            return out
        for m in ADDRESS_RE.finditer(text):
            num, suffix = m.group(1), m.group("suffix")
            yearish = len(num) == 4 and num[:2] in ("18", "19", "20")
            if suffix in STRICT_SUFFIX or not yearish:
                out.append(Finding(m.start(), m.end(), 1.0, "ADDRESS"))
        for m in ADDRESS_UNIT_RE.finditer(text):
            out.append(Finding(m.start(), m.end(), 1.0, "ADDRESS"))
        return out

    def _names(self, text: str) -> list[Finding]:
        out = []
        for m in HONORIFIC_RE.finditer(text):
            out.append(Finding(m.start(), m.end(), 1.0, "PERSON"))
        for m in CUE_NAME_RE.finditer(text):
            out.append(Finding(m.start(1), m.end(1), 1.0, "PERSON_CUED"))
        names = first_names()
        for m in NAME_PAIR_RE.finditer(text):
            first, rest = m.group(1), m.group(2).split()
            if first in names and rest[0] not in NOT_SURNAME and rest[0].strip("'’") not in names | {"I"}:
                end = m.start(2) + len(m.group(2))
                if len(rest) > 1 and rest[-1] in NOT_SURNAME:
                    end = m.start(2) + m.group(2).rfind(" " + rest[-1])
                out.append(Finding(m.start(), end, 1.0, "PERSON"))
            elif first in names and rest[0] in names and len(rest) == 2:  # First Middle Last
                out.append(Finding(m.start(), m.end(), 1.0, "PERSON"))
        return out

    def analyze(self, text: str) -> Analysis:
        text = as_text(text)
        wanted = set(self.params["entities"])
        raw = self._presidio(text) + self._cards(text)
        if self.params["addresses"]:
            raw += self._addresses(text)
        if self.params["names"]:
            raw += self._names(text)
        cued = {(f.start, f.end) for f in raw if f.label == "PERSON_CUED"}
        for f in raw:
            if f.label == "PERSON_CUED":
                f.label = "PERSON"
        raw = [f for f in raw if f.label in wanted]
        # Drop URLs inside emails, and shorter findings inside longer ones of another type
        # (a phone number inside a card number, a "name" inside an address).
        raw.sort(key=lambda f: (f.start, -(f.end - f.start)))
        kept: list[Finding] = []
        for f in raw:
            inside = [k for k in kept if k.start <= f.start and f.end <= k.end]
            if inside and not (f.label == "CREDIT_CARD" and all(k.label == "PHONE_NUMBER" for k in inside)):
                continue
            if f.label == "CREDIT_CARD":
                kept = [k for k in kept if not (f.start <= k.start and k.end <= f.end and k.label == "PHONE_NUMBER")]
            kept.append(f)
        low = text.lower()
        strong = False
        for f in kept:
            h = BASE_HARM.get(f.label, 0.5)
            window = low[max(0, f.start - 40):f.start]
            if any(c in window for c in CONTEXT.get(f.label, ())):
                h = min(0.97, h + 0.1)
            f.harm = h
            strong = strong or (f.label not in ("PERSON", "URL") and h >= self.threshold)
        personal = strong or bool(PERSONAL_CUES.search(text))
        for f in kept:
            if f.label == "PERSON" and (personal or (f.start, f.end) in cued):
                f.harm = 0.6  # a name next to other personal data identifies someone
        a = Analysis(findings=kept)
        # Sentence units carry no extra verdict: harm comes from the entities they contain.
        a.units = [(s, e, 0.0) for s, e in split_sentences(text)]
        counts: dict[str, int] = {}
        for f in kept:
            if f.harm >= self.threshold:
                counts[f.label] = counts.get(f.label, 0) + 1
        a.details["counts"] = counts
        return a

    def _details(self, analyses: list[Analysis]) -> dict[str, Any]:
        d = super()._details(analyses)
        total: dict[str, int] = {}
        for a in analyses:
            for k, v in a.details.get("counts", {}).items():
                total[k] = total.get(k, 0) + v
        d["counts"] = total
        d["per_sample_counts"] = [a.details.get("counts", {}) for a in analyses]
        return d
