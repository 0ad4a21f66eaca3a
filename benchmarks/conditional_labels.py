"""Conditional training's labels on the embedded corpus: the strictest-plugin rule side by side
with the old mean rule, against the corpus's ground truth (``labels.jsonl``: a document is
harmful when any of its five safety labels is set).

Annotates the embedded corpus with the five safety plugins (``ufarsap_engine.annotate``, exactly
what ``run`` does for a data-side family; an annotation already in ``--out`` is reused), then labels
every document twice:

- strictest (what ``run --set objective.families.safety=conditional`` and the benchmark use):
  ``<|misaligned|>`` when any plugin flags it at any scale (``scoring.is_flagged``);
- mean (the rule before): the mean of the plugins' scores over every scale below the threshold.

and prints, per rule, the share labelled misaligned, precision and recall.

    python benchmarks/conditional_labels.py [--out DIR] [--threshold 0.5] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile

from ufarsap_engine.alignment.conditional import ALIGNED, MISALIGNED
from ufarsap_engine.alignment.data_families import build_marks, embedded_truth, label_quality
from ufarsap_engine.schemas import SCALES

SAFETY = ["safety.toxicity", "safety.privacy", "safety.bias", "safety.misinformation", "safety.adversarial"]


def mean_rule_marks(rows, plugins, threshold: float) -> dict:
    """The old rule: a document is misaligned when the mean of its plugins' scores (all scales) is
    below ``threshold``."""
    docs = {}
    for row in rows:
        vals = [row[f"{p}:{s}"] for p in plugins for s in SCALES if row.get(f"{p}:{s}") is not None]
        mean = sum(vals) / len(vals) if vals else 1.0
        docs[str(row["id"])] = {"prefix": MISALIGNED if mean < threshold else ALIGNED}
    return {"documents": docs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="annotation directory (default: a temporary one)")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ufarsap_engine.annotate import annotate, load_annotations
    from ufarsap_engine.trainer.data import default_corpus_path

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or f"{tmp}/annotations"
        annotate(out, SAFETY, workers=args.workers, note=lambda line: None)
        rows = list(load_annotations(out, SAFETY))
    truth = embedded_truth(default_corpus_path().with_name("labels.jsonl"))
    result = {"documents": len(rows), "threshold": args.threshold, "plugins": SAFETY,
              "strictest": label_quality(build_marks("conditional", rows, SAFETY, args.threshold), truth),
              "mean": label_quality(mean_rule_marks(rows, SAFETY, args.threshold), truth)}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"embedded corpus: {result['documents']} documents, {100 * result['strictest']['harmful_share']:.1f}% "
          f"harmful by its labels; five safety plugins, threshold {args.threshold}")
    print(f"{'rule':<10} {'misaligned':>10} {'precision':>10} {'recall':>8}")
    for rule in ("strictest", "mean"):
        q = result[rule]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{rule:<10} {100 * q['misaligned_share']:>9.1f}% {fmt(q['precision']):>10} {fmt(q['recall']):>8}")


if __name__ == "__main__":
    main()
