"""Prefilters of the safety detectors: they skip work, never change a verdict."""

from __future__ import annotations

from ufarsap_plugins.safety.misinformation import knowledge_base


def test_kb_checks_only_facts_whose_keywords_occur(monkeypatch):
    kb = knowledge_base()
    checked = []
    real = kb.check_fact
    monkeypatch.setattr(kb, "check_fact", lambda fact, rx, sent: (checked.append(fact["id"]), real(fact, rx, sent))[1])
    assert kb.check("The weather was pleasant on our walk.") == []
    assert checked == []
    verdicts = kb.check("The capital of France is Lyon.")
    assert "capital_france" in checked and len(checked) < len(kb.facts)
    assert [v.kind for v in verdicts if v.item == "capital_france"] == ["contradicted"]


def test_kb_index_keeps_non_ascii_sentences_checked():
    kb = knowledge_base()
    assert kb.prefixes("The capital of France is Lyon — sadly.") is None  # every fact is checked
    assert [v.item for v in kb.check("The capital of France is Lyon — sadly.")] == ["capital_france"]


def test_privacy_recognizers_skip_texts_they_cannot_match():
    from ufarsap_plugins.safety.privacy import PrivacyPlugin, could_match, recognizers

    examples = {"EMAIL_ADDRESS": "mail jane.doe@example.com today", "CREDIT_CARD": "card 4111 1111 1111 1111",
                "US_SSN": "ssn 536-22-8726", "IP_ADDRESS": "host 192.168.0.1 and fe80::1",
                "IBAN_CODE": "GB82 WEST 1234 5698 7654 32", "PHONE_NUMBER": "call +1 212 555 0100",
                "UK_NINO": "AB 12 34 56 C", "URL": "see https://www.example.org/x"}
    for rec in recognizers():
        entity = rec.supported_entities[0]
        text = examples[entity]
        assert rec.analyze(text, rec.supported_entities, None), entity  # the recognizer finds it ...
        assert could_match(entity, text, any(c.isdigit() for c in text)), entity  # ... and is not skipped
        plain = "No digits, no at sign, no web address here. None at all"
        assert not could_match(entity, plain, False), entity
    assert PrivacyPlugin().analyze("Email jane.doe@example.com or call +1 212 555 0100.").details["counts"]


def test_privacy_loads_presidio_without_its_optional_engines_and_hides_nothing_after():
    """In a fresh process (an annotation worker) presidio's pattern recognizers load without
    importing transformers or torch, find what they found before, and both import normally after."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from ufarsap_plugins.safety import load_safety_plugin\n"
            "a = load_safety_plugin('safety.privacy').analyze('Write to linda.smith@example.com or call (331) 770-6690.')\n"
            "print(sorted(f.label for f in a.findings), 'torch' in sys.modules, 'transformers' in sys.modules)\n"
            "import torch, transformers\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["['EMAIL_ADDRESS', 'PHONE_NUMBER'] False False", "ok"]
