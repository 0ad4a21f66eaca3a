"""Run the trainer worker from tests: in-process world size 1 (a subprocess running the worker
module without torchrun) or under torchrun, always with a timeout so nothing can hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.setdefault("TOKENIZERS_PARALLELISM", "false")
    e.setdefault("OMP_NUM_THREADS", "1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def spec(path: Path, *, model: dict | None = None, train: dict, data: dict, callbacks=(), objective=None,
         task: str = "train", generate: dict | None = None, policy_phase=None) -> Path:
    """Write a RunSpec JSON (model defaults to the tiny preset)."""
    from ufarsap_engine.trainer.model_config import PRESETS

    body = {
        "task": task,
        "model": model if model is not None else (PRESETS["tiny"] if task == "train" else None),
        "train": {"progress": False, **train},
        "data": data,
        "callbacks": [{"target": c[0], "kwargs": c[1]} for c in callbacks],
    }
    if objective:
        body["objective"] = {"target": objective[0], "kwargs": objective[1]}
    if generate:
        body["generate"] = generate
    if policy_phase:
        body["policy_phase"] = {"target": policy_phase[0], "kwargs": policy_phase[1]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1))
    return path


def run_single(spec_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m ufarsap_engine.trainer.worker --spec`` without torchrun: world size 1."""
    return subprocess.run(
        [sys.executable, "-m", "ufarsap_engine.trainer.worker", "--spec", str(spec_path)],
        env=env(), capture_output=True, text=True, timeout=timeout,
    )


def run_torchrun(spec_path: Path, nproc: int = 2, timeout: float = 180, check: bool = True) -> int:
    from ufarsap_engine.trainer.worker import launch_torchrun

    return launch_torchrun(nproc, spec_path, timeout=timeout, env=env(), check=check)


def metrics(out_dir: Path) -> list[dict]:
    lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def losses(out_dir: Path) -> list[float]:
    return [m["loss"] for m in metrics(out_dir)]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]
