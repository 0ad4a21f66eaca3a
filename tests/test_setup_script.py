"""scripts/setup.sh says which step it is on and lets pip show its progress (no -q silence)."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import REPO

# Stands in for the interpreter: records each call; `-c` answers the torch check with $TORCH_RC.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1" = "-c" ]; then
    case "$2" in *torch*) exit "${TORCH_RC:-0}";; *) echo /fake/prefix;; esac
fi
echo "fake pip output: $*"
"""


@pytest.mark.parametrize("torch_installed", [True, False])
def test_setup_reports_steps_and_pip_progress(tmp_path, torch_installed):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PYTHON": str(fake), "CALLS": str(calls), "TORCH_RC": "0" if torch_installed else "1"}
    res = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "==> setup [1/2] torch 2.13.0" in res.stdout and "/fake/prefix" in res.stdout
    assert "==> setup [2/2] ufarsap-engine" in res.stdout and "==> setup done" in res.stdout
    assert "fake pip output" in res.stdout  # pip's own output reaches the user
    pip_calls = [c for c in calls.read_text().splitlines() if c.startswith("-m pip")]
    assert all(" -q" not in c for c in pip_calls), pip_calls
    assert any("install" in c and '-e .[test,eval,tensorboard,mlflow]' in c for c in pip_calls), pip_calls
    torch_installs = [c for c in pip_calls if "torch==2.13.0" in c]
    assert (torch_installs == []) == torch_installed  # idempotent: an installed torch is kept
    assert ("already installed" in res.stdout) == torch_installed
