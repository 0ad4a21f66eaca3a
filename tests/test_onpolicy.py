"""The on-policy phase: the model samples, the plugins judge at the immediate horizon, best/worst
pairs train through DPO. Its preference rows give DPO's exact gradient; a run logs the flagged
rate of the model's own samples and the DPO margin; bad input is one line and writes nothing."""

from __future__ import annotations

import json
import os

import pytest
import torch

from helpers import good_plugin_source, make_plugin_dist, run_cli
from ufarsap_engine.alignment.objectives import dpo_loss
from ufarsap_engine.alignment.onpolicy import choose_pair, dpo_row_weights

#: ``pairs_from=score``: a pair from every prompt, so that a short run has DPO steps to check.
OP = ["--set", "onpolicy.every=3", "--set", "onpolicy.new_tokens=16", "--set", "onpolicy.prompts=4",
      "--set", "onpolicy.pairs_from=score"]


def _seq_logprob(table: torch.Tensor, seq: list[int], start: int) -> torch.Tensor:
    """A bigram 'model': log p(seq[i] | seq[i-1]) summed from position ``start``."""
    lp = torch.log_softmax(table, dim=-1)
    return sum(lp[a, b] for a, b in zip(seq[start - 1:-1], seq[start:]))


def test_preference_rows_give_the_exact_dpo_gradient():
    """w * (ce_chosen - ce_rejected), with w from the current margin, has the gradient of the mean
    DPO loss: what lets the pairs ride in Megatron's step as independent weighted rows."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(7, 7, generator=g, requires_grad=True)
    pairs = [([1, 2, 3, 4, 5], [1, 2, 6, 6, 0]), ([3, 3, 1, 0], [3, 3, 5, 2]), ([0, 4, 4], [0, 1, 2])]
    ref = [(float(torch.randn((), generator=g)), float(torch.randn((), generator=g))) for _ in pairs]
    beta = 0.3

    pc = torch.stack([_seq_logprob(table, c, 2) for c, _ in pairs])
    pr = torch.stack([_seq_logprob(table, r, 2) for _, r in pairs])
    rc, rr = torch.tensor([a for a, _ in ref]), torch.tensor([b for _, b in ref])
    (want,) = torch.autograd.grad(dpo_loss(pc, pr, rc, rr, beta).mean(), table, retain_graph=True)

    w, loss, margin = dpo_row_weights(pc.detach(), pr.detach(), rc, rr, beta)
    surrogate = (w * (-pc - (-pr))).sum() / len(pairs)  # ce = -log p per row
    (got,) = torch.autograd.grad(surrogate, table)
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()
    assert torch.allclose(loss, dpo_loss(pc, pr, rc, rr, beta).detach())
    assert not torch.allclose(w, w[0].expand_as(w))  # the weights depend on each pair's margin


def test_pairs_contrast_flagged_with_unflagged_samples_by_default():
    group = [0, 1, 2, 3]
    score = [0.9, 0.2, 0.6, 0.4]
    flagged = [False, True, False, True]
    assert choose_pair(group, flagged, score, "flagged", 0.0) == (0, 1)
    assert choose_pair(group, [False] * 4, score, "flagged", 0.0) is None  # nothing flagged: no pair
    assert choose_pair(group, [True] * 4, score, "flagged", 0.0) is None
    assert choose_pair(group, [False] * 4, score, "score", 0.0) == (0, 1)
    assert choose_pair(group, [False] * 4, score, "score", 0.75) is None  # gap 0.7 is not above 0.75
    assert choose_pair([2], flagged, score, "score", 0.0) is None


@pytest.fixture(scope="module")
def onpolicy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onpolicy")
    prompts = tmp / "prompts.jsonl"
    prompts.write_text('{"prompt": "You are such an"}\n\n{"prompt": "Send it to my address at"}\n')
    res = run_cli("run", "--plugins", "safety.toxicity,safety.privacy", "--steps", "6", "--out", str(tmp / "r"),
                  "--prompts", str(prompts), *OP, "--registry", f"sqlite:///{tmp / 'reg.db'}", cwd=tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = [json.loads(x) for x in (tmp / "r" / "metrics.jsonl").read_text().splitlines()]
    return tmp, res, metrics, json.loads((tmp / "r" / "summary.json").read_text())


def test_phases_log_the_flagged_rate_of_the_models_own_samples(onpolicy_run):
    _, res, metrics, summary = onpolicy_run
    phases = [m for m in metrics if "onpolicy/flagged_rate" in m]
    assert [m["step"] for m in phases] == [1, 4]  # before steps 1 and 4 (after 0 and 3 steps)
    for m in phases:
        assert m["onpolicy/samples"] == 4 * 4  # 4 prompts x K=4 samples
        assert 0.0 <= m["onpolicy/flagged_rate"] <= 1.0
    assert summary["onpolicy"]["phases"] == 2
    assert summary["onpolicy"]["last_flagged_rate"] == phases[-1]["onpolicy/flagged_rate"]
    assert "own samples flagged" in res.stderr


def test_pairs_train_through_dpo_and_the_margin_grows(onpolicy_run):
    _, _, metrics, _ = onpolicy_run
    dpo = [m for m in metrics if "onpolicy/dpo_loss" in m]
    assert len(dpo) == 6  # train_steps (10) outlasts the gap between phases (3)
    first = metrics[0]
    assert first["onpolicy/pairs"] > 0
    # At the phase the reference is the policy itself: margin 0, loss log 2. The update then
    # moves the chosen continuations above the rejected ones.
    assert first["onpolicy/dpo_margin"] == pytest.approx(0.0, abs=1e-9)
    assert first["onpolicy/dpo_loss"] == pytest.approx(0.693147, abs=1e-5)
    assert metrics[1]["onpolicy/dpo_margin"] > 0 and metrics[1]["onpolicy/dpo_accuracy"] > 0.5
    assert metrics[1]["onpolicy/dpo_loss"] < first["onpolicy/dpo_loss"]
    assert all(m["lm_loss"] == m["lm_loss"] for m in metrics)  # the data's loss is still logged as is


def test_lam_zero_watches_the_models_samples_and_trains_nothing_on_them(tmp_path):
    res = run_cli("run", "--plugins", "safety.toxicity", "--steps", "3", "--out", str(tmp_path / "r"), *OP,
                  "--set", "onpolicy.every=2", "--set", "onpolicy.lam=0", "--registry", f"sqlite:///{tmp_path / 'reg.db'}",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "onpolicy/flagged_rate" in m] == [1, 3]
    assert not any("onpolicy/dpo_loss" in m for m in metrics)


@pytest.fixture(scope="module")
def bad_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onpolicy_bad")
    site = tmp / "site"
    make_plugin_dist(site, "good-dist", {"safety.good": "goodplug:Plugin"}, {"goodplug": good_plugin_source()})
    (tmp / "bad.jsonl").write_text('{"prompt": "fine"}\n{"prompt": \n')
    (tmp / "noprompt.jsonl").write_text('{"text": "no prompt field"}\n')
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "UFARSAP_REGISTRY_URL": f"sqlite:///{tmp / 'reg.db'}"}
    return tmp, env


@pytest.mark.parametrize("args, says", [
    (["--set", "onpolicy.every=2", "--set", "onpolicy.samples=0"], "onpolicy.samples"),
    (["--set", "onpolicy.every=-1"], "onpolicy.every"),
    (["--set", "onpolicy.every=2", "--prompts", "missing.jsonl"], "missing.jsonl does not exist"),
    (["--set", "onpolicy.every=2", "--prompts", "bad.jsonl"], "bad.jsonl:2: not valid JSON"),
    (["--set", "onpolicy.every=2", "--prompts", "noprompt.jsonl"], "noprompt.jsonl:1: needs a non-empty"),
    (["--prompts", "bad.jsonl"], "turn it on with --set onpolicy.every=N"),
    (["--set", "onpolicy.every=2", "--set", "onpolicy.new_tokens=500"], "exceeds the model's sequence length"),
    (["--set", "onpolicy.every=2", "--no-train"], "needs training"),
    (["--set", "onpolicy.every=2", "--plugins", "safety.good"], "immediate horizon"),
], ids=["k0", "every-neg", "file-missing", "file-bad-json", "file-no-prompt", "file-without-phase",
        "too-long", "no-train", "no-immediate-judge"])
def test_bad_onpolicy_input_is_one_line_and_writes_nothing(bad_world, args, says):
    tmp, env = bad_world
    plugins = [] if "--plugins" in args else ["--plugins", "safety.toxicity"]
    res = run_cli("run", *plugins, "--steps", "2", "--out", str(tmp / "out"), *args, cwd=tmp, env=env)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and says in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp / "out").exists()


HANGS_WHEN_JUDGING = '''
import time
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores

class Plugin:
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="hangs on the model's samples", scales=["document"],
                          horizons=["immediate"])

    @hookimpl
    def ufarsap_score_document(self, batch, horizon):
        time.sleep(300)
        return ScaleScores(sample_scores=[1.0 for _ in batch.samples])
'''


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["strict", "tolerant"])
def test_a_judge_that_hangs_on_the_models_samples_is_timed_out(tmp_path, policy):
    """The phase calls the plugins through the host, so ``plugin_timeouts.call_s`` holds there too:
    strict stops the run with one line naming the plugin; tolerant quarantines it and trains on."""
    site = make_plugin_dist(tmp_path / "site", "hang-dist", {"safety.hang": "hangplug:Plugin"},
                            {"hangplug": HANGS_WHEN_JUDGING})
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = run_cli("run", "--plugins", "safety.toxicity,safety.hang", "--steps", "2", "--out", str(tmp_path / "r"),
                  "--registry", f"sqlite:///{tmp_path / 'reg.db'}", f"--{policy}", "--set", "plugin_timeouts.call_s=15",
                  "--set", "onpolicy.every=1", "--set", "onpolicy.prompts=2", "--set", "onpolicy.new_tokens=8",
                  cwd=tmp_path, env=env, timeout=240)
    assert "Traceback" not in res.stderr
    if policy == "strict":
        assert res.returncode != 0
        errors = [x for x in res.stderr.splitlines() if "safety.hang" in x]
        assert errors and "ufarsap_score_document" in errors[-1], res.stderr[-2000:]
    else:
        assert res.returncode == 0, res.stderr[-2000:]
        summary = json.loads((tmp_path / "r" / "summary.json").read_text())
        assert "safety.hang" in summary["quarantined"]
        metrics = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
        assert all("onpolicy/flagged_rate" in m for m in metrics)  # the phase went on with the others
