"""Whole-run wall time: ``ufarsap-engine run`` with MLE only next to the same run with the five
safety plugins on raw data (annotated in the background ahead of the steps) and on an
annotation made once beforehand (``--data DIR``), side by side.

Each run is a fresh process with a fresh run directory and registry, on the embedded corpus,
with the same seed, model preset and steps; the aligned run starts with no annotation, so its
wall time includes annotating the documents it trains on (and whatever else the background
pool gets through before the run ends). Runs alternate (``--repeats`` pairs) so that background
load hits both alike; the median of each is compared.

    python benchmarks/run_bench.py                     # 300 steps, tiny preset
    python benchmarks/run_bench.py --steps 100 --repeats 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAFETY = "safety.toxicity,safety.privacy,safety.bias,safety.misinformation,safety.adversarial"
TARGET_RATIO = 1.5


def one_run(plugins: str, args, root: Path, tag: str, data: Path | None = None) -> dict:
    out = root / tag
    cmd = [sys.executable, "-m", "ufarsap_engine", "run", "--plugins", plugins, "--steps", str(args.steps),
           "--set", f"model={args.preset}", "--set", f"annotate_workers={args.annotate_workers}", "--out", str(out),
           "--registry", f"sqlite:///{root / (tag + '.sqlite')}", "--json"]
    if data is not None:
        cmd += ["--data", str(data)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run_bench: `{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    summary = json.loads(proc.stdout)
    return {"wall_s": wall, "status": summary.get("status")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--plugins", default=SAFETY, help="the aligned run's plugins")
    ap.add_argument("--repeats", type=int, default=2, help="pairs of runs (MLE, aligned), alternating")
    ap.add_argument("--annotate-workers", type=int, default=2, help="the aligned run's annotate_workers")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="run_bench_"))
    from ufarsap_engine.annotate import annotate
    from ufarsap_engine.trainer.data import default_corpus_path

    t0 = time.perf_counter()  # the annotate-once path: `ufarsap-engine annotate`, then `run --data DIR`
    annotate(root / "annotated", args.plugins.split(","), data=str(default_corpus_path()), workers=2,
             note=lambda line: None)
    annotate_s = time.perf_counter() - t0
    walls: dict[str, list[float]] = {"mle": [], "aligned": [], "annotated": []}
    for r in range(args.repeats):
        walls["mle"].append(one_run("none", args, root, f"mle{r}")["wall_s"])
        walls["aligned"].append(one_run(args.plugins, args, root, f"aligned{r}")["wall_s"])
        walls["annotated"].append(one_run(args.plugins, args, root, f"annotated{r}", root / "annotated")["wall_s"])
    res = {"steps": args.steps, "preset": args.preset, "plugins": args.plugins.split(","),
           "mle_wall_s": statistics.median(walls["mle"]), "aligned_wall_s": statistics.median(walls["aligned"]),
           "annotated_wall_s": statistics.median(walls["annotated"]), "annotate_once_s": annotate_s,
           "walls": walls, "load_average": os.getloadavg()}
    res["ratio"] = res["aligned_wall_s"] / res["mle_wall_s"]
    res["ratio_annotated"] = res["annotated_wall_s"] / res["mle_wall_s"]
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{args.steps}-step runs, preset {args.preset}, median of {args.repeats}, load average "
          f"{res['load_average'][0]:.1f}")
    print(f"  MLE (--plugins none)                     {res['mle_wall_s']:8.1f} s")
    print(f"  five safety plugins, background annotation {res['aligned_wall_s']:6.1f} s   "
          f"{res['ratio']:.2f}x MLE (target <= {TARGET_RATIO}x)")
    print(f"  five safety plugins, --data annotated DIR   {res['annotated_wall_s']:6.1f} s   "
          f"{res['ratio_annotated']:.2f}x MLE (annotating it once took {annotate_s:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
