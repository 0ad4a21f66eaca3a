"""Annotation throughput: documents/s of the five safety plugins with 1 and 2 worker processes.

Runs ``ufarsap_engine.annotate.annotate`` on the embedded corpus's documents (every scale the
plugins serve at the short horizon, exactly as ``ufarsap-engine annotate`` does) into fresh
temporary directories, once per worker count, and prints the rates side by side with their
ratio. The rate is over the scoring phase with a warm pool (each worker has built its plugin
host and made its first call; that start-up is printed apart), and includes writing the shards.
``--breakdown`` adds where one process spends its time: seconds per plugin and scale hook.
The load average and each worker's share of a core (its CPU seconds over the scoring time) are
printed with the figures: on a shared machine they are lower bounds.

    python benchmarks/annotate_bench.py [--docs 0 (all)] [--batch-size 64] [--breakdown] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SAFETY = ["safety.toxicity", "safety.privacy", "safety.bias", "safety.misinformation", "safety.adversarial"]
TARGET_RATE, TARGET_RATIO = 2000.0, 1.8


def corpus(limit: int, path: Path) -> int:
    """Write the first ``limit`` (0: all) embedded corpus records to ``path``; their count."""
    from ufarsap_engine.data.corpus import default_corpus_path

    lines = [ln for ln in default_corpus_path().read_text(encoding="utf-8").splitlines() if ln.strip()]
    lines = lines[:limit] if limit else lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def breakdown(data: Path, batch_size: int) -> dict[str, float]:
    """Seconds per plugin and scale hook, in this process, over the same documents."""
    from ufarsap_engine.alignment.scoring import make_sample
    from ufarsap_engine.annotate.columns import HORIZON
    from ufarsap_engine.plugin_host import PluginHost
    from ufarsap_engine.schemas import SCALES, AlignmentState, Message, TextBatch
    from ufarsap_engine.trainer.data import DataSpec, read_documents

    docs = read_documents(DataSpec(path=str(data)))
    host = PluginHost(SAFETY)
    for n in host.names:
        host.call("ufarsap_configure", only=[n], params={})
    batches = [TextBatch(samples=[make_sample(d.doc_id, d.text, prompt=d.prompt,
                                              messages=[Message(**m) for m in d.messages] if d.messages else None)
                                  for d in docs[i:i + batch_size]]) for i in range(0, len(docs), batch_size)]
    state, seconds = AlignmentState(), {}
    host.call("ufarsap_score_document", batch=batches[0], horizon=HORIZON, state=state)  # warm-up
    for name in SAFETY:
        for scale in SCALES:
            t0 = time.perf_counter()
            for b in batches:
                host.call(f"ufarsap_score_{scale}", only=[name], batch=b, horizon=HORIZON, state=state)
            seconds[f"{name}:{scale}"] = round(time.perf_counter() - t0, 3)
    return seconds


def per_plugin_ms(seconds: dict[str, float], documents: int) -> dict[str, float]:
    """Milliseconds per document of each plugin, its scale hooks together."""
    out: dict[str, float] = {}
    for key, sec in seconds.items():
        name = key.split(":")[0]
        out[name] = out.get(name, 0.0) + 1000.0 * sec / max(1, documents)
    return {k: round(v, 3) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=0, help="documents of the embedded corpus (0: all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--breakdown", action="store_true", help="also time each plugin's scale hooks")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from ufarsap_engine.annotate import annotate

    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="annotate-bench-") as tmp:
        data = Path(tmp) / "docs.jsonl"
        n = corpus(args.docs, data)
        for workers in (1, 2):
            s = annotate(Path(tmp) / f"w{workers}", SAFETY, data=str(data), workers=workers,
                         batch_size=args.batch_size, note=lambda line: None)
            results[str(workers)] = {k: s[k] for k in ("docs_per_s", "scoring_s", "worker_cpu_s", "startup_s", "wall_s")}
        seconds = breakdown(data, args.batch_size) if args.breakdown else None
    load_after = os.getloadavg()
    r1, r2 = results["1"]["docs_per_s"], results["2"]["docs_per_s"]
    report = {
        "documents": n, "plugins": SAFETY, "batch_size": args.batch_size, "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "workers": results, "ratio_2_over_1": round(r2 / r1, 2),
        "target": {"docs_per_s_2_workers": TARGET_RATE, "ratio": TARGET_RATIO,
                   "met": r2 >= TARGET_RATE and r2 / r1 >= TARGET_RATIO},
        "hook_seconds_one_process": seconds,
        "plugin_ms_per_doc_one_process": per_plugin_ms(seconds, n) if seconds else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"annotate, five safety plugins, {n} embedded-corpus documents, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'':22}{'1 worker':>12}{'2 workers':>12}{'ratio':>8}")
    print(f"{'documents/s':22}{r1:>12.1f}{r2:>12.1f}{r2 / r1:>8.2f}")
    print(f"{'scoring s':22}{results['1']['scoring_s']:>12.2f}{results['2']['scoring_s']:>12.2f}")
    busy = [results[w]["worker_cpu_s"] / (int(w) * results[w]["scoring_s"]) for w in ("1", "2")]
    print(f"{'worker CPU s':22}{results['1']['worker_cpu_s']:>12.2f}{results['2']['worker_cpu_s']:>12.2f}")
    print(f"{'CPU share per worker':22}{busy[0]:>12.0%}{busy[1]:>12.0%}   (below 100%: the cores were busy elsewhere)")
    print(f"{'start-up s (warm-up)':22}{results['1']['startup_s']:>12.2f}{results['2']['startup_s']:>12.2f}")
    print(f"target: >= {TARGET_RATE:.0f} documents/s with 2 workers and >= {TARGET_RATIO}x: "
          f"{'met' if report['target']['met'] else 'not met'}")
    if seconds:
        total = sum(seconds.values())
        print(f"one process, seconds per plugin and scale hook ({total:.1f} s in all, "
              f"{n / total:.0f} documents/s):")
        for key, sec in sorted(seconds.items(), key=lambda kv: -kv[1]):
            print(f"  {key:36}{sec:>8.2f} s  {100 * sec / total:5.1f}%")
        print("one process, ms per document and plugin (all its scale hooks; a text analysed for one "
              "scale is reused by the others):")
        for name, ms in sorted(per_plugin_ms(seconds, n).items(), key=lambda kv: -kv[1]):
            print(f"  {name:36}{ms:>8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
