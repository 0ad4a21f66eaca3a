"""SIGINT/SIGTERM to a real `run` mid-training: exit 130/143 with one line naming the resume
command, a checkpoint at the stop step, the summary and the registry row say "interrupted", and
the resume (the command it printed) continues with the losses of an uninterrupted run; also
under --nproc 2 (the launcher forwards the signal, the ranks agree on the stop step)."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from helpers import run_cli

pytestmark = pytest.mark.slow

STEPS = 40


def args(root, out, *extra):
    return ["run", "--plugins", "none", "--steps", str(STEPS), "--out", str(out),
            "--registry", f"sqlite:///{root / 'r.sqlite'}", "--set", "train.progress=false",
            "--set", "train.micro_batch_size=1", "--set", "train.global_batch_size=2", *extra]


def losses(out):
    return [m["loss"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def interrupt_run(root, argv, out, sig, after_steps=5, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ufarsap_engine", *argv], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= after_steps):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    p = run_cli(*args(root, root / "ref"), cwd=root, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return root, losses(root / "ref")


def check_interrupted(root, out, argv, rc, err, sig):
    assert rc == 128 + sig, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert last.endswith(f"saved; resume with: ufarsap-engine {shlex.join(argv)}"), err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped = summary["interrupted"]
    assert stopped["signal"] == signal.Signals(sig).name and 5 <= stopped["step"] < STEPS
    assert stopped["checkpoint"] == str(out / "checkpoints" / f"iter_{stopped['step']:07d}")
    assert (out / "checkpoints" / "latest").read_text().strip() == f"iter_{stopped['step']:07d}"
    assert last.startswith(f"ufarsap-engine: interrupted by {signal.Signals(sig).name} at step {stopped['step']}; ")
    with sqlite3.connect(root / "r.sqlite") as db:
        row = db.execute("SELECT status FROM runs WHERE id = ?", (summary["run_id"],)).fetchone()
        state = db.execute("SELECT state, reason FROM strategies WHERE id = ?", (summary["strategy_id"],)).fetchone()
    assert row == ("interrupted",)
    assert state[0] == "failed" and state[1].startswith("interrupted by")
    return stopped["step"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_marks_and_resumes_exactly(reference, sig):
    root, ref = reference
    out = root / f"run-{sig.name}"
    argv = args(root, out)
    rc, err = interrupt_run(root, argv, out, sig)
    step = check_interrupted(root, out, argv, rc, err, sig)
    assert losses(out)[:step] == ref[:step]
    p = run_cli(*argv, cwd=root, timeout=600)  # the printed resume command
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["training"]["start_step"] == step
    assert losses(out) == ref


def test_sigterm_under_torchrun_every_rank_stops_at_one_step(reference):
    root, ref = reference
    out = root / "run-nproc2"
    argv = args(root, out, "--nproc", "2")
    rc, err = interrupt_run(root, argv, out, signal.SIGTERM)
    step = check_interrupted(root, out, argv, rc, err, signal.SIGTERM)
    p = run_cli(*argv, cwd=root, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    got = losses(out)
    assert len(got) == STEPS
    # DP2 sums the same tokens in another order than one process: equal to rounding.
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, ref)), (step, got, ref)


def test_checkpoints_are_periodic_in_time_by_default(tmp_path):
    """Without any step interval, a checkpoint is written once train.save_interval_s has passed
    (default 10 minutes): a crash loses minutes, not the run."""
    from trainer_helpers import run
    from trainer_helpers.corpus import write_jsonl
    from ufarsap_engine.trainer.model_config import TrainConfig

    assert TrainConfig().save_interval_s == 600 and TrainConfig().save_interval == 0
    corpus = write_jsonl(tmp_path / "c.jsonl", 60)
    out = tmp_path / "out"
    spec = run.spec(tmp_path / "s.json", data={"path": str(corpus)},
                    train={"steps": 4, "micro_batch_size": 2, "global_batch_size": 2, "out_dir": str(out),
                           "save_interval_s": 1e-6, "keep_last": 10})
    p = run.run_single(spec)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(x.name for x in (out / "checkpoints").glob("iter_*")) == [f"iter_{i:07d}" for i in range(1, 5)]
