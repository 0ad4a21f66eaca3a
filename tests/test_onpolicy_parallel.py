"""The on-policy phase under TP=2 and PP=2 gives the same phase metrics and losses as TP=1, and
a run SIGKILLed between phases resumes exactly (pairs, reference log-probs and the phase's
position come back from the checkpoint)."""

from __future__ import annotations

import pytest

from trainer_helpers import run
from trainer_helpers.corpus import write_jsonl

pytestmark = pytest.mark.slow

TRAIN = {"micro_batch_size": 2, "global_batch_size": 4, "clip_grad": 1.0, "lr": 3e-3, "min_lr": 3e-4}
PHASE = ("ufarsap_engine.alignment.onpolicy:build_phase",
         {"cfg": {"every": 3, "samples": 4, "prompts": 3, "prompt_tokens": 8, "new_tokens": 12, "train_steps": 2,
                  "lam": 0.5, "pairs_from": "score"},
          "plugins": ["safety.toxicity", "safety.privacy"]})
#: What the phase decides and trains (its timing aside), and the step's own results.
TERMS = ("loss", "lm_loss", "grad_norm", "onpolicy/flagged_rate", "onpolicy/pairs", "onpolicy/dpo_loss",
         "onpolicy/dpo_margin", "onpolicy/dpo_accuracy")


def rel_close(a: float, b: float, tol: float = 1e-5) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-12)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("onpolicy_parallel")
    data = {"path": str(write_jsonl(root / "corpus.jsonl", 300, kind="mixed"))}
    p = run.run_single(run.spec(root / "base.json", train={**TRAIN, "steps": 0, "out_dir": str(root / "base")}, data=data))
    assert p.returncode == 0, p.stderr[-3000:]
    ckpt = str(root / "base" / "checkpoints" / "iter_0000000")
    train = {**TRAIN, "steps": 8, "save_interval": 2, "keep_last": 10, "init_from": ckpt}
    ref = root / "tp1"
    p = run.run_single(run.spec(root / "tp1.json", train={**train, "out_dir": str(ref)}, data=data, policy_phase=PHASE),
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return {"root": root, "data": data, "train": train, "ref": run.metrics(ref)}


def test_reference_run_has_phases_and_dpo_steps(base):
    ref = base["ref"]
    assert [m["step"] for m in ref if "onpolicy/flagged_rate" in m] == [1, 4, 7]
    assert [m["step"] for m in ref if "onpolicy/dpo_loss" in m] == [1, 2, 4, 5, 7, 8]
    assert all(m["onpolicy/pairs"] > 0 for m in ref if "onpolicy/pairs" in m)


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
def test_onpolicy_terms_match_tp1(base, layout):
    root = base["root"]
    tp, pp = (2, 1) if layout == "tp2" else (1, 2)
    out = root / layout
    spec = run.spec(root / f"{layout}.json", train={**base["train"], "tp": tp, "pp": pp, "out_dir": str(out)},
                    data=base["data"], policy_phase=PHASE)
    assert run.run_torchrun(spec, nproc=2, timeout=400) == 0
    got, ref = run.metrics(out), base["ref"]
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert [k for k in TERMS if k in g] == [k for k in TERMS if k in r], g["step"]
        for k in TERMS:
            if k in r:
                assert rel_close(g[k], r[k], 1e-4 if k == "grad_norm" else 1e-5), (layout, g["step"], k, g[k], r[k])


def test_sigkill_between_phases_then_resume_continues_exactly(base):
    """Killed after step 5 (the checkpoint at 4 holds the pairs of the phase before step 4 with
    one training step left); the resumed run repeats steps 5-8 bit for bit."""
    root = base["root"]
    out = root / "killed"
    train = {**base["train"], "out_dir": str(out)}
    spec = run.spec(root / "killed.json", train=train, data=base["data"], policy_phase=PHASE,
                    callbacks=[("trainer_helpers.probes:KillAt", {"step": 5})])
    p = run.run_single(spec, timeout=300)
    assert p.returncode == -9, (p.returncode, p.stderr[-2000:])
    spec = run.spec(root / "killed.json", train=train, data=base["data"], policy_phase=PHASE)
    p = run.run_single(spec, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed, ref = run.metrics(out), base["ref"]
    assert [m["step"] for m in resumed] == list(range(1, 9))
    for k in TERMS:
        assert [m.get(k) for m in resumed] == [m.get(k) for m in ref], k  # bit for bit


def test_dp2_phase_runs_and_its_checkpoint_holds_both_ranks_pairs(base):
    """At DP=2 each rank samples from its own documents (so the terms differ from DP=1's); the
    phase's samples and pairs add up over both ranks, and a checkpoint holds both ranks' pairs."""
    import json

    root = base["root"]
    out = root / "dp2"
    spec = run.spec(root / "dp2.json", train={**base["train"], "steps": 5, "out_dir": str(out)},
                    data=base["data"], policy_phase=PHASE)
    assert run.run_torchrun(spec, nproc=2, timeout=400) == 0
    got = run.metrics(out)
    phases = [m for m in got if "onpolicy/flagged_rate" in m]
    assert [m["step"] for m in phases] == [1, 4]
    assert all(m["onpolicy/samples"] == 2 * 3 * 4 for m in phases)  # 2 ranks x 3 prompts x K=4
    state = json.loads((out / "checkpoints" / "iter_0000004" / "engine_state.json").read_text())
    pairs = state["extra_state"]["policy_phase"]["pairs"]
    assert len(pairs) == 2 and all(pairs)
