"""Loop pieces that need no process group: metric cloning, callbacks, metrics-file truncation,
configs, the package's lazy exports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ufarsap_engine.trainer.loop import _call, _loss_func, _truncate_metrics
from ufarsap_engine.trainer.model_config import PRESETS, ModelConfig, model_preset


class _MB:
    loss_mask = torch.tensor([[1.0, 1.0, 0.0]])


class AliasingObjective:
    """Returns a metric that *is* the loss tensor: the loop must clone it."""

    def prepare(self, batch):
        return {}

    def loss(self, ce, mask, prepared, outputs):
        s = (ce * mask).sum()
        return s, mask.sum().to(torch.int), {"raw_loss": s}


def test_metrics_are_cloned_not_aliased():
    ce = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    loss, n, packed = _loss_func(AliasingObjective(), _MB(), {}, ce)
    report = lambda: dict(zip(packed["names"], packed["vector"].tolist()))  # noqa: E731
    assert report()["raw_loss"] == 3.0 and int(n) == 2
    loss.data /= 4  # what a schedule does to the loss in place
    assert report()["raw_loss"] == 3.0 and report()["_loss_sum"] == 3.0
    assert report()["_lm_sum"] == 3.0 and report()["_lm_tokens"] == 2.0
    assert loss.requires_grad  # the returned loss still carries the graph


def test_reserved_metric_names_are_refused():
    class Bad(AliasingObjective):
        def loss(self, ce, mask, prepared, outputs):
            return ce.sum(), torch.tensor(1), {"_loss_sum": ce.sum()}

    with pytest.raises(ValueError, match="reserved"):
        _loss_func(Bad(), _MB(), {}, torch.ones(1, 3))


def test_callbacks_objects_and_plain_functions():
    seen = []

    class CB:
        def on_step_end(self, step, metrics):
            seen.append(("obj", step))
            return "stop"

    assert _call(CB(), "on_step_end", 3, {}) == "stop"
    _call(lambda step, m: seen.append(("fn", step)), "on_step_end", 4, {})
    assert _call(CB(), "on_train_start", object()) is None  # optional hooks may be missing
    assert seen == [("obj", 3), ("fn", 4)]


def test_truncate_metrics_drops_steps_after_the_checkpoint(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in range(1, 8)) + '{"step": 8, "lo')
    _truncate_metrics(p, 4)
    assert [json.loads(x)["step"] for x in p.read_text().splitlines()] == [1, 2, 3, 4]


def test_presets_are_valid_and_counted():
    for name in PRESETS:
        cfg = model_preset(name)
        assert isinstance(cfg, ModelConfig) and cfg.num_parameters() > 0
    assert 100e6 < model_preset("125m").num_parameters() < 200e6
    assert 0.9e9 < model_preset("1b").num_parameters() < 1.6e9
    assert model_preset("tiny", seq_length=64).seq_length == 64


def test_package_import_is_lazy():
    code = "import sys, ufarsap_engine.trainer as t; t.TrainConfig; print(any(m.startswith('megatron') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
