"""The run directory: a resume falls back to the previous checkpoint when the newest fails
verification, a failed attempt never overwrites a completed run's summary, and two runs on one
--out are refused (while a stale lock from a kill -9 never blocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import run_cli
from ufarsap_engine.errors import UserError
from ufarsap_engine.run_dir import locked_run_dir

pytestmark = pytest.mark.slow


def run(root, out, *args, steps=4, timeout=300):
    return run_cli("run", "--plugins", "none", "--steps", str(steps), "--out", str(out),
                   "--registry", f"sqlite:///{root / 'r.sqlite'}", "--set", "train.progress=false",
                   "--set", "train.micro_batch_size=2", "--set", "train.global_batch_size=2", *args,
                   cwd=root, timeout=timeout)


def losses(out):
    return {m["step"]: m["loss"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def corrupt(ckpt):
    shard = sorted(ckpt.glob("*.distcp"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))


def test_resume_falls_back_to_the_previous_checkpoint_and_keeps_a_completed_summary(tmp_path):
    ref, out, out2 = tmp_path / "ref", tmp_path / "out", tmp_path / "out2"
    assert run(tmp_path, ref, steps=6).returncode == 0
    for d in (out, out2):
        p = run(tmp_path, d, "--set", "train.save_interval=2", steps=6)
        assert p.returncode == 0, p.stderr[-2000:]
    ck = out / "checkpoints"
    assert sorted(x.name for x in ck.glob("iter_*")) == ["iter_0000004", "iter_0000006"]  # keep_last=2
    completed = (out / "summary.json").read_text()
    assert json.loads(completed)["status"] == "complete"

    # Newest and previous both broken: the resume fails, the completed summary stays.
    corrupt(ck / "iter_0000006")
    (ck / "iter_0000004" / "engine_state.json").write_text("{}")
    p = run(tmp_path, out, "--set", "train.save_interval=2", steps=6)
    assert p.returncode == 2
    assert "corrupt checkpoint" in p.stderr and "Traceback" not in p.stderr
    assert (out / "summary.json").read_text() == completed
    assert json.loads((out / "summary.failed.json").read_text())["status"] == "failed"

    # Only the newest broken: one line says so, the run continues from step 4 exactly.
    corrupt(out2 / "checkpoints" / "iter_0000006")
    p = run(tmp_path, out2, "--set", "train.save_interval=2", steps=6)
    assert p.returncode == 0, p.stderr[-2000:]
    notes = [x for x in p.stderr.splitlines() if x.startswith("note:")]
    assert len(notes) == 2 and "resuming from the previous checkpoint" in notes[1], p.stderr[-2000:]
    assert str(out2 / "checkpoints" / "iter_0000004") in notes[1]
    assert json.loads((out2 / "summary.json").read_text())["training"]["start_step"] == 4
    assert losses(out2) == losses(ref)


def test_second_run_on_one_out_is_refused_and_a_killed_holder_does_not_block(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "ufarsap_engine", "run", "--plugins", "none", "--steps", "100000", "--out", str(out),
         "--registry", f"sqlite:///{tmp_path / 'r.sqlite'}", "--set", "train.progress=false"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        p = run(tmp_path, out, steps=2)
        assert p.returncode == 2
        assert [x for x in p.stderr.splitlines() if "error" in x] == [
            f"ufarsap-engine: error: run directory {out} is in use by pid {first.pid} "
            "(wait for that run to end, or choose another --out)"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / ".lock").exists()  # the lock file of a dead process stays behind ...
    with locked_run_dir(out):  # ... and blocks nothing: the lock died with its process
        pass


def test_lock_is_released_by_kill_9(tmp_path):
    code = ("import sys, time; from ufarsap_engine.run_dir import locked_run_dir\n"
            "with locked_run_dir(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"is in use by pid {holder.pid} "):
            with locked_run_dir(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with locked_run_dir(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
