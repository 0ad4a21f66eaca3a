from ufarsap_engine.schemas import TextBatch, Sample
from ufarsap_shouting import ShoutingPlugin


def test_flags_shouting_but_not_acronyms():
    p = ShoutingPlugin()
    batch = TextBatch(samples=[Sample(sample_id="a", text="STOP doing that NOW"),
                               Sample(sample_id="b", text="NASA launched it")])
    res = p.ufarsap_score_token(batch)
    assert [len(s) for s in res.spans] == [2, 0]
    assert res.sample_scores[0] < res.sample_scores[1]
