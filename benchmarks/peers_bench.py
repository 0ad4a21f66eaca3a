"""Documents/s of the default plugin set through ``score_batch``: before and after the host hands
the safety plugins' results over to the plugins built on them, side by side in one run.

The default set is reflect.crossparadigm, safety.privacy, safety.toxicity (``config.DEFAULT_PLUGINS``).
- before: what the engine did until now: the two safety plugins through the host, and
  reflect.crossparadigm running all five safety detectors itself on the same texts (its old
  hook: ``detected_dimensions`` = the five detectors + the same Eq. 14 combination);
- after: ``score_batch`` on a host with the default set: crossparadigm reads the two selected
  safety plugins' results from ``TextBatch.upstream`` and runs no detector.
One thread, one core (where the OS allows); documents from the embedded corpus (~240 chars).

    python benchmarks/peers_bench.py [--docs 400] [--batch 32] [--repeats 3] [--json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import time

from one_core import pin_one_core  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="best of N passes per variant")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pin_one_core()
    from ufarsap_engine.alignment.scoring import make_sample, score_batch
    from ufarsap_engine.config import DEFAULT_PLUGINS
    from ufarsap_engine.plugin_host import PluginHost
    from ufarsap_engine.schemas import AlignmentState, Horizon, TextBatch
    from ufarsap_plugins.evaldata import corpus_texts

    texts = corpus_texts()
    docs = texts[:: max(1, len(texts) // args.docs)][: args.docs]
    batches = [TextBatch(samples=[make_sample(str(i + j), t) for j, t in enumerate(docs[i:i + args.batch])])
               for i in range(0, len(docs), args.batch)]
    safety_only = [n for n in DEFAULT_PLUGINS if n.startswith("safety.")]
    before_host, after_host = PluginHost(safety_only), PluginHost(DEFAULT_PLUGINS)
    cross = after_host.pm.get_plugin("reflect.crossparadigm")
    state = AlignmentState()

    def before() -> None:
        for b in batches:
            score_batch(before_host, b, Horizon.SHORT, state)
            dims = cross.detected_dimensions([s.text for s in b.samples])
            [cross.combined(d) for d in dims]

    def after() -> None:
        for b in batches:
            score_batch(after_host, b, Horizon.SHORT, state)

    before(), after()  # warm-up: lazy imports, lexicons
    best = {"before": 0.0, "after": 0.0}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        for name, fn in (("before", before), ("after", after)):
            t0 = time.perf_counter()
            fn()
            best[name] = max(best[name], len(docs) / (time.perf_counter() - t0))
    out = {"plugins": DEFAULT_PLUGINS, "docs": len(docs), "batch": args.batch,
           "before_docs_per_s": round(best["before"], 1), "after_docs_per_s": round(best["after"], 1),
           "speedup": round(best["after"] / best["before"], 2)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"default set {','.join(DEFAULT_PLUGINS)}: {len(docs)} docs, batch {args.batch}, best of {args.repeats}")
        print(f"  before (crossparadigm runs the five detectors itself): {out['before_docs_per_s']:8.1f} docs/s")
        print(f"  after  (crossparadigm reads the host's results):       {out['after_docs_per_s']:8.1f} docs/s")
        print(f"  after / before: {out['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
