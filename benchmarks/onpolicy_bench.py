"""What the on-policy phase costs: the same run with and without it, side by side in one go.

Each pair of runs is ``ufarsap-engine run`` with the same plugins, data, seed, preset and steps;
one adds ``--set onpolicy.every=N`` (default 50: a phase before steps 1 and 51 of 100). Prints
each run's wall time (the whole command) and training time (the steps: sampling, judging and
the preference rows included), and the ratio with/without. The two alternate ``--rounds``
times, so that background load on a shared machine hits both alike; the minimum is reported.

    python benchmarks/onpolicy_bench.py                       # tiny and small presets, 100 steps
    python benchmarks/onpolicy_bench.py --presets tiny --steps 200 --every 50 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def one_run(preset: str, steps: int, every: int, plugins: str, work: Path, tag: str) -> dict:
    out = work / tag
    cmd = [sys.executable, "-m", "ufarsap_engine", "run", "--plugins", plugins, "--steps", str(steps),
           "--out", str(out), "--registry", f"sqlite:///{work / 'registry.sqlite'}", "--json",
           "--set", f"model={preset}", "--set", f"onpolicy.every={every}"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{p.stderr[-2000:]}")
    s = json.loads(p.stdout)
    return {"wall_s": s["wall_time_s"], "train_s": s["training"]["train_time_s"], "onpolicy": s.get("onpolicy")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small", help="model presets, comma separated")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--every", type=int, default=50, help="steps between on-policy phases")
    ap.add_argument("--plugins", default="safety.toxicity,safety.privacy")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for preset in args.presets.split(","):
            runs: dict[str, list[dict]] = {"without": [], "with": []}
            for r in range(args.rounds):
                order = ("without", "with") if r % 2 == 0 else ("with", "without")
                for mode in order:
                    runs[mode].append(one_run(preset, args.steps, args.every if mode == "with" else 0,
                                              args.plugins, work, f"{preset}-{mode}-{r}"))
            best = {m: {k: min(x[k] for x in rs) for k in ("wall_s", "train_s")} for m, rs in runs.items()}
            results[preset] = {
                **{f"{m}_{k}": v for m, b in best.items() for k, v in b.items()},
                "ratio_wall": best["with"]["wall_s"] / best["without"]["wall_s"],
                "ratio_train": best["with"]["train_s"] / best["without"]["train_s"],
                "phases": (runs["with"][0]["onpolicy"] or {}).get("phases"),
            }
    if args.json:
        print(json.dumps({"steps": args.steps, "every": args.every, "rounds": args.rounds, "presets": results}, indent=1))
        return 0
    print(f"on-policy phase every {args.every} steps, {args.steps} steps, plugins {args.plugins}, "
          f"min of {args.rounds}")
    print(f"{'preset':8} {'wall without':>13} {'wall with':>10} {'ratio':>6} {'train without':>14} {'train with':>11} {'ratio':>6}")
    for preset, r in results.items():
        print(f"{preset:8} {r['without_wall_s']:12.1f}s {r['with_wall_s']:9.1f}s {r['ratio_wall']:5.2f}x "
              f"{r['without_train_s']:13.1f}s {r['with_train_s']:10.1f}s {r['ratio_train']:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
