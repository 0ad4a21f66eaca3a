"""Throughput of the built-in plugins on one CPU core: documents per second.

Documents are the embedded corpus records (rendered as the engine would, mean ~240 characters),
scored in batches through each plugin's document hook (token hook for the safety plugins, which
also produces spans). The "safety suite" row runs all five safety plugins on the same batches.
The self/reflect/multi plugins build on the safety plugins' results (``PluginInfo.uses``): their
batches carry the five safety plugins' results (``TextBatch.upstream``, computed before the
clock starts), so their rows are their own cost on top of the suite's, as in ``score_batch``.
Thread pools are pinned to one thread and the process to one core (where the OS allows), so
figures compare across machines with different core counts.

    python benchmarks/plugins_bench.py [--docs 400] [--batch 32] [--plugins a,b] [--json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import importlib
import json
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAFETY = ["safety.toxicity", "safety.privacy", "safety.bias", "safety.misinformation", "safety.adversarial"]
OTHERS = ["self.reward", "self.eval", "multi.consensus", "reflect.crossparadigm", "multi.debate", "reflect.selfrefine"]
# the expensive reflection/debate loops get fewer documents so the run stays short
DOC_CAP = {"reflect.selfrefine": 120, "multi.debate": 200, "reflect.crossparadigm": 200}


def load(name: str):
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["ufarsap_engine"]
    module, cls = eps[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def with_safety_upstream(b):
    """``b`` with the five safety plugins' results attached, as the host hands them over."""
    from ufarsap_engine.alignment.scoring import score_batch
    from ufarsap_engine.plugin_host import PluginHost
    from ufarsap_engine.schemas import AlignmentState, Horizon

    global _SAFETY_HOST
    _SAFETY_HOST = globals().get("_SAFETY_HOST") or PluginHost(SAFETY)
    cells = score_batch(_SAFETY_HOST, b, Horizon.SHORT, AlignmentState())
    upstream: dict = {}
    for (plugin, scale), res in cells.results.items():
        upstream.setdefault(plugin, {})[scale] = res
    return b.model_copy(update={"upstream": upstream})


def run(plugins: list, docs: list[str], batch: int) -> float:
    from ufarsap_engine.alignment.scoring import make_sample
    from ufarsap_engine.schemas import AlignmentState, Horizon, TextBatch

    state = AlignmentState()
    batches = [TextBatch(samples=[make_sample(str(i + j), t) for j, t in enumerate(docs[i:i + batch])])
               for i in range(0, len(docs), batch)]
    if any(p.ufarsap_plugin_info().uses for p in plugins):
        batches = [with_safety_upstream(b) for b in batches]
    t0 = time.perf_counter()
    for b in batches:
        for p in plugins:
            hook = p.ufarsap_score_token if hasattr(p, "ufarsap_score_token") else p.ufarsap_score_document
            hook(batch=b, horizon=Horizon.SHORT, state=state)
    return len(docs) / (time.perf_counter() - t0)


from one_core import pin_one_core  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--plugins", default="", help="comma-separated subset (default: all 11 + the suite)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pin_one_core()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    sys.path.insert(0, str(ROOT))
    from ufarsap_plugins.evaldata import corpus_texts

    texts = corpus_texts()
    step = max(1, len(texts) // args.docs)
    docs = texts[::step][: args.docs]
    names = [n.strip() for n in args.plugins.split(",") if n.strip()] or SAFETY + OTHERS + ["safety suite"]
    rows = []
    for name in names:
        plugins = [load(n) for n in SAFETY] if name == "safety suite" else [load(name)]
        sub = docs[: DOC_CAP.get(name, len(docs))]
        run(plugins, sub[: args.batch], args.batch)  # warm-up: lazy imports, model loading
        dps = run(plugins, sub, args.batch)
        rows.append({"plugin": name, "docs": len(sub), "docs_per_s": round(dps, 1)})
    mean_chars = sum(map(len, docs)) / max(1, len(docs))
    if args.json:
        print(json.dumps({"mean_chars": round(mean_chars), "batch": args.batch, "rows": rows}, indent=2))
    else:
        print(f"one core, batch {args.batch}, mean document {mean_chars:.0f} chars\n")
        print("| plugin | docs | docs/s |\n|---|---|---|")
        for r in rows:
            print(f"| {r['plugin']} | {r['docs']} | {r['docs_per_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
