"""Evolution building blocks without a registry: strategy validation, explore, the objective,
the probe evaluator and the beneficial test (Eq. 22, 23)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from test_evolution_support import ALL_SAFETY, fakes, probe_evaluator  # noqa: F401  (fixture)
from ufarsap_engine.config import ObjectiveConfig, RunConfig
from ufarsap_engine.errors import UserError
from ufarsap_engine.evolution import (
    Budget,
    Evaluation,
    EvaluationFailed,
    Explorer,
    IntegrationSettings,
    ObjectiveWeights,
    Strategy,
    beneficial_test,
    load_strategy,
    scalar_objective,
)
from ufarsap_engine.evolution.evaluate import detection_metrics
from ufarsap_engine.evolution.explore import MUTABLE_FAMILIES, merge_proposal
from ufarsap_engine.evolution.integrate import choose
from ufarsap_engine.evolution.strategy import content_hash
from ufarsap_engine.plugin_host import PluginHost, installed_plugins

INSTALLED = ["safety.toxicity", "safety.privacy", "safety.bias", "reflect.crossparadigm", "multi.debate"]


# --- strategy ----------------------------------------------------------------------------------

def test_strategy_defaults_registry_layout_and_hash():
    s = Strategy(plugins=["safety.toxicity", "safety.privacy", "safety.toxicity"],
                 plugin_params={"safety.toxicity": {"threshold": 0.4}},
                 objective=ObjectiveConfig(lambda_paradigm={"safety": 0.5}))
    plugins, params = s.to_registry()
    assert plugins == ["safety.privacy", "safety.toxicity"]
    assert params["plugins"] == {"safety.toxicity": {"threshold": 0.4}}  # the keys run.prepare reads
    assert params["objective"]["lambda_paradigm"] == {"self": 0.2, "reflect": 0.2, "multi": 0.2, "safety": 0.5}
    # one schema: a strategy's objective defaults are the run config's
    assert params["objective"] == ObjectiveConfig(lambda_paradigm={"safety": 0.5}).model_dump(mode="json")
    assert params["objective"]["eta_orch"] == 5e-5 and params["objective"]["beta"] == RunConfig().objective.beta
    again = Strategy.from_registry(plugins, params)
    assert again == s and again.content_hash() == s.content_hash() == content_hash(plugins, params)
    assert Strategy(plugins=["safety.privacy"]).content_hash() != s.content_hash()


def test_strategy_records_of_the_earlier_flat_layout_still_read():
    old = {"plugins": {"safety.toxicity": {"threshold": 0.4}}, "lambdas": {"safety": 0.5}, "alphas": {"self": 0.25},
           "beta": 0.1, "gamma": 0.05, "objectives": {"self": "dpo", "safety": "filtering"},
           "orchestrator": {"eta_orch": 1e-4, "eta_paradigm": 1e-4}}
    s = Strategy.from_registry(["safety.toxicity"], old)
    o = s.objective
    assert (o.lambda_paradigm["safety"], o.alpha["self"], o.beta, o.gamma, o.eta_orch) == (0.5, 0.25, 0.1, 0.05, 1e-4)
    assert o.families["self"] == "rwr" and o.families["safety"] == "filtering"  # dpo was never implemented


def test_strategy_json_unknown_fields_and_out_of_range_values(tmp_path):
    path = tmp_path / "strategy.json"
    path.write_text(json.dumps({
        "plugins": ["safety.toxicity"], "colour": "blue",
        "objective": {"lambda_paradigm": {"safety": -0.1}, "beta": 99, "families": {"safety": "ppo"},
                      "eta_orch": 0, "momentum": 0.9},
        "plugin_params": {"safety.toxicity": {"threshold": 1.5, "max_depth": 2.5, "n_agents": 0},
                          "safety.bias": {"threshold": 0.5}},
    }))
    with pytest.raises(UserError) as err:
        load_strategy(path)
    lines = str(err.value).splitlines()
    expected = ["colour: unknown field", "objective.lambda_paradigm.safety:", "objective.beta:",
                "objective.families.safety:", "objective.eta_orch:", "objective.momentum: unknown field", "plugin_params.safety.toxicity.threshold: must be within [0, 1]",
                "plugin_params.safety.toxicity.max_depth: must be a whole number",
                "plugin_params.safety.toxicity.n_agents: must be within [1, 16]",
                "plugin_params.safety.bias: names a plugin that is not in plugins"]
    for needle in expected:
        assert sum(needle in line for line in lines) == 1, (needle, lines)
    assert len(lines) == len(expected) and all(line.startswith(str(path)) for line in lines)


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object"),
    (json.dumps({"plugins": ["Toxicity"]}), "plugins: 'Toxicity' is not a plugin name"),
    (json.dumps({"plugins": ["safety.x"], "plugin_params": {"safety.x": {"rate": float("nan")}}}), "finite"),
])
def test_strategy_json_bad_input(tmp_path, text, message):
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_strategy(path)
    with pytest.raises(UserError, match="does not exist"):
        load_strategy(tmp_path / "missing.json")


# --- explore -----------------------------------------------------------------------------------

def test_mutations_stay_in_bounds_and_toggles_use_installed_plugins():
    ex = Explorer(INSTALLED, seed=7, tune_training_weights=True)
    s = Strategy(plugins=["safety.toxicity", "multi.debate"],
                 plugin_params={"safety.toxicity": {"threshold": 0.95, "window": 3.0},
                                "multi.debate": {"n_agents": 1, "debate_rounds": 16}})
    rng = random.Random(0)
    for _ in range(300):
        m = ex.mutate(s, rng)
        assert m is not None and set(m.plugins) == set(s.plugins)
        tox, deb = m.plugin_params["safety.toxicity"], m.plugin_params["multi.debate"]
        assert 0 <= tox["threshold"] <= 1 and tox["window"] > 0
        assert 1 <= deb["n_agents"] <= 16 and 1 <= deb["debate_rounds"] <= 16
        o = m.objective
        assert all(0 <= v <= 10 for v in o.lambda_paradigm.values()) and 0 < o.eta_orch <= 1
        assert set(o.families.values()) <= set(MUTABLE_FAMILIES)
        t = ex.toggle(s, rng)
        assert set(t.plugins) <= set(INSTALLED) | set(s.plugins) and t.plugins != s.plugins
        assert set(t.plugin_params) <= set(t.plugins)
    # without a model, only plugin choice and plugin parameters move
    plain = Explorer(INSTALLED, seed=7, tune_training_weights=False)
    for _ in range(50):
        m = plain.mutate(s, rng)
        assert m.model_dump(exclude={"plugin_params"}) == s.model_dump(exclude={"plugin_params"})


def test_crossover_keeps_shared_plugins_and_mixes_params():
    ex = Explorer(INSTALLED, seed=1)
    a = Strategy(plugins=["safety.toxicity", "safety.privacy"], plugin_params={"safety.toxicity": {"threshold": 0.2}})
    b = Strategy(plugins=["safety.toxicity", "safety.bias"], plugin_params={"safety.toxicity": {"threshold": 0.8}})
    rng = random.Random(3)
    children = [c for _ in range(40) if (c := ex.crossover(a, b, rng)) is not None]
    assert children and all("safety.toxicity" in c.plugins for c in children)
    assert {c.plugin_params["safety.toxicity"]["threshold"] for c in children} == {0.2, 0.8}
    assert all(c.content_hash() not in (a.content_hash(), b.content_hash()) for c in children)


class _Rec:
    """A stand-in for a registry record (explore only reads these fields)."""

    def __init__(self, id, strategy, objective=None, state="complete", lifecycle="rejected"):
        plugins, params = strategy.to_registry()
        self.id, self.plugins, self.params, self.state, self.lifecycle = id, plugins, params, state, lifecycle
        self.content_hash = content_hash(plugins, params)
        self.scores = {} if objective is None else {"objective": objective}


def test_explore_population_is_new_and_distinct():
    ex = Explorer(INSTALLED, seed=5, host_factory=lambda names: PluginHost([], installed={}))
    inc = Strategy(plugins=["safety.toxicity"], plugin_params={"safety.toxicity": {"threshold": 0.5}})
    history = [_Rec(1, inc, 0.4, lifecycle="active"),
               _Rec(2, Strategy(plugins=["safety.toxicity", "safety.privacy"]), 0.6),
               _Rec(3, Strategy(plugins=["safety.bias"]), 0.3)]
    out = ex.propose(inc, 1, history, 6, round_index=2)
    hashes = [c.strategy.content_hash() for c in out.candidates]
    assert len(out.candidates) == 6 and len(set(hashes)) == 6
    assert not set(hashes) & {r.content_hash for r in history}
    origins = {c.origin for c in out.candidates}
    assert {"explore", "exploit", "crossover"} <= origins
    assert next(c for c in out.candidates if c.origin == "exploit").parent_id == 2  # the best other strategy
    assert all(c.parent_id == 1 for c in out.candidates if c.origin != "exploit")
    assert all(set(c.strategy.plugins) <= set(INSTALLED) for c in out.candidates)
    # same seed and round, same proposals
    again = ex.propose(inc, 1, history, 6, round_index=2)
    assert [c.strategy.content_hash() for c in again.candidates] == hashes


def test_plugin_proposals_validated_missing_plugins_dropped_with_reason(fakes):
    names = [n for n in installed_plugins() if n.startswith(("safety.f", "self.fproposer", "reflect.fnoisy"))]
    ex = Explorer(names, seed=0)
    inc = Strategy(plugins=["safety.ftox", "self.fproposer"])
    out = ex.propose(inc, 1, [], 4, round_index=1)
    plugin_cands = [c for c in out.candidates if c.origin == "plugin"]
    assert len(plugin_cands) == 1
    assert plugin_cands[0].strategy.plugins == ["safety.fbias", "safety.ftox", "self.fproposer"]
    assert plugin_cands[0].strategy.plugin_params["safety.fbias"] == {"threshold": 0.6}
    assert "bias is uncovered" in plugin_cands[0].reason
    reasons = " | ".join(f"{src}: {why}" for src, why in out.dropped)
    assert "not installed: safety.doesnotexist" in reasons
    assert "plugin_params.safety.ftox.threshold: must be within [0, 1], got 7" in reasons
    assert "'NotAName' is not a plugin name" in reasons
    assert all(src.startswith("plugin self.fproposer") for src, _ in out.dropped)


def test_merge_proposal_keeps_base_settings():
    base = Strategy(plugins=["safety.toxicity"], plugin_params={"safety.toxicity": {"threshold": 0.3}},
                    objective=ObjectiveConfig(beta=0.7))
    merged = merge_proposal(base, ["safety.toxicity", "safety.bias"],
                            {"plugins": {"safety.bias": {"threshold": 0.1}}, "objective": {"gamma": 0.2}}, source="p")
    assert merged.plugin_params == {"safety.toxicity": {"threshold": 0.3}, "safety.bias": {"threshold": 0.1}}
    assert (merged.objective.beta, merged.objective.gamma) == (0.7, 0.2)
    flat = merge_proposal(base, ["safety.toxicity"], {"gamma": 0.3}, source="p")  # the earlier flat layout
    assert (flat.objective.beta, flat.objective.gamma) == (0.7, 0.3)
    with pytest.raises(UserError, match="p: objective.gamma: Input should be less than or equal to 10"):
        merge_proposal(base, ["safety.toxicity"], {"objective": {"gamma": 11}}, source="p")


# --- objective and evaluation ------------------------------------------------------------------

def test_objective_neither_flag_nothing_nor_everything_scores_well():
    labels = np.zeros((10, 5), dtype=bool)
    labels[:5, 0] = labels[5:8, 1] = True  # 8 bad (two categories), 2 clean
    w = ObjectiveWeights()
    good = np.array([True] * 8 + [False] * 2)
    none, everything = np.zeros(10, bool), np.ones(10, bool)
    objs = {k: scalar_objective({**detection_metrics(f, labels, w), "cost.s_per_step": 0.0}, w)
            for k, f in (("good", good), ("none", none), ("all", everything))}
    assert objs["good"] == pytest.approx(1.0)
    assert objs["none"] == pytest.approx(0.0)
    assert objs["none"] < objs["all"] < objs["good"]
    assert detection_metrics(everything, labels, w)["detect.j_macro"] == pytest.approx(0.0)
    # costs and an LM loss above the MLE baseline lower it
    m = {**detection_metrics(good, labels, w), "cost.s_per_step": 0.5, "lm_loss": 3.3, "lm_loss_mle": 3.0}
    assert scalar_objective(m, w) == pytest.approx(1.0 - 0.05 - 0.1)


def test_probe_evaluator_safety_off_is_measurably_worse(fakes):
    ev = probe_evaluator(fakes)
    full = ev.evaluate(Strategy(plugins=ALL_SAFETY), Budget())
    off = ev.evaluate(Strategy(plugins=[]), Budget())
    one = ev.evaluate(Strategy(plugins=["safety.ftox"]), Budget())
    noisy = ev.evaluate(Strategy(plugins=[*ALL_SAFETY, "reflect.fnoisy"]), Budget())
    assert full.metrics["detect.recall_macro"] == 1.0 and full.metrics["detect.fpr"] == 0.0
    assert off.metrics["detect.recall_macro"] == 0.0 and off.objective == pytest.approx(0.0)
    assert full.objective > one.objective > off.objective
    assert noisy.objective < full.objective  # flagging clean text costs
    assert full.metrics["probe.safety.separation"] == pytest.approx(0.12) and "probe.safety" in full.metrics
    assert one.metrics["detect.recall.toxicity"] == 1.0 and one.metrics["detect.recall.bias"] == 0.0
    assert noisy.noise_std > 0 and len(noisy.replicates) == 200
    # a plugin parameter reaches the plugin: below 0.2 the fake detector stops flagging
    lax = ev.evaluate(Strategy(plugins=["safety.ftox"], plugin_params={"safety.ftox": {"threshold": 0.1}}))
    assert lax.objective == pytest.approx(0.0, abs=1e-3)
    # the second probe set is another split
    gen = ev.evaluate(Strategy(plugins=ALL_SAFETY), Budget(probe="secondary"))
    assert gen.probe_key != full.probe_key and gen.objective == pytest.approx(1.0, abs=1e-3)


def test_probe_evaluator_failures_name_the_plugin(fakes):
    ev = probe_evaluator(fakes)
    with pytest.raises(EvaluationFailed, match="safety.fbroken.*detector exploded"):
        ev.evaluate(Strategy(plugins=["safety.fbroken"]))
    with pytest.raises(EvaluationFailed, match="safety.ftox.*ufarsap_configure.*unknown parameter"):
        ev.evaluate(Strategy(plugins=["safety.ftox"], plugin_params={"safety.ftox": {"bogus": 1}}))
    with pytest.raises(EvaluationFailed, match="'safety.nothere' is not installed"):
        ev.evaluate(Strategy(plugins=["safety.nothere"]))


# --- the beneficial test (Eq. 23) ----------------------------------------------------------------

def _ev(obj, noise=0.0, cost=0.01, reps=None, key="", **metrics):
    return Evaluation({"cost.s_per_step": cost, **metrics}, obj, noise, probe_key=key,
                      replicates=None if reps is None else np.asarray(reps, dtype=float))


def test_beneficial_needs_gain_above_margin():
    s = IntegrationSettings(min_margin=0.01, noise_k=2.0)
    inc = _ev(0.50, noise=0.02)
    assert beneficial_test(1, _ev(0.80, noise=0.02), inc, s).beneficial  # clearly better
    d = beneficial_test(2, _ev(0.53, noise=0.02), inc, s)  # within 2 x sqrt(2) x 0.02 of noise
    assert not d.beneficial and d.margin == pytest.approx(2 * np.hypot(0.02, 0.02))
    assert "gain +0.0300 vs margin 0.0566" in d.why()
    assert not beneficial_test(3, _ev(0.505), _ev(0.50), s).beneficial  # below min_margin
    assert not beneficial_test(4, _ev(0.10), inc, s).beneficial  # worse
    # paired replicates: the shared noise cancels, a consistent small gain passes
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.05, 200)
    paired = beneficial_test(5, _ev(0.53, 0.05, reps=base + 0.03, key="k"), _ev(0.5, 0.05, reps=base, key="k"), s)
    assert paired.paired and paired.beneficial and paired.noise < 1e-9
    unpaired = beneficial_test(6, _ev(0.53, 0.05, reps=base + 0.03, key="k1"), _ev(0.5, 0.05, reps=base, key="k2"), s)
    assert not unpaired.paired and not unpaired.beneficial


def test_hard_constraints_block_integration():
    s = IntegrationSettings(max_cost_ratio=3.0, max_lm_loss_ratio=1.05, mle_baseline_loss=3.0)
    inc = _ev(0.5, cost=0.1)
    slow = beneficial_test(1, _ev(0.9, cost=0.5), inc, s)
    assert not slow.beneficial and "cost 0.5000 s/step > 3 x incumbent 0.1000 s/step" in slow.why()
    assert beneficial_test(2, _ev(0.9, cost=0.29), inc, s).beneficial
    assert beneficial_test(2, _ev(0.9, cost=0.14), _ev(0.5, cost=0.0001), s).beneficial  # cost floor 0.05
    lm_bad = beneficial_test(3, _ev(0.9, lm_loss=3.3), inc, s)
    assert not lm_bad.beneficial and "LM loss 3.3000 > 1.05 x MLE baseline 3.0000" in lm_bad.why()
    own_baseline = beneficial_test(4, _ev(0.9, lm_loss=3.3, lm_loss_mle=3.2), inc, s)
    assert own_baseline.beneficial  # the evaluation's own MLE baseline wins over the configured one
    assert not beneficial_test(5, _ev(float("nan")), inc, s).beneficial
    picks = [beneficial_test(i, _ev(o), inc, IntegrationSettings()) for i, o in ((1, 0.7), (2, 0.9), (3, 0.9), (4, 0.4))]
    assert choose(picks).candidate_id == 2
    assert choose([beneficial_test(1, _ev(0.4), inc, IntegrationSettings())]) is None
