"""Which dataset columns an annotation has, and how scoring results become column values.

Column names are ``PLUGIN:FIELD`` (``safety.toxicity:document``). Per plugin:
- ``PLUGIN:SCALE`` (float, null where the plugin has no opinion) for each scale it serves at the
  annotation horizon: the document score of that scale's hook;
- ``PLUGIN:sentence_units`` (list of floats) when it serves the sentence scale: one score per
  engine sentence, in the order of the shared ``sentences`` column ([start, end] offsets);
- ``PLUGIN:spans`` ([start, end] character offsets), ``PLUGIN:span_severity`` and
  ``PLUGIN:span_labels``: every span it flagged at any scale (duplicates merged, worst severity).
The shared columns are ``id``, ``text``, ``prompt``, ``messages``, ``content_hash``, ``sentences``.
"""

from __future__ import annotations

from typing import Any, Iterable

from ufarsap_engine.alignment.scoring import CellScores
from ufarsap_engine.schemas import SCALES, PluginInfo

#: Annotations are taken at the short horizon: the corpus is scored once, ahead of training.
HORIZON = "short"
BASE_COLUMNS = ("id", "text", "prompt", "messages", "content_hash", "sentences")
SPAN_FIELDS = ("spans", "span_severity", "span_labels")


def served_scales(info: PluginInfo) -> list[str]:
    """The scales a plugin serves at the annotation horizon, in the engine's scale order."""
    return [s for s in SCALES if info.serves(s, HORIZON)]


def plugin_columns(plugin: str, scales: Iterable[str]) -> list[str]:
    """The column names an annotation holds for ``plugin`` serving ``scales``."""
    scales = list(scales)
    cols = [f"{plugin}:{s}" for s in SCALES if s in scales]
    if "sentence" in scales:
        cols.append(f"{plugin}:sentence_units")
    return cols + [f"{plugin}:{f}" for f in SPAN_FIELDS]


def base_features():
    import datasets

    s = datasets.Value("string")
    return datasets.Features({
        "id": s, "text": s, "prompt": s,
        "messages": datasets.List({"role": s, "content": s}),
        "content_hash": s,
        "sentences": datasets.List(datasets.List(datasets.Value("int64"))),
    })


def plugin_features(plugin: str, scales: Iterable[str]):
    import datasets

    f64 = datasets.Value("float64")
    feats: dict[str, Any] = {}
    for col in plugin_columns(plugin, scales):
        field = col.rsplit(":", 1)[1]
        if field == "sentence_units" or field == "span_severity":
            feats[col] = datasets.List(f64)
        elif field == "spans":
            feats[col] = datasets.List(datasets.List(datasets.Value("int64")))
        elif field == "span_labels":
            feats[col] = datasets.List(datasets.Value("string"))
        else:
            feats[col] = f64
    return datasets.Features(feats)


def cells_to_columns(cells: CellScores, scales_of: dict[str, list[str]]) -> dict[str, dict[str, list]]:
    """Per plugin, its column values for the batch scored in ``cells`` (one entry per sample)."""
    n = len(cells.batch)
    out: dict[str, dict[str, list]] = {}
    for plugin, scales in scales_of.items():
        cols: dict[str, list] = {c: [None] * n for c in plugin_columns(plugin, scales)}
        merged: list[dict[tuple[int, int, str], float]] = [{} for _ in range(n)]
        for scale in scales:
            res = cells.results.get((plugin, scale))
            if res is None:
                continue
            cols[f"{plugin}:{scale}"] = list(res.sample_scores)
            if scale == "sentence" and res.unit_scores is not None:
                cols[f"{plugin}:sentence_units"] = [list(u) for u in res.unit_scores]
            for i, spans in enumerate(res.spans or []):
                for sp in spans:
                    key = (sp.start, sp.end, sp.label)
                    merged[i][key] = max(sp.severity, merged[i].get(key, 0.0))
        ordered = [sorted(m.items()) for m in merged]
        cols[f"{plugin}:spans"] = [[[s, e] for (s, e, _), _ in o] for o in ordered]
        cols[f"{plugin}:span_severity"] = [[v for _, v in o] for o in ordered]
        cols[f"{plugin}:span_labels"] = [[lab for (_, _, lab), _ in o] for o in ordered]
        out[plugin] = cols
    return out
