"""Emergence bookkeeping (Table 2 of the paper), computed from the registry alone.

Per evolution run (or a whole scope):

* **discovery rate**: share of rounds that integrated a strategy;
* **effectiveness**: mean objective gain of integrated strategies over the incumbent they
  replaced, on the selection probe set (``evolution.improvement``);
* **generalisability**: mean gain of the same strategies on the second probe set, never used
  for selection (``evolution.gen_improvement``);
* the same numbers **by category** (the origin: explore, exploit, crossover, plugin);

and a PNG of objective vs generation: every evaluated strategy a point, integrated ones
highlighted, the chain of active strategies drawn as a line.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ufarsap_engine.evolution.explore import EVOLUTION_ORIGINS

ORIGIN_COLOURS = {"seed": "black", "explore": "tab:blue", "exploit": "tab:orange", "crossover": "tab:green",
                  "plugin": "tab:purple"}


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def is_integrated(rec) -> bool:
    """Integrated by evolution: an evolution candidate that passed the test and was activated."""
    return (rec.origin in EVOLUTION_ORIGINS and rec.lifecycle in ("active", "retired")
            and rec.scores.get("evolution.integrated") == 1.0)


def report(reg, run_id: str | None = None, out_png: str | Path | None = "evolution.png", *,
           scope: str = "default") -> dict[str, Any]:
    """Bookkeeping of one evolution run (``run_id``) or of every run of ``scope`` (``None``);
    writes the plot to ``out_png`` unless it is ``None`` or there are no candidates. JSON-ready
    (``None`` for no data)."""
    records = [r for r in reg.list(scope=scope, order="asc")
               if (r.origin in EVOLUTION_ORIGINS or r.origin == "seed") and (run_id is None or r.run_id == run_id)]
    cands = [r for r in records if r.origin in EVOLUTION_ORIGINS]
    integrated = [r for r in cands if is_integrated(r)]
    gains = [g for r in integrated if (g := _finite(r.scores.get("evolution.improvement"))) is not None]
    gen_gains = [g for r in integrated if (g := _finite(r.scores.get("evolution.gen_improvement"))) is not None]

    rounds: dict[int, list] = defaultdict(list)
    for r in cands:
        rounds[r.generation].append(r)
    per_round = []
    for gen in sorted(rounds):
        rs = rounds[gen]
        won = [r for r in rs if is_integrated(r)]
        objs = [o for r in rs if (o := _finite(r.scores.get("objective"))) is not None]
        per_round.append({
            "round": gen, "candidates": len(rs), "failed": sum(r.state == "failed" for r in rs),
            "rejected": sum(r.lifecycle == "rejected" for r in rs),
            "integrated_id": won[0].id if won else None,
            "improvement": _finite(won[0].scores.get("evolution.improvement")) if won else None,
            "best_objective": max(objs) if objs else None,
        })

    by_category = {}
    for origin in EVOLUTION_ORIGINS:
        rs = [r for r in cands if r.origin == origin]
        if not rs:
            continue
        won = [r for r in rs if is_integrated(r)]
        by_category[origin] = {
            "proposed": len(rs),
            "evaluated": sum(r.state == "complete" for r in rs),
            "failed": sum(r.state == "failed" for r in rs),
            "integrated": len(won),
            "integration_rate": len(won) / len(rs),
            "effectiveness": _mean([g for r in won if (g := _finite(r.scores.get("evolution.improvement"))) is not None]),
            "generalisability": _mean([g for r in won
                                       if (g := _finite(r.scores.get("evolution.gen_improvement"))) is not None]),
        }

    result: dict[str, Any] = {
        "scope": scope,
        "run_id": run_id,
        "rounds": len(per_round),
        "strategies": len(records),
        "candidates": len(cands),
        "evaluated": sum(r.state == "complete" for r in cands),
        "failed": sum(r.state == "failed" for r in cands),
        "rejected": sum(r.lifecycle == "rejected" for r in cands),
        "integrated": len(integrated),
        "integrated_ids": [r.id for r in integrated],
        "discovery_rate": (sum(p["integrated_id"] is not None for p in per_round) / len(per_round)) if per_round else None,
        "effectiveness": _mean(gains),
        "generalisability": _mean(gen_gains),
        "by_category": by_category,
        "per_round": per_round,
        "png": None,
    }
    if out_png is not None and cands:  # no evolution data: no empty plot
        result["png"] = str(plot(records, out_png, title=f"evolution of scope '{scope}'"
                                 + (f", run {run_id[:8]}" if run_id else "")))
    return result


def plot(records: list, out_png: str | Path, *, title: str = "evolution") -> Path:
    """Objective vs generation: all evaluated strategies, integrated ones as stars, the active
    chain (seeds and integrated strategies) as a line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    try:
        offsets = {"seed": 0.0, "explore": -0.09, "exploit": -0.03, "crossover": 0.03, "plugin": 0.09}
        for origin, colour in ORIGIN_COLOURS.items():
            pts = [(r.generation + offsets[origin], o) for r in records
                   if r.origin == origin and (o := _finite(r.scores.get("objective"))) is not None]
            if pts:
                ax.scatter(*zip(*pts), s=22, c=colour, alpha=0.6, label=f"{origin} ({len(pts)})")
        chain = sorted((r for r in records if (r.origin == "seed" or is_integrated(r))
                        and _finite(r.scores.get("objective")) is not None), key=lambda r: (r.generation, r.id))
        won = [r for r in chain if r.origin != "seed"]
        if chain:
            ax.step([r.generation for r in chain], [r.scores["objective"] for r in chain], where="post",
                    color="grey", lw=1, alpha=0.7, label="active chain")
        if won:
            ax.scatter([r.generation for r in won], [r.scores["objective"] for r in won], s=160, marker="*",
                       c="gold", edgecolors="black", linewidths=0.8, zorder=3, label=f"integrated ({len(won)})")
        n_failed = sum(r.state == "failed" for r in records)
        ax.set_xlabel("generation (evolution round)")
        ax.set_ylabel("objective (higher is better)")
        ax.set_title(title + (f"; {n_failed} failed not shown" if n_failed else ""), fontsize=9)
        ax.grid(alpha=0.3)
        if records:
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def format_report(data: dict[str, Any]) -> str:
    """The report as a short text table (for ``ufarsap-engine evolution report``)."""
    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:+.4f}" if isinstance(v, float) else str(v))

    lines = [
        f"scope {data['scope']}" + (f", run {data['run_id']}" if data["run_id"] else ", all runs"),
        f"rounds {data['rounds']}, candidates {data['candidates']} (evaluated {data['evaluated']}, "
        f"failed {data['failed']}, rejected {data['rejected']}), integrated {data['integrated']}",
        f"discovery rate {'-' if data['discovery_rate'] is None else format(data['discovery_rate'], '.2f')}, "
        f"effectiveness {f(data['effectiveness'])}, generalisability {f(data['generalisability'])}",
        "",
        f"{'category':<10} {'proposed':>8} {'integrated':>10} {'rate':>6} {'effect.':>8} {'general.':>8}",
    ]
    for origin, c in data["by_category"].items():
        lines.append(f"{origin:<10} {c['proposed']:>8} {c['integrated']:>10} {c['integration_rate']:>6.2f} "
                     f"{f(c['effectiveness']):>8} {f(c['generalisability']):>8}")
    if data.get("png"):
        lines += ["", f"plot: {data['png']}"]
    return "\n".join(lines)
