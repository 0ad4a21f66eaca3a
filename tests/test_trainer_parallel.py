"""The same checkpoint trained at TP=1, TP=2, PP=2 and DP=2 gives the same losses; weights change
every step; a SIGKILLed run resumes exactly; a TP=1 checkpoint resumes at TP=2 and PP=2."""

from __future__ import annotations

import json
import shutil

import pytest

from trainer_helpers import run
from trainer_helpers.corpus import write_jsonl

pytestmark = pytest.mark.slow

TRAIN = {"micro_batch_size": 2, "global_batch_size": 4, "clip_grad": 1.0, "lr": 3e-3, "min_lr": 3e-4}


def rel_close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol * max(abs(x), abs(y), 1e-12) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A corpus, a step-0 checkpoint (common starting weights), and the TP=1 reference run."""
    root = tmp_path_factory.mktemp("trainer_parallel")
    corpus = write_jsonl(root / "corpus.jsonl", 300, kind="mixed")
    data = {"path": str(corpus)}
    p = run.run_single(run.spec(root / "base.json", train={**TRAIN, "steps": 0, "out_dir": str(root / "base")}, data=data))
    assert p.returncode == 0, p.stderr[-3000:]
    ckpt = root / "base" / "checkpoints" / "iter_0000000"
    assert (ckpt / "MANIFEST.json").exists()
    ref = root / "tp1"
    spec = run.spec(
        root / "tp1.json",
        train={**TRAIN, "steps": 3, "out_dir": str(ref), "init_from": str(ckpt), "log_param_norm": True},
        data=data,
        callbacks=[("trainer_helpers.probes:ParamProbe", {"out": str(root / "tp1_norms.json")})],
    )
    p = run.run_single(spec)
    assert p.returncode == 0, p.stderr[-3000:]
    return {"root": root, "data": data, "ckpt": ckpt, "ref": run.metrics(ref)}


def test_reference_run_changes_weights_every_step(base):
    norms = json.loads((base["root"] / "tp1_norms.json").read_text())
    assert len(norms) == 4
    assert all(a != b for a, b in zip(norms, norms[1:])), norms
    assert [m["step"] for m in base["ref"]] == [1, 2, 3]
    assert all(m["update_ok"] for m in base["ref"])


@pytest.mark.parametrize("layout", ["tp2", "pp2", "dp2"])
def test_layout_matches_tp1(base, layout):
    root = base["root"]
    tp, pp = {"tp2": (2, 1), "pp2": (1, 2), "dp2": (1, 1)}[layout]
    out = root / layout
    spec = run.spec(
        root / f"{layout}.json",
        train={**TRAIN, "steps": 3, "tp": tp, "pp": pp, "out_dir": str(out), "init_from": str(base["ckpt"]),
               "log_param_norm": True},
        data=base["data"],
        callbacks=[("trainer_helpers.probes:ParamProbe", {"out": str(root / f"{layout}_norms.json")})],
    )
    assert run.run_torchrun(spec, nproc=2, timeout=240) == 0
    got = run.metrics(out)
    ref = base["ref"]
    assert rel_close([m["loss"] for m in got], [m["loss"] for m in ref]), (got, ref)
    assert rel_close([m["grad_norm"] for m in got], [m["grad_norm"] for m in ref], 1e-4)
    assert rel_close([m["param_norm"] for m in got], [m["param_norm"] for m in ref])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"]["dp"] == (2 if layout == "dp2" else 1)
    norms = json.loads((root / f"{layout}_norms.json").read_text())
    assert all(a != b for a, b in zip(norms, norms[1:]))


@pytest.fixture(scope="module")
def uninterrupted(base):
    root = base["root"]
    out = root / "full"
    spec = run.spec(
        root / "full.json",
        train={**TRAIN, "steps": 8, "save_interval": 2, "keep_last": 10, "out_dir": str(out), "init_from": str(base["ckpt"])},
        data=base["data"],
    )
    p = run.run_single(spec)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_sigkill_then_resume_continues_exactly(base, uninterrupted):
    root = base["root"]
    out = root / "killed"
    train = {**TRAIN, "steps": 8, "save_interval": 2, "keep_last": 10, "out_dir": str(out), "init_from": str(base["ckpt"])}
    record = ("trainer_helpers.probes:RecordState", {"out": str(root / "record.json")})
    spec = run.spec(root / "killed.json", train=train, data=base["data"],
                    callbacks=[record, ("trainer_helpers.probes:KillAt", {"step": 5})])
    p = run.run_single(spec)
    assert p.returncode == -9, (p.returncode, p.stderr[-2000:])
    assert (out / "checkpoints" / "latest").read_text().strip() == "iter_0000004"
    assert len(run.metrics(out)) == 5  # step 5 ran but was never checkpointed

    spec = run.spec(root / "killed.json", train=train, data=base["data"], callbacks=[record])
    p = run.run_single(spec)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = run.metrics(out)
    full = run.metrics(uninterrupted)
    assert [m["step"] for m in resumed] == list(range(1, 9))
    assert [m["loss"] for m in resumed] == [m["loss"] for m in full]  # bit for bit
    assert [m["lr"] for m in resumed] == [m["lr"] for m in full]
    assert [m["grad_norm"] for m in resumed] == [m["grad_norm"] for m in full]
    rec = json.loads((root / "record.json").read_text())
    assert rec["restored"] == {"seen": [1, 2, 3, 4]}  # extra_state came back from the checkpoint
    assert rec["seen"] == list(range(1, 9))


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
def test_tp1_checkpoint_resumes_at_other_layout(base, uninterrupted, layout):
    """Full state (model + optimizer + scheduler + data position) saved at TP=1, resumed at
    TP=2 / PP=2: the remaining steps give the same losses."""
    root = base["root"]
    out = root / f"reshard_{layout}"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(uninterrupted / "checkpoints" / "iter_0000002", out / "checkpoints" / "iter_0000002")
    (out / "checkpoints" / "latest").write_text("iter_0000002")
    tp, pp = (2, 1) if layout == "tp2" else (1, 2)
    spec = run.spec(root / f"reshard_{layout}.json",
                    train={**TRAIN, "steps": 8, "tp": tp, "pp": pp, "out_dir": str(out)}, data=base["data"])
    assert run.run_torchrun(spec, nproc=2, timeout=240) == 0
    got = run.metrics(out)
    full = run.metrics(uninterrupted)
    assert [m["step"] for m in got] == list(range(3, 9))
    assert rel_close([m["loss"] for m in got], [m["loss"] for m in full[2:]])
