"""The loss plug point: a custom objective's prepare/loss run under every layout, its named
metrics reach metrics.jsonl, and its extra trainable module (own LR) is trained identically
at TP=1, DP=2 and PP=2."""

from __future__ import annotations

import pytest
import torch

from trainer_helpers import run
from trainer_helpers.corpus import write_jsonl
from ufarsap_engine.trainer.objective import MLEObjective, Objective, extra_modules_of

OBJ = ("trainer_helpers.probes:WeightedObjective", {"extra_lr": 0.05})
TRAIN = {"steps": 3, "micro_batch_size": 2, "global_batch_size": 4}


def test_mle_objective_is_masked_token_sum():
    obj = MLEObjective()
    assert isinstance(obj, Objective)
    ce = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    s, n, m = obj.loss(ce, mask, {}, None)
    assert float(s) == 13.0 and int(n) == 4 and m == {}
    assert extra_modules_of(obj) == [] and extra_modules_of(object()) == []


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer_objective")
    corpus = write_jsonl(root / "c.jsonl", 200, kind="mixed")
    data = {"path": str(corpus)}
    p = run.run_single(run.spec(root / "base.json", train={**TRAIN, "steps": 0, "out_dir": str(root / "base")}, data=data))
    assert p.returncode == 0, p.stderr[-3000:]
    ckpt = str(root / "base" / "checkpoints" / "iter_0000000")
    p = run.run_single(run.spec(root / "tp1.json", train={**TRAIN, "out_dir": str(root / "tp1"), "init_from": ckpt},
                                data=data, objective=OBJ))
    assert p.returncode == 0, p.stderr[-3000:]
    return {"root": root, "data": data, "ckpt": ckpt, "metrics": run.metrics(root / "tp1")}


@pytest.mark.slow  # trains a model (tens of seconds on 2 cores)
def test_objective_metrics_reach_the_log(ref):
    ms = ref["metrics"]
    for m in ms:
        assert {"loss", "lm_loss", "weighted_mean_w", "scale", "lr", "grad_norm", "tokens_per_s"} <= set(m)
        assert 0.5 < m["weighted_mean_w"] < 1.0
        assert m["loss"] != pytest.approx(m["lm_loss"])  # the objective is not plain MLE
    scales = [m["scale"] for m in ms]
    assert scales[0] == 1.0 and scales[1] != scales[0] and scales[2] != scales[1]  # extra module trains


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dp2", "pp2"])
def test_objective_same_under_parallel_layouts(ref, layout):
    root = ref["root"]
    pp = 2 if layout == "pp2" else 1
    spec = run.spec(root / f"{layout}.json", train={**TRAIN, "pp": pp, "out_dir": str(root / layout), "init_from": ref["ckpt"]},
                    data=ref["data"], objective=OBJ)
    assert run.run_torchrun(spec, nproc=2, timeout=240) == 0
    got = run.metrics(root / layout)
    for a, b in zip(got, ref["metrics"]):
        for k in ("loss", "lm_loss", "scale", "weighted_mean_w", "grad_norm"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (k, a[k], b[k])
