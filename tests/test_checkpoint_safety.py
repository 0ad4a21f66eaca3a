"""Loading a tampered checkpoint never runs its code: real pickle payloads in every pickled file
a checkpoint has (the manifest regenerated, as an attacker would), through the verifier, the
guarded loader and the commands that load checkpoints (resume, init_from, generate, evaluate)."""

from __future__ import annotations

import shutil

import pytest
import torch

from helpers import run_cli
from trainer_helpers import run
from trainer_helpers.corpus import write_jsonl
from trainer_helpers.tamper import KINDS, tamper
from ufarsap_engine.trainer.checkpoint import verify_checkpoint
from ufarsap_engine.trainer.safe_load import UnsafeCheckpoint, guarded_loading

TRAIN = {"steps": 1, "micro_batch_size": 2, "global_batch_size": 2}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt_safety")
    corpus = write_jsonl(root / "c.jsonl", 120)
    out = root / "run"
    p = run.run_single(run.spec(root / "s.json", train={**TRAIN, "out_dir": str(out)}, data={"path": str(corpus)}))
    assert p.returncode == 0, p.stderr[-3000:]
    return {"root": root, "run": out, "corpus": corpus}


def tampered(saved, name: str, kind: str):
    """A copy of the run directory with a payload of ``kind`` in its checkpoint."""
    run_dir = saved["root"] / name
    shutil.copytree(saved["run"], run_dir)
    ckpt = run_dir / "checkpoints" / "iter_0000001"
    marker = saved["root"] / f"{name}.marker"
    tamper(ckpt, kind, marker)
    return run_dir, ckpt, marker


def one_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if "error" in x]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("kind", KINDS)
def test_verifier_refuses_every_payload_without_running_it(saved, kind, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user environment that loosens torch.load
    _, ckpt, marker = tampered(saved, f"v-{kind}", kind)
    with pytest.raises(UnsafeCheckpoint) as e:
        verify_checkpoint(ckpt)
    assert str(e.value).startswith(f"checkpoint {ckpt} is not safe to load: ")
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_guard_refuses_a_payload_swapped_in_after_the_scan(saved, tmp_path):
    """The load itself is guarded too: torch DCP's metadata reader and torch.load(weights_only=False)."""
    from torch.distributed.checkpoint import FileSystemReader

    _, ckpt, marker = tampered(saved, "guard-md", "metadata")
    with pytest.raises(UnsafeCheckpoint), guarded_loading(ckpt):
        FileSystemReader(str(ckpt)).read_metadata()
    _, ckpt2, marker2 = tampered(saved, "guard-pt", "common.pt")
    with pytest.raises(UnsafeCheckpoint), guarded_loading(ckpt2):
        torch.load(ckpt2 / "common.pt", weights_only=False)
    assert not marker.exists() and not marker2.exists()
    # outside the guard torch's own reader is back as it was
    assert FileSystemReader(str(saved["run"] / "checkpoints" / "iter_0000001")).read_metadata() is not None


def test_resume_and_init_from_refuse_payloads(saved):
    run_dir, ckpt, marker = tampered(saved, "resume", "distcp-bytes")
    p = run.run_single(run.spec(saved["root"] / "r.json", train={**TRAIN, "steps": 2, "out_dir": str(run_dir)},
                                data={"path": str(saved["corpus"])}), timeout=120)
    assert p.returncode == 2
    assert one_line(p.stderr).startswith(f"error: checkpoint {ckpt} is not safe to load: ")
    assert not marker.exists()

    _, ckpt2, marker2 = tampered(saved, "init", "metadata-stealthy")
    p = run.run_single(run.spec(saved["root"] / "i.json",
                                train={**TRAIN, "out_dir": str(saved["root"] / "init-out"), "init_from": str(ckpt2)},
                                data={"path": str(saved["corpus"])}), timeout=120)
    assert p.returncode == 2
    assert one_line(p.stderr).startswith(f"error: checkpoint {ckpt2} is not safe to load: ")
    assert not marker2.exists()


def test_generate_and_evaluate_refuse_a_stealthy_payload(saved):
    """The stealthy metadata payload returns the genuine metadata: unguarded, generate exits 0."""
    run_dir, ckpt, marker = tampered(saved, "gen", "metadata-stealthy")
    p = run_cli("generate", "--checkpoint", str(run_dir), "--prompt", "The", "--max-new-tokens", "2", timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert one_line(p.stderr) == (f"ufarsap-engine: error: checkpoint {ckpt} is not safe to load: .metadata: it refers "
                                  "to builtins.eval, which is not a checkpoint metadata type")
    assert not marker.exists()
    data = saved["root"] / "held.txt"
    data.write_text("The grey heron is a bird.\n")
    p = run_cli("evaluate", "--checkpoint", str(run_dir), "--data", str(data), timeout=120)
    assert p.returncode == 2 and "is not safe to load" in one_line(p.stderr)
    assert not marker.exists()
