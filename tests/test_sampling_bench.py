"""The sampling benchmark runs at a tiny size and its three decoders agree on greedy tokens, so
the figures it prints compare like with like (its speed ratios are only printed, never tested)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sampling_bench_runs_and_decoders_agree():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sampling_bench.py"), "--preset", "tiny", "--batch", "4",
         "--new-tokens", "8", "--repeat", "1", "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["preset"] == "tiny" and row["batch"] == 4 and row["new_tokens"] == 8
    assert set(row["tokens_per_s"]) == {"kv_cache", "full_recompute", "transformers"}
    assert all(v > 0 for v in row["tokens_per_s"].values())
    # The cached path and full recompute run the same model on the same tokens: identical greedy output.
    assert row["greedy_sequences_equal"]["cached_vs_full"] == 1.0
