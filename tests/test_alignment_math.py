"""Hand-computed small cases for the paper's equations as the engine realises them."""

import math

import pytest
import torch

from ufarsap_engine.alignment.emergence import EmergenceTracker
from ufarsap_engine.alignment.interaction import InteractionNetwork, prediction_loss
from ufarsap_engine.alignment.objectives import dpo_loss, filtering_mask, rwr_sum, rwr_weights, unlikelihood_sum
from ufarsap_engine.alignment.orchestrator import Orchestrator, coordination_loss
from ufarsap_engine.alignment.reward import unified_reward

S, T, P = 4, 4, 4
SAFETY, REFLECT = 3, 1  # index in PARADIGMS = [self, reflect, multi, safety]
TOKEN, DOCUMENT = 0, 2
SHORT, LONG = 1, 3


def test_eq2_orchestration_combines_available_cells_only():
    orch = Orchestrator()
    avail = torch.zeros(S, T, P, dtype=torch.bool)
    avail[TOKEN, SHORT, SAFETY] = avail[DOCUMENT, LONG, SAFETY] = True
    scores = torch.full((S, T, P), 123.0)  # masked cells hold junk that must not leak in
    scores[TOKEN, SHORT, SAFETY], scores[DOCUMENT, LONG, SAFETY] = 0.2, 0.8
    o = orch.combine(scores, avail)
    assert o[SAFETY].item() == pytest.approx(0.5)  # equal weights 0.5 / 0.5
    assert o[REFLECT].item() == 0.0  # no cell: masked, not faked
    with torch.no_grad():
        orch.logits[TOKEN, SHORT] = math.log(3.0)  # weights 0.75 / 0.25
    assert orch.combine(scores, avail)[SAFETY].item() == pytest.approx(0.75 * 0.2 + 0.25 * 0.8)
    table = orch.weight_table(avail)
    assert table == pytest.approx({"orch.w.token.short": 0.75, "orch.w.document.long": 0.25})


def test_eq6_coordination_loss():
    o = torch.tensor([[0.5], [0.9], [0.0], [0.0]])
    present = torch.tensor([True, True, False, False])
    loss = coordination_loss(o, torch.ones(4), present)
    assert loss.item() == pytest.approx(0.25 + 0.01)


def test_gradients_reach_orchestrator_and_interaction_network():
    orch, net = Orchestrator(), InteractionNetwork()
    avail = torch.zeros(S, T, P, dtype=torch.bool)
    avail[TOKEN, SHORT, :] = avail[DOCUMENT, SHORT, :] = True
    scores = torch.rand(S, T, P, 3)
    o = orch.combine(scores, avail)
    present = torch.ones(P, dtype=torch.bool)
    loss = coordination_loss(o, torch.ones(P), present).sum()
    feats = torch.stack([o.mean(-1), torch.full((P,), 0.5), torch.full((P,), 0.4)], dim=-1)
    loss = loss + prediction_loss(net(feats, present), torch.rand(P), present)
    loss.backward()
    assert orch.logits.grad[TOKEN, SHORT].abs() > 0 and orch.logits.grad[3, SHORT] == 0  # conversation scale: no cell
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_synergy_uses_edges_between_present_paradigms():
    net = InteractionNetwork()
    o = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    present = torch.tensor([True, True, False, False])
    # only edges 0<->1 count, both sigmoid(0) = 0.5: joint = (0.5*O0*O1 * 2) / (0.5 * 2) = O0*O1
    assert net.synergy(o, present).tolist() == pytest.approx([1.0, 0.0])


def test_eq12_unified_reward():
    rewards = torch.tensor([[0.0], [1.0], [0.0], [0.5]])  # self absent, reflect 1.0, safety 0.5
    present = torch.tensor([False, True, False, True])
    r = unified_reward(rewards, present, alpha=torch.ones(4), synergy=torch.tensor([0.5]), emergence=1.0,
                       beta=0.5, gamma=0.5)
    assert r.item() == pytest.approx((1.5 + 0.25 + 0.5) / (2 + 0.5 + 1.5))


def test_eq21_emergence_score():
    em = EmergenceTracker()
    em.observe_state([0.0, 0.0])
    assert em.observe_state([1.0, 1.0]) == pytest.approx(1.0)
    em.observe_window(0.4)
    assert em.observe_window(0.6) == pytest.approx(0.2)
    em.observe_probe(0.5)
    assert em.observe_probe(0.55) == pytest.approx(0.05)
    assert em.score == pytest.approx(1.25)
    em.observe_predictions(interaction_error=0.01, direct_error=0.02)
    assert em.indicator == pytest.approx(2.0)


def test_objective_families_hand_values():
    logp = torch.log(torch.tensor([[0.5, 0.1]]))
    flagged, mask = torch.tensor([[1.0, 0.0]]), torch.ones(1, 2)
    assert unlikelihood_sum(logp, flagged, mask).item() == pytest.approx(-math.log(0.5))
    w = rwr_weights(torch.tensor([1.0, 0.0]), beta=1.0)
    assert w.tolist() == pytest.approx([2 * math.e / (math.e + 1), 2 / (math.e + 1)])
    ce = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    assert rwr_sum(ce, torch.ones(2, 2), torch.tensor([0.0, 0.0])).item() == pytest.approx(0.0)
    assert filtering_mask(torch.tensor([0.9, 0.1]), 0.5, 3).tolist() == [[1, 1, 1], [0, 0, 0]]
    assert dpo_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                    torch.tensor([0.0])).item() == pytest.approx(math.log(2))


def test_rwr_never_reweights_tokens_unlikelihood_took_out_of_the_lm_term():
    """Safety (unlikelihood) and self (RWR) together: a flagged token is out of L_LM, so once the
    model gives it almost no probability nothing pushes it further (the unlikelihood gradient
    vanishes). Were RWR to reweight it, its CE would carry weight lambda * (w - 1) < 0: a constant
    push on log p without end, which wrecks the model (held-out loss doubled in the cpu bench)."""
    from ufarsap_engine.alignment.unified import UnifiedObjective
    from ufarsap_engine.config import ObjectiveConfig
    from ufarsap_engine.plugin_host import PluginHost
    from ufarsap_engine.trainer.objective import ModelOutputs

    objective = UnifiedObjective(PluginHost(["safety.toxicity", "self.reward"]), ObjectiveConfig())
    b, s = 1, 4
    mis = torch.zeros(S, P, b, s)
    mis[TOKEN, SAFETY, 0, 1] = 1.0  # token 1 flagged by the safety plugin's spans
    token_scores = torch.ones(P, b, s)
    token_scores[:, 0, 1] = 0.0
    prepared = {"mis": mis, "row_scores": torch.full((S, P, b), 0.75), "row_scored": torch.ones(S, P, b, dtype=torch.bool),
                "token_scores": token_scores, "plugin_metrics": {}}
    logp = torch.log(torch.tensor([[0.5, 1e-9, 0.5, 0.5]])).requires_grad_(True)
    total, _, metrics, _ = objective.loss(-logp, torch.ones(b, s), prepared, ModelOutputs(token_logprobs=logp, batch=None))
    (grad,) = torch.autograd.grad(total, logp)
    assert abs(grad[0, 1].item()) < 1e-6, grad  # the flagged token: no push left
    assert (grad[0, [0, 2, 3]] < 0).all(), grad  # clean tokens: their likelihood is raised
    assert metrics["lm_token_weight"].item() == pytest.approx(0.75)
