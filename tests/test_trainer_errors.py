"""Bad input: every mistake is one UserError line (exit code 2 from the worker), and nothing
hangs (every process is started with a timeout)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from trainer_helpers import run
from trainer_helpers.corpus import write_jsonl
from ufarsap_engine.errors import UserError
from ufarsap_engine.trainer.checkpoint import find_latest, resolve_checkpoint, verify_checkpoint
from ufarsap_engine.trainer.model_config import PRESETS, ModelConfig, TrainConfig, model_preset, validate_layout
from ufarsap_engine.trainer.parallel import check_device
from ufarsap_engine.trainer.worker import launch_torchrun, load_spec, parse_config, read_worker_error

TINY = ModelConfig(**PRESETS["tiny"])  # 2 layers, 4 heads, 2 query groups


def msg(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    "tp,pp,world,expected",
    [
        (3, 1, 3, "--tp 3 does not divide the model's 4 attention heads"),
        (4, 1, 4, "--tp 4 does not divide the model's 2 query groups"),
        (1, 3, 3, "--pp 3 does not divide the model's 2 layers"),
        (2, 1, 3, "tp*pp = 2*1 = 2 does not divide the world size 3 (processes launched)"),
        (2, 2, 2, "tp*pp = 2*2 = 4 does not divide the world size 2 (processes launched)"),
    ],
)
def test_layout_errors_are_one_line(tp, pp, world, expected):
    with pytest.raises(UserError) as e:
        validate_layout(TINY, TrainConfig(tp=tp, pp=pp, micro_batch_size=1, global_batch_size=12), world)
    assert msg(e) == expected


def test_batch_that_does_not_split_over_data_parallel():
    with pytest.raises(UserError) as e:
        validate_layout(TINY, TrainConfig(micro_batch_size=2, global_batch_size=6), 2)
    assert msg(e) == "global_batch_size 6 is not a multiple of micro_batch_size*data_parallel = 2*2 = 4"


def test_invalid_config_values_become_one_line():
    with pytest.raises(UserError) as e:
        parse_config(TrainConfig, {"bf16": True, "device": "cpu"})
    assert "bf16 needs device='cuda'" in msg(e)
    with pytest.raises(UserError) as e:
        parse_config(ModelConfig, {**PRESETS["tiny"], "num_attention_heads": 5})
    assert "not divisible" in msg(e)
    with pytest.raises(UserError) as e:
        model_preset("huge")
    assert msg(e).startswith("unknown model preset 'huge'")


def test_bad_spec_file(tmp_path):
    p = tmp_path / "s.json"
    p.write_text("{not json")
    with pytest.raises(UserError) as e:
        load_spec(p)
    assert msg(e).startswith(f"{p}:1: not valid JSON")
    with pytest.raises(UserError) as e:
        load_spec(tmp_path / "missing.json")
    assert msg(e).startswith("spec file not found")


def test_cuda_without_gpu_is_refused_at_once(tmp_path):
    import torch

    if torch.cuda.is_available():  # pragma: no cover
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError) as e:
        check_device("cuda")
    assert msg(e).startswith("device 'cuda' was requested but no CUDA GPU is available here")
    corpus = write_jsonl(tmp_path / "c.jsonl", 50)
    spec = run.spec(tmp_path / "s.json", train={"device": "cuda", "out_dir": str(tmp_path / "o")}, data={"path": str(corpus)})
    t = time.time()
    p = run.run_single(spec, timeout=60)
    assert p.returncode == 2
    assert run.error_lines(p.stderr) == [f"error: {e.value}"]
    assert "Traceback" not in p.stderr
    assert time.time() - t < 60
    with pytest.raises(UserError):  # the launcher refuses before starting any worker
        launch_torchrun(2, spec, timeout=60)


def test_launcher_checks_layout_before_starting_workers(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", 50)
    spec = run.spec(tmp_path / "s.json", train={"tp": 2, "pp": 2, "out_dir": str(tmp_path / "o")}, data={"path": str(corpus)})
    t = time.time()
    with pytest.raises(UserError) as e:
        launch_torchrun(2, spec, timeout=60)
    assert msg(e) == "tp*pp = 2*2 = 4 does not divide the world size 2 (processes launched)"
    assert time.time() - t < 20  # no worker was started


@pytest.mark.slow
def test_workers_report_user_errors_without_hanging(tmp_path):
    """Even without the launcher's checks, torchrun workers exit with code 2 and one line."""
    corpus = write_jsonl(tmp_path / "c.jsonl", 50)
    out = tmp_path / "o"
    spec = run.spec(tmp_path / "s.json", train={"tp": 3, "micro_batch_size": 1, "global_batch_size": 2, "out_dir": str(out)},
                    data={"path": str(corpus)})
    rc = run.run_torchrun(spec, nproc=2, timeout=120, check=False)
    assert rc == 2
    assert read_worker_error(out) == "--tp 3 does not divide the model's 4 attention heads"


@pytest.mark.parametrize("case", ["missing", "malformed", "vocab"])
def test_worker_data_errors_are_one_line(tmp_path, case):
    corpus = write_jsonl(tmp_path / "c.jsonl", 120)
    data = {"path": str(corpus)}
    model = dict(PRESETS["tiny"])
    if case == "missing":
        data = {"path": str(tmp_path / "nope.jsonl")}
        expected = f"error: data file not found: {tmp_path / 'nope.jsonl'}"
    elif case == "malformed":
        lines = corpus.read_text().splitlines()
        lines[6] = lines[6][:-3]
        corpus.write_text("\n".join(lines) + "\n")
        expected = f"error: {corpus}:7: not valid JSON"
    else:
        from ufarsap_engine.trainer.data import DataSpec, load_documents, train_bpe_tokenizer

        tok = train_bpe_tokenizer((d.text for d in load_documents(DataSpec(**data))), 400)
        tok.save(tmp_path / "tokenizer.json")
        data["tokenizer"] = str(tmp_path / "tokenizer.json")
        model["vocab_size"] = 256
        expected = f"error: the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is 256"
    spec = run.spec(tmp_path / "s.json", model=model, train={"out_dir": str(tmp_path / "o"), "steps": 1}, data=data)
    p = run.run_single(spec, timeout=90)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = run.error_lines(p.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected), p.stderr[-2000:]
    assert "Traceback" not in p.stderr


# --------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt_errors")
    corpus = write_jsonl(root / "c.jsonl", 120)
    out = root / "run"
    spec = run.spec(root / "s.json", train={"steps": 1, "micro_batch_size": 2, "global_batch_size": 2, "out_dir": str(out)},
                    data={"path": str(corpus)})
    p = run.run_single(spec)
    assert p.returncode == 0, p.stderr[-3000:]
    return {"root": root, "run": out, "corpus": corpus, "ckpt": out / "checkpoints" / "iter_0000001"}


def clone(saved, name):
    dst = saved["root"] / name
    shutil.copytree(saved["run"], dst)
    return dst


@pytest.mark.slow  # trains a model (tens of seconds on 2 cores)
def test_complete_checkpoint_verifies(saved):
    assert verify_checkpoint(saved["ckpt"]) == saved["ckpt"]
    assert find_latest(saved["run"] / "checkpoints") == saved["ckpt"]
    assert resolve_checkpoint(saved["run"]) == saved["ckpt"]
    manifest = json.loads((saved["ckpt"] / "MANIFEST.json").read_text())
    assert "engine_state.json" in manifest["files"] and "tokenizer.json" in manifest["files"]


@pytest.mark.slow  # trains a model (tens of seconds on 2 cores)
def test_partial_and_corrupt_checkpoints_are_refused(saved):
    run_dir = clone(saved, "c1")
    ck = run_dir / "checkpoints" / "iter_0000001"
    shard = sorted(ck.glob("*.distcp"))[0]

    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        verify_checkpoint(ck)
    assert msg(e) == f"corrupt checkpoint: {shard} does not match its saved sha256"

    shard.write_bytes(bytes(data[:100]))
    with pytest.raises(UserError) as e:
        verify_checkpoint(ck)
    assert msg(e).startswith(f"corrupt checkpoint: {shard} has 100 bytes")

    shard.unlink()
    with pytest.raises(UserError) as e:
        verify_checkpoint(ck)
    assert msg(e) == f"corrupt checkpoint: {shard} is missing"

    (ck / "MANIFEST.json").unlink()
    with pytest.raises(UserError) as e:
        verify_checkpoint(ck)
    assert msg(e) == f"partial checkpoint (no MANIFEST.json; the save did not finish): {ck}"

    tmp = ck.with_name("iter_0000002.tmp")
    tmp.mkdir()
    with pytest.raises(UserError) as e:
        verify_checkpoint(tmp)
    assert msg(e) == f"partial checkpoint (an interrupted save): {tmp}"

    with pytest.raises(UserError) as e:
        verify_checkpoint(run_dir / "checkpoints" / "iter_0000009")
    assert msg(e).startswith("checkpoint not found")


@pytest.mark.slow  # trains a model (tens of seconds on 2 cores)
def test_interrupted_save_leaves_previous_checkpoint_in_use(saved):
    """A crash mid-save leaves only a .tmp directory; `latest` still names the good one."""
    run_dir = clone(saved, "c2")
    root = run_dir / "checkpoints"
    (root / "iter_0000002.tmp").mkdir()
    (root / "iter_0000002.tmp" / "__0_0.distcp").write_bytes(b"half")
    assert find_latest(root) == root / "iter_0000001"
    (root / "latest").unlink()  # crash between the rename and the marker
    assert find_latest(root) == root / "iter_0000001"


@pytest.mark.slow  # trains a model (tens of seconds on 2 cores)
def test_resume_from_corrupt_checkpoint_is_one_line(saved):
    run_dir = clone(saved, "c3")
    ck = run_dir / "checkpoints" / "iter_0000001"
    shard = sorted(ck.glob("*.distcp"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    spec = run.spec(saved["root"] / "s3.json", train={"steps": 2, "micro_batch_size": 2, "global_batch_size": 2, "out_dir": str(run_dir)},
                    data={"path": str(saved["corpus"])})
    p = run.run_single(spec, timeout=90)
    assert p.returncode == 2
    lines = run.error_lines(p.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: corrupt checkpoint: {shard} has"), p.stderr[-2000:]
    assert "Traceback" not in p.stderr
