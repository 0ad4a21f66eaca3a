"""The SDPA core attention: same outputs and grads as Megatron's local attention (MHA, GQA, MQA),
and the attention backend is an execution choice (a checkpoint resumes across it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer_helpers import run
from trainer_helpers.corpus import write_jsonl
from ufarsap_engine.errors import UserError
from ufarsap_engine.trainer.checkpoint import ENGINE_STATE, _check_model_config
from ufarsap_engine.trainer.model_config import PRESETS, model_preset


def test_sdpa_matches_local_attention_outputs_and_grads():
    p = subprocess.run([sys.executable, "-m", "trainer_helpers.attention_check"],
                       env=run.env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(res) == {"mha", "gqa", "mqa"}
    for case in res.values():
        assert case["shape_equal"], res
        assert case["out_max_abs_diff"] < 1e-5, res
        assert case["grad_max_abs_diff"] < 1e-5, res


def test_config_check_ignores_attention_backend_only(tmp_path):
    saved = model_preset("tiny", attention_backend="local")
    (tmp_path / ENGINE_STATE).write_text(json.dumps({"model_config": saved.model_dump()}))
    _check_model_config(tmp_path, model_preset("tiny", attention_backend="sdpa"))
    with pytest.raises(UserError, match="hidden_size"):
        _check_model_config(tmp_path, model_preset("tiny", hidden_size=128, num_attention_heads=4))


def test_default_backend_is_sdpa():
    assert model_preset("tiny").attention_backend == "sdpa"


@pytest.mark.slow  # trains a model (tens of seconds on 2 cores)
def test_local_checkpoint_resumes_with_sdpa_and_same_losses(tmp_path):
    data = {"path": str(write_jsonl(tmp_path / "corpus.jsonl", 200, kind="mixed"))}
    train = {"micro_batch_size": 2, "global_batch_size": 4, "lr": 3e-3, "min_lr": 3e-3, "lr_schedule": "constant"}
    local = {**PRESETS["tiny"], "attention_backend": "local"}
    sdpa = {**PRESETS["tiny"], "attention_backend": "sdpa"}
    full = tmp_path / "full"
    p = run.run_single(run.spec(tmp_path / "full.json", model=local, train={**train, "steps": 4, "out_dir": str(full)}, data=data))
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "switched"
    p = run.run_single(run.spec(tmp_path / "a.json", model=local, train={**train, "steps": 2, "out_dir": str(out)}, data=data))
    assert p.returncode == 0, p.stderr[-3000:]
    p = run.run_single(run.spec(tmp_path / "b.json", model=sdpa, train={**train, "steps": 4, "out_dir": str(out)}, data=data))
    assert p.returncode == 0, p.stderr[-3000:]
    got, ref = run.losses(out), run.losses(full)
    assert len(got) == len(ref) == 4
    assert got[:2] == ref[:2]
    assert all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(got, ref)), (got, ref)


def test_run_settings_leave_out_the_attention_backend():
    from ufarsap_engine.config import RunConfig
    from ufarsap_engine.run_dir import run_settings

    a = run_settings(RunConfig(model_overrides={"attention_backend": "local"}), None, {})
    b = run_settings(RunConfig(), None, {})
    assert a == b
    c = run_settings(RunConfig(model_overrides={"attention_backend": "local", "seq_length": 64}), None, {})
    assert c["model_overrides"] == {"seq_length": 64}
