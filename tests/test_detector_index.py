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
