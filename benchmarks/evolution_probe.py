"""Adaptive evolution with the built-in plugins on the embedded probe sets (no model).

    python benchmarks/evolution_probe.py --rounds 5 --out runs/evolution-bench

Writes a fresh SQLite registry, runs the rounds, prints each round, the emergence report
(discovery rate, effectiveness, generalisability by category) and where the plot went; the
JSON report lands in OUT/report.json. Plugins that fail to import are failed candidates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ufarsap_engine.config import DEFAULT_PLUGINS
from ufarsap_engine.evolution import Evolution, EvolutionConfig, ProbeEvaluator, format_report, report
from ufarsap_registry import open_registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--plugins", default=",".join(DEFAULT_PLUGINS), help="seed strategy's plugins")
    ap.add_argument("--per-category", type=int, default=12, help="labelled-bad probes per harm category")
    ap.add_argument("--out", default="runs/evolution-bench")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "registry.sqlite"
    db.unlink(missing_ok=True)
    t0 = time.perf_counter()
    from ufarsap_engine.evolution import default_probe_sets

    dev, test = default_probe_sets(per_category=args.per_category, seed=args.seed)
    cfg = EvolutionConfig(population_size=args.population, seed=args.seed, default_plugins=args.plugins.split(","))
    with open_registry(f"sqlite:///{db}") as reg, Evolution(reg, ProbeEvaluator(dev, test, seed=args.seed), cfg) as evo:
        for res in evo.run(args.rounds):
            print(f"{res.summary()} [{res.seconds:.1f}s]")
        run_id = evo.run_id
        data = report(reg, run_id, out / "evolution.png")
    (out / "report.json").write_text(json.dumps(data, indent=2))
    print()
    print(format_report(data))
    print(f"\n{args.rounds} rounds in {time.perf_counter() - t0:.1f}s; registry {db}")


if __name__ == "__main__":
    main()
