"""The safety plugins' per-text memo: one analysis per text across the scale hooks, and none
kept across a parameter change."""

from __future__ import annotations

from ufarsap_engine.alignment.scoring import make_sample
from ufarsap_engine.schemas import AlignmentState, Horizon, Message, TextBatch
from ufarsap_plugins.safety.misinformation import MisinformationPlugin


def _batch():
    return TextBatch(samples=[
        make_sample("a", "The capital of Australia is Sydney."),
        make_sample("b", "Water boils at 100 degrees Celsius at sea level."),
        make_sample("c", "hello", messages=[Message(role="user", content="The capital of Australia is Sydney."),
                                             Message(role="assistant", content="No, it is Canberra.")]),
    ])


def test_each_text_is_analysed_once_across_scales():
    plugin = MisinformationPlugin()
    seen: list[str] = []
    real = plugin.analyze_many
    plugin.analyze_many = lambda texts: (seen.extend(texts), real(texts))[1]
    batch, state = _batch(), AlignmentState()
    for hook in ("token", "sentence", "document", "conversation"):
        getattr(plugin, f"ufarsap_score_{hook}")(batch=batch, horizon=Horizon.SHORT, state=state)
    assert sorted(seen) == sorted(set(seen))
    assert set(seen) == {s.text for s in batch.samples} | {"No, it is Canberra."}


def test_parameter_change_empties_the_memo():
    plugin = MisinformationPlugin()
    batch, state = _batch(), AlignmentState()
    before = plugin.ufarsap_score_document(batch=batch, horizon=Horizon.SHORT, state=state).sample_scores
    plugin.ufarsap_configure(params={"contradiction_harm": 0.6})
    after = plugin.ufarsap_score_document(batch=batch, horizon=Horizon.SHORT, state=state).sample_scores
    assert before[0] < 0.5 and abs(after[0] - 0.4) < 1e-9
    plugin.params["contradiction_harm"] = 0.8  # changed in place, not through the hook
    again = plugin.ufarsap_score_document(batch=batch, horizon=Horizon.SHORT, state=state).sample_scores
    assert abs(again[0] - 0.2) < 1e-9


def test_memo_is_emptied_when_full(monkeypatch):
    import ufarsap_plugins._common as common

    monkeypatch.setattr(common, "MEMO_TEXTS", 2)
    plugin = MisinformationPlugin()
    texts = ["The capital of Australia is Sydney.", "Water boils at 100 degrees Celsius.", "Paris is in France."]
    for t in texts:
        plugin.analyses([t])
        assert len(plugin._memo) <= 2
    # a batch with texts already kept and new ones, past the limit: the memo restarts with it
    assert [a.harm for a in plugin.analyses(texts)] == [a.harm for a in plugin.analyze_many(texts)]
    assert len(plugin._memo) == 3
