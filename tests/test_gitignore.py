"""What runs write is ignored by git, in the repository and in the plugin template."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from helpers import REPO

WRITTEN = ["runs/latest/metrics.jsonl", "runs/20260101-120000/checkpoints/step_5/model.pt",
           "strategies_db/registry.sqlite", "strategies_db/registry.sqlite-wal",
           "strategies_db/registry.sqlite-shm", "other/strategies_db/registry.sqlite"]


def ignored(root, paths):
    out = subprocess.run(["git", "-C", str(root), "check-ignore", "--no-index", *paths],
                         capture_output=True, text=True, timeout=60)
    return set(out.stdout.split())


@pytest.mark.parametrize("where", [".", "examples/plugin-template"])
def test_what_runs_write_is_ignored(tmp_path, where):
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    shutil.copy(REPO / where / ".gitignore", tmp_path / ".gitignore")
    assert ignored(tmp_path, WRITTEN) == set(WRITTEN)
    assert not ignored(tmp_path, ["src/x.py", "pyproject.toml"])
    if where == ".":
        assert not ignored(tmp_path, ["strategies_db/README.md"])  # the folder's README stays tracked
