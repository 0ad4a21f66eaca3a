"""The five safety detectors give exactly the results they gave before they were made faster.

``tests/data/detector_golden.json`` holds every scale hook's results (sample scores, spans,
sentence unit scores) for a fixed subset of the embedded corpus, computed through the plugin
host at the annotation horizon by the code before the speed work. The test scores the same
documents with today's code, in a different batching and with the hooks also called alone, and
compares field by field (floats to 1e-9).

Regenerate (only when a detector's behaviour is meant to change, and say so in the commit):
    python tests/test_detector_golden.py --write [--all PATH]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "data" / "detector_golden.json"
SAFETY = ["safety.adversarial", "safety.bias", "safety.misinformation", "safety.privacy", "safety.toxicity"]
SCALES = ["token", "sentence", "document", "conversation"]
#: Every 11th document of the embedded corpus (plain texts, prompt/response pairs, conversations).
STRIDE = 11
TOL = 1e-9


def corpus_docs(stride: int = STRIDE):
    """``(id, text, prompt, messages)`` of every ``stride``-th embedded-corpus document, read as
    ``annotate`` reads them."""
    from ufarsap_engine.trainer.data import DataSpec, read_documents

    docs = read_documents(DataSpec(path=None))
    return [(str(d.doc_id), d.text, d.prompt, d.messages) for d in docs[::stride]]


def _batch(docs):
    from ufarsap_engine.alignment.scoring import make_sample
    from ufarsap_engine.schemas import Message, TextBatch

    return TextBatch(samples=[make_sample(i, t, prompt=p, messages=[Message(**m) for m in msgs] if msgs else None)
                              for i, t, p, msgs in docs])


def _record(res, k: int) -> dict:
    return {"score": res.sample_scores[k],
            "spans": None if res.spans is None else [[s.start, s.end, s.severity, s.label] for s in res.spans[k]],
            "units": None if res.unit_scores is None else list(res.unit_scores[k])}


def hook_results(docs, batch_size: int = 64, hooks=SCALES) -> dict[str, dict[str, dict[str, dict]]]:
    """``{doc id: {plugin: {scale: {score, spans, units}}}}`` for every scale hook in ``hooks``."""
    from ufarsap_engine.annotate.columns import HORIZON
    from ufarsap_engine.plugin_host import PluginHost
    from ufarsap_engine.schemas import AlignmentState, ScaleScores

    host = PluginHost(SAFETY, strict=True)
    for n in host.names:
        host.call("ufarsap_configure", only=[n], params={})
    out: dict[str, dict] = {d[0]: {n: {} for n in SAFETY} for d in docs}
    for a in range(0, len(docs), batch_size):
        part = docs[a:a + batch_size]
        batch = _batch(part)
        for scale in hooks:
            results = host.call(f"ufarsap_score_{scale}", expect=ScaleScores, batch=batch, horizon=HORIZON,
                                state=AlignmentState())
            for plugin, res in results.items():
                for k, d in enumerate(part):
                    out[d[0]][plugin][scale] = _record(res, k)
    return out


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= TOL
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _diffs(expected: dict, got: dict) -> list[str]:
    out = []
    for doc, plugins in expected.items():
        for plugin, scales in plugins.items():
            for scale, want in scales.items():
                have = got.get(doc, {}).get(plugin, {}).get(scale)
                for field in ("score", "spans", "units"):
                    if have is None or not _close(want[field], have[field]):
                        out.append(f"{doc} {plugin}:{scale} {field}: want {want[field]!r}, got "
                                   f"{None if have is None else have[field]!r}")
    return out


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def docs(golden):
    docs = corpus_docs()
    assert [d[0] for d in docs] == list(golden["results"]), "the embedded corpus changed; regenerate the golden file"
    return docs


def test_golden_covers_every_kind_of_result(golden):
    """The subset exercises what the speed work touches: spans, low scores, conversations."""
    res = golden["results"]
    for plugin in SAFETY:
        assert sum(r[plugin]["token"]["spans"] != [] for r in res.values()) >= 3, plugin
        assert sum(r[plugin]["document"]["score"] < 0.5 for r in res.values()) >= 3, plugin
        assert sum(r[plugin]["conversation"]["score"] is not None for r in res.values()) >= 10, plugin


def test_hooks_reproduce_golden_results(golden, docs):
    got = hook_results(docs, batch_size=37)  # another batching than the golden run's
    problems = _diffs(golden["results"], got)
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"


@pytest.mark.parametrize("scale", SCALES)
def test_each_hook_alone_reproduces_golden_results(golden, docs, scale):
    """A hook called without the others (no shared per-batch work to lean on) gives the same."""
    part = docs[:48]
    got = hook_results(part, batch_size=16, hooks=[scale])
    want = {d[0]: {p: {scale: golden["results"][d[0]][p][scale]} for p in SAFETY} for d in part}
    problems = _diffs(want, got)
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="write the detectors' golden results")
    ap.add_argument("--write", action="store_true", help=f"write {GOLDEN.name}")
    ap.add_argument("--all", metavar="PATH", help="also write the results of every corpus document to PATH")
    ap.add_argument("--check", metavar="PATH", help="compare every corpus document with a file written by --all")
    args = ap.parse_args(argv)
    if args.write:
        docs = corpus_docs()
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({"stride": STRIDE, "results": hook_results(docs)}, separators=(",", ":")) + "\n",
                          encoding="utf-8")
        print(f"{GOLDEN}: {len(docs)} documents")
    if args.all:
        docs = corpus_docs(1)
        Path(args.all).write_text(json.dumps({"stride": 1, "results": hook_results(docs)}) + "\n", encoding="utf-8")
        print(f"{args.all}: {len(docs)} documents")
    if args.check:
        want = json.loads(Path(args.check).read_text(encoding="utf-8"))["results"]
        docs = corpus_docs(1)
        problems = _diffs(want, hook_results(docs))
        print(f"{len(docs)} documents, {len(problems)} differences", *problems[:20], sep="\n")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
