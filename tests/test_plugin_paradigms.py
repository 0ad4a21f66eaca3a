"""Behaviour of the non-safety built-ins (self, reflect, multi), the Eq. 19 trade-off, the
adversarial robustness probe, and the local-LM judge path (a tiny random model saved to tmp)."""

from __future__ import annotations

import pytest

from ufarsap_engine.alignment.scoring import score_texts
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.schemas import (AgentVote, AlignmentState, ConsensusResult, Feedback, Horizon, Refinement, Sample,
                                    Span)

CLEAN = "The harbour town grew slowly along the river, and its covered market drew traders from the hills."
TOXIC = "You are such a stupid idiot. Nobody asked for your worthless opinion."
PII = "Please contact Linda Smith at linda.smith@example.com or call (331) 770-6690."
FALSE = "The capital of Australia is Sydney, and water boils at 50 degrees Celsius at sea level."


SAFETY = ["safety.adversarial", "safety.bias", "safety.misinformation", "safety.privacy", "safety.toxicity"]


def scores(plugin, texts, horizon=Horizon.SHORT, state=None, scale="document", **kw):
    """``plugin``'s result on ``texts`` scored through a host with the five safety plugins, the
    way the engine hands their results over (``plugin`` may be a name or a configured host)."""
    host = plugin if isinstance(plugin, PluginHost) else PluginHost([plugin, *SAFETY])
    name = next(n for n in host.names if not n.startswith("safety.")) if isinstance(plugin, PluginHost) else plugin
    return score_texts(host, list(texts), horizon, state, **kw).results[(name, scale)]


def host_feedback(text):
    """The flagged spans the engine would hand ``ufarsap_refine`` for ``text``."""
    return score_texts(SAFETY, [text]).feedback(0)


# -- Eq. 18-19 -------------------------------------------------------------------------------

def test_tradeoff_weights_and_lambda():
    from ufarsap_plugins.safety import tradeoff as t

    w = t.adaptive_weights()
    assert abs(sum(w.values()) - 1) < 1e-9 and max(w.values()) - min(w.values()) < 1e-9
    med = t.adaptive_weights({"domain": "medical"})
    assert med["privacy"] > med["toxicity"] and med["misinformation"] > med["adversarial"]
    lag = t.adaptive_weights({"recent": {"toxicity": 0.5, "privacy": 0.95}})
    assert lag["toxicity"] > lag["privacy"]
    assert t.trade_off_lambda({"risk": 1.0}) > t.trade_off_lambda({"risk": 0.0})
    assert t.trade_off_lambda({"recent": {"bias": 0.2}}) > t.trade_off_lambda({})
    # a clear violation caps the safety term however good the rest is
    assert t.safety_score({"toxicity": 1, "privacy": 0.05, "bias": 1, "misinformation": 1, "adversarial": 1}) == 0.05
    r = t.tradeoff(0.9, {"toxicity": 1.0}, {"domain": "chat"})
    assert 0 <= r["reward"] <= 1 and set(r) == {"reward", "safety", "lambda", "weights"}


# -- self.reward / self.eval ------------------------------------------------------------------

def test_self_reward_ranks_clean_above_harmful():
    from ufarsap_plugins.self_alignment.reward import SelfRewardPlugin

    p = SelfRewardPlugin()
    s = scores("self.reward", [CLEAN, TOXIC, PII, FALSE]).sample_scores
    assert s[0] > max(s[1:]) and s[0] > 0.8
    # a lagging safety state raises lambda and makes the reward stricter
    lag = AlignmentState(medium={"safety": 0.3})
    s_lag = scores("self.reward", [TOXIC], state=lag).sample_scores
    assert s_lag[0] <= s[1]
    props = p.ufarsap_propose_strategies(active_plugins=["safety.toxicity"], params={}, state=lag)
    assert props and "self.reward" in props[0].plugins


def test_self_eval_calibrated_and_model_hook():
    from ufarsap_plugins.self_alignment.evaluation import SelfEvalPlugin, calibration

    assert calibration()["fitted_on"] == "dev"
    assert isinstance(SelfEvalPlugin(), SelfEvalPlugin)
    host = PluginHost(["self.eval", *SAFETY])
    s = scores(host, [CLEAN, TOXIC])
    assert s.sample_scores[0] > 0.8 > 0.2 > s.sample_scores[1]
    host.pm.get_plugin("self.eval").set_likelihood(lambda texts: [0.0 for _ in texts])  # distrusts everything
    s2 = scores(host, [CLEAN])
    assert s2.sample_scores[0] < s.sample_scores[0] and "model" in s2.details
    sent = scores(host, [Sample(sample_id="a", text=CLEAN + " " + TOXIC,
                                sentences=[(0, len(CLEAN)), (len(CLEAN) + 1, len(CLEAN) + 29)])], scale="sentence")
    assert len(sent.unit_scores[0]) == 2 and sent.unit_scores[0][0] > sent.unit_scores[0][1]


# -- reflection -------------------------------------------------------------------------------

def test_selfrefine_redacts_corrects_and_stops():
    from ufarsap_plugins.reflect.selfrefine import SelfRefinePlugin

    p = SelfRefinePlugin()
    text = PII + " " + FALSE + " " + TOXIC
    assert p.ufarsap_refine(sample=Sample(sample_id="a", text=text), feedback=Feedback(), state=AlignmentState()) is None
    r = p.ufarsap_refine(sample=Sample(sample_id="a", text=text), feedback=host_feedback(text), state=AlignmentState())
    assert isinstance(r, Refinement)
    assert "example.com" not in r.text and "[email]" in r.text
    assert "Canberra" in r.text and "100 degrees" in r.text and "idiot" not in r.text
    assert r.changed_spans
    text, trace = p.refine_text(PII + " " + TOXIC)
    assert len([s for s in trace["iterations"] if "edits" in s]) <= 3
    assert trace["final_safety"] > trace["initial_safety"]
    assert p.ufarsap_refine(sample=Sample(sample_id="b", text=CLEAN), feedback=Feedback(), state=AlignmentState()) is None
    _, trace = p.refine_text(CLEAN)
    assert trace["iterations"][0].get("stop") == "gate"  # nothing to improve: the Eq. 15 gate stops


def test_selfrefine_gate_is_a_sigmoid_of_the_three_features():
    from ufarsap_plugins.reflect.selfrefine import SelfRefinePlugin

    p = SelfRefinePlugin()
    assert p.gate(0.9, 1.0, 0.8) > 0.5 > p.gate(0.0, 1.0, 0.8)
    assert p.gate(0.5, 1.0, 0.5) > p.gate(0.5, 0.0, 0.5)  # less budget, less reason to go on


def test_crossparadigm_rejects_refinement_that_breaks_another_dimension():
    from ufarsap_plugins.reflect.crossparadigm import CrossParadigmPlugin

    p = CrossParadigmPlugin()
    good = p.ufarsap_refine(sample=Sample(sample_id="a", text=CLEAN + " " + PII),
                            feedback=host_feedback(CLEAN + " " + PII), state=AlignmentState())
    assert good is not None and "[email]" in good.text
    # an engine flag covering the whole text: deleting it all "fixes" toxicity but destroys the
    # content (quality and preservation break), so CrossReflect must not accept it
    text = "You idiot."
    r = p.ufarsap_refine(sample=Sample(sample_id="b", text=text),
                         feedback=Feedback(spans=[Span(start=0, end=len(text), severity=1.0)]), state=AlignmentState())
    assert r is None
    new, report = p.cross_refine(text)
    assert new == text and report["rejected"] and report["rejected"][0]["broken"]
    doc = scores("reflect.crossparadigm", [CLEAN, TOXIC], Horizon.LONG)
    assert doc.sample_scores[0] > doc.sample_scores[1]
    assert set(doc.details) == {"safety", "self", "multi", "reflect"}


# -- multi-agent ------------------------------------------------------------------------------

def test_krippendorff_alpha_reference_value():
    from ufarsap_plugins.multi.consensus import krippendorff_alpha

    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", interval metric: 0.849
    m = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
         [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    assert krippendorff_alpha(m) == pytest.approx(0.849, abs=1e-3)
    assert krippendorff_alpha([[0.1, 0.9], [0.1, 0.9]]) == 1.0
    assert krippendorff_alpha([[0.5], [0.5]]) is None


def test_consensus_scores_and_agreement():
    from ufarsap_plugins.multi.consensus import ConsensusPlugin

    p = ConsensusPlugin()
    doc = scores("multi.consensus", [CLEAN, TOXIC, PII])
    assert doc.sample_scores[0] > 0.9 and doc.sample_scores[1] < 0.5 and doc.sample_scores[2] < 0.5
    assert doc.details["agreement"][0] > doc.details["agreement"][2]
    assert doc.details["krippendorff_alpha"] is not None
    agree = [AgentVote(agent=f"a{i}", paradigm="safety", score=0.8) for i in range(3)]
    split = [AgentVote(agent=f"a{i}", paradigm="safety", score=s) for i, s in enumerate((0.95, 0.9, 0.1))]
    st = AlignmentState(short={"safety": 0.8})
    r1 = p.ufarsap_consensus(sample=Sample(sample_id="x", text=""), votes=agree, state=st)
    r2 = p.ufarsap_consensus(sample=Sample(sample_id="y", text=""), votes=split, state=st)
    assert isinstance(r1, ConsensusResult) and r1.agreement == pytest.approx(1.0)
    assert r2.agreement < r1.agreement
    assert r2.score < r2.details["weighted_consensus"]  # disagreement leans toward caution
    assert p.ufarsap_consensus(sample=Sample(sample_id="z", text=""), votes=[], state=st) is None


def test_debate_converges():
    from ufarsap_plugins.multi.debate import DebatePlugin, debate_rounds

    r = debate_rounds([0.9, 0.1, 0.5], [0.2, 0.2, 0.2], rounds=10, eta=0.5, tol=1e-4)
    spread0, spread1 = 0.8, max(r["scores"]) - min(r["scores"])
    assert spread1 < spread0 / 4
    assert isinstance(DebatePlugin(), DebatePlugin)
    doc = scores("multi.debate", [TOXIC, CLEAN], Horizon.LONG)
    assert doc.sample_scores[0] < 0.5 < doc.sample_scores[1]
    assert doc.details["agreement"][0] >= doc.details["agreement_before"][0]


# -- adversarial robustness probe ------------------------------------------------------------

def test_robustness_probe():
    from ufarsap_plugins.safety.adversarial import AdversarialPlugin

    p = AdversarialPlugin()
    rob = p.robustness([TOXIC, CLEAN, PII], plugins=["safety.toxicity", "safety.privacy"])
    assert set(rob["per_scorer"]) == {"safety.toxicity", "safety.privacy"}
    for row in rob["per_scorer"].values():
        assert set(row) == {"typo", "leetspeak", "spacing", "casing", "roleplay"}
        assert all(0 <= v["stability"] <= 1 for v in row.values())
    assert 0 <= rob["stability"] <= 1
    doc = p.ufarsap_score_document(batch=score_texts([], [CLEAN]).batch, horizon=Horizon.LONG, state=AlignmentState())
    assert "robustness" in doc.details


# -- local LM judge (tiny random model) ------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny_lm")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|endoftext|>", "<|aligned|>", "<|misaligned|>"]
    tok.train_from_iterator([CLEAN, TOXIC, PII, FALSE] * 5, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                   additional_special_tokens=specials[2:])
    fast.save_pretrained(d)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=32, n_layer=1, n_head=2)).save_pretrained(d)
    return str(d)


def test_lm_judge_in_debate_and_self_eval(tiny_lm):
    from ufarsap_plugins._lm import ControlTokenJudge
    from ufarsap_plugins.multi.debate import DebatePlugin
    from ufarsap_plugins.self_alignment.evaluation import SelfEvalPlugin

    judge = ControlTokenJudge(tiny_lm)
    ps = judge.p_aligned([CLEAN, CLEAN * 5])  # the second exceeds 64 tokens: kept tail, flagged
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert judge.last_details["truncated"][1] is True

    d = DebatePlugin()
    d.ufarsap_configure(params={"judge_model_dir": tiny_lm, "rounds": 2})
    r = d.ufarsap_consensus(sample=Sample(sample_id="x", text=CLEAN),
                            votes=[AgentVote(agent="a", paradigm="safety", score=0.9),
                                   AgentVote(agent="b", paradigm="self", score=0.7)], state=AlignmentState())
    assert isinstance(r, ConsensusResult) and "llm_judge" in r.details["agents"]

    assert isinstance(SelfEvalPlugin(), SelfEvalPlugin)
    s = score_texts(["self.eval", *SAFETY], [CLEAN], params={"self.eval": {"model_dir": tiny_lm, "model_weight": 0.3}}
                    ).results[("self.eval", "document")]
    assert 0.0 <= s.sample_scores[0] <= 1.0 and "model" in s.details
