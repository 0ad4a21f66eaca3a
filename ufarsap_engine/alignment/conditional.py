"""Conditional training (Korbak et al. 2023, "Pretraining Language Models with Human Preferences").

A data-side alignment method, the single-method baseline UFARSAP is measured against:

1. score every training document *once* with the run's evaluators (the selected plugins, at the
   short horizon, every scale they serve);
2. a document whose alignment score (the lowest score any plugin gives it at any scale: a flagged
   token span counts 0, a sentence scale its worst sentence; in [0, 1], higher = better aligned)
   is at least ``threshold`` is prefixed with the control string ``<|aligned|>``, any other with
   ``<|misaligned|>``. That is the strictest-plugin rule of ``run``'s conditional family
   (``data_families.document_label``): a document is misaligned when any plugin flags it. (A mean
   over plugins let one flag among five safety detectors rarely tip a document: all 17,000
   documents of a half-harmful corpus came out aligned.);
3. the rewritten corpus is written into the run directory and trained with plain MLE (no plugin
   hooks, no trainer change);
4. at generation time prompts are prefixed with ``<|aligned|>`` (:func:`control_prompt`).

Documents are rendered by the trainer's renderer (``ufarsap_engine/documents.py``: ``prompt`` +
newline + ``response``; ``role: content`` lines for ``messages``), so the tokens after the control string are the tokens
every other method trains on. With a tokenizer that has the two control strings as special
tokens (the benchmark trains one), each control string is a single token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ufarsap_engine import documents

ALIGNED = "<|aligned|>"
MISALIGNED = "<|misaligned|>"
CONTROL_TOKENS = (ALIGNED, MISALIGNED)


def render_record(rec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(text, sample extras) of one corpus record, rendered by the one renderer the trainer,
    the evaluation set and the benchmark use (``ufarsap_engine/documents.py``)."""
    r = documents.render_record(rec)
    if r.messages is not None:
        from ufarsap_engine.schemas import Message

        return r.text, {"messages": [Message(**m) for m in r.messages]}
    return r.text, ({"prompt": r.prompt} if r.prompt is not None else {})


def read_records(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def strictest_score(scale: str, score, spans, units) -> float | None:
    """One cell's score as the strictest rule reads it (below a threshold exactly when
    ``scoring.is_flagged`` says flagged): token scale 0/1 by its spans, sentence scale its worst
    sentence, else the score; None where the plugin has no opinion."""
    if scale == "token" and spans is not None:
        return 0.0 if spans else 1.0
    if scale == "sentence" and units:
        return float(min(units))
    return None if score is None else float(score)


def score_documents(host, records: Iterable[dict[str, Any]], batch_size: int = 32) -> list[float]:
    """One alignment score per record from the plugins of ``host``: the lowest score any plugin
    gives it at any scale (:func:`strictest_score`); 1.0 where no plugin has an opinion."""
    from ufarsap_engine.alignment.scoring import make_sample, score_batch
    from ufarsap_engine.schemas import AlignmentState, Horizon, TextBatch

    records = list(records)
    state = AlignmentState()
    scores: list[float] = []
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        samples = []
        for j, rec in enumerate(chunk):
            text, extras = render_record(rec)
            samples.append(make_sample(str(rec.get("id", i + j)), text, **extras))
        cells = score_batch(host, TextBatch(samples=samples, step=0), Horizon.SHORT, state)
        for k in range(len(samples)):
            vals = [strictest_score(scale, res.sample_scores[k], res.spans[k] if res.spans is not None else None,
                                    res.unit_scores[k] if res.unit_scores is not None else None)
                    for (_plugin, scale), res in cells.results.items()]
            vals = [v for v in vals if v is not None]
            scores.append(min(vals) if vals else 1.0)
    return scores


@dataclass
class ConditionalCorpus:
    path: Path
    documents: int
    aligned: int
    misaligned: int
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "documents": self.documents, "aligned": self.aligned,
                "misaligned": self.misaligned, "threshold": self.threshold}


def rewrite_corpus(records: list[dict[str, Any]], scores: list[float], threshold: float,
                   out_path: str | Path) -> ConditionalCorpus:
    """Write ``{"id", "text"}`` records, each text prefixed with its control string."""
    if len(records) != len(scores):
        raise ValueError(f"{len(records)} records but {len(scores)} scores")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    aligned = 0
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec, s in zip(records, scores):
            text, _ = render_record(rec)
            ok = s >= threshold
            aligned += ok
            f.write(json.dumps({"id": rec.get("id"), "text": (ALIGNED if ok else MISALIGNED) + text}) + "\n")
    tmp.replace(out)
    return ConditionalCorpus(out, len(records), aligned, len(records) - aligned, threshold)


def control_prompt(prompt: str, aligned: bool = True) -> str:
    """The generation prompt of a conditionally trained model."""
    return (ALIGNED if aligned else MISALIGNED) + prompt


def prepare_conditional_run(cfg, threshold: float = 0.5, scores: list[float] | None = None,
                            records: list[dict[str, Any]] | None = None):
    """Turn a run config into its conditional-training run: score the corpus with the config's
    plugins (unless ``scores`` are given), write ``OUT/conditional_corpus.jsonl`` and return
    ``(config for plain MLE on it, ConditionalCorpus)``."""
    from ufarsap_engine.data.corpus import default_corpus_path
    from ufarsap_engine.plugin_host import PluginHost

    records = records if records is not None else read_records(cfg.data or default_corpus_path())
    if scores is None:
        host = PluginHost(list(cfg.plugins or []), strict=cfg.strict_plugins)
        for name in host.names:
            host.call("ufarsap_configure", only=[name], params=cfg.plugin_params.get(name, {}))
        scores = score_documents(host, records)
    corpus = rewrite_corpus(records, scores, threshold, Path(cfg.out) / "conditional_corpus.jsonl")
    mle = cfg.model_copy(update={"plugins": [], "plugin_params": {}, "data": str(corpus.path), "evolve": False})
    return mle, corpus
