"""Shared pieces of the evolution tests: fake detector plugins and a tiny labelled corpus.

Each fake safety plugin catches one harm category by a marker word, so which plugins a
strategy runs decides, predictably, how much labelled harm it catches. ``reflect.fnoisy``
flags everything (adding it is harmful); ``self.fproposer`` proposes strategies, some invalid.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from helpers import make_plugin_dist

MARKERS = {"toxicity": "zorkword", "privacy": "pii@example", "misinformation": "moonischeese",
           "bias": "stereotypeclaim", "adversarial": "ignoreallrules"}
DETECTORS = {"safety.ftox": "toxicity", "safety.fpii": "privacy", "safety.fmis": "misinformation",
             "safety.fbias": "bias", "safety.fadv": "adversarial"}
ALL_SAFETY = sorted(DETECTORS)

FAKES = '''
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores, StrategyProposal

class _Detector:
    paradigm = "safety"
    marker = None

    def __init__(self):
        self.threshold = 0.5

    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm=self.paradigm, description="fake", scales=["document"], horizons=["short", "long"])

    @hookimpl
    def ufarsap_configure(self, params):
        unknown = set(params) - {"threshold"}
        if unknown:
            raise ValueError(f"unknown parameter(s): {sorted(unknown)}")
        self.threshold = params.get("threshold", 0.5)

    @hookimpl
    def ufarsap_score_document(self, batch):
        # a higher threshold makes the detector stricter: it then misses nothing but still
        # never flags clean text; below 0.2 it stops flagging at all
        return ScaleScores(sample_scores=[0.3 if (self.marker in s.text and self.threshold >= 0.2) else 0.9
                                          for s in batch.samples])

MARKERS = __MARKERS__
for _name, _cat in __DETECTORS__.items():
    _cls = type(_name.split(".")[1].capitalize(), (_Detector,), {"marker": MARKERS[_cat]})
    globals()[_cls.__name__] = _cls

class Fnoisy(_Detector):
    paradigm = "reflect"
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="reflect", description="flags everything", scales=["document"], horizons=["long"])
    @hookimpl
    def ufarsap_score_document(self, batch):
        return ScaleScores(sample_scores=[0.1 for _ in batch.samples])

class Fbroken(_Detector):
    @hookimpl
    def ufarsap_score_document(self, batch):
        raise RuntimeError("detector exploded")

class Fproposer:
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="self", description="proposes", scales=[], horizons=[])

    @hookimpl
    def ufarsap_propose_strategies(self, active_plugins, params, state):
        return [
            StrategyProposal(plugins=[*active_plugins, "safety.fbias"], params={"plugins": {"safety.fbias": {"threshold": 0.6}}},
                             rationale="bias is uncovered"),
            StrategyProposal(plugins=[*active_plugins, "safety.doesnotexist"], rationale="missing plugin"),
            StrategyProposal(plugins=list(active_plugins), params={"plugins": {"safety.ftox": {"threshold": 7}}},
                             rationale="out of range"),
            {"plugins": ["NotAName"], "params": {}},
        ]
'''


def fakes_source() -> str:
    return FAKES.replace("__MARKERS__", repr(MARKERS)).replace("__DETECTORS__", repr(DETECTORS))


def install_fakes(root: Path) -> Path:
    plugins = {name: f"evofakes:{name.split('.')[1].capitalize()}" for name in DETECTORS}
    plugins.update({"reflect.fnoisy": "evofakes:Fnoisy", "safety.fbroken": "evofakes:Fbroken",
                    "self.fproposer": "evofakes:Fproposer"})
    return make_plugin_dist(root, "evo-fakes", plugins, {"evofakes": fakes_source()})


def write_probe_corpus(folder: Path, bad_per_category: int = 6, clean: int = 30) -> tuple[Path, Path]:
    """corpus.jsonl + labels.jsonl with a dev and a test split (different wording)."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus, labels = [], []
    for split, lead in (("dev", "The river town"), ("test", "A quiet harbour")):
        for cat, marker in MARKERS.items():
            for i in range(bad_per_category):
                rid = f"{split}-{cat}-{i:03d}"
                corpus.append({"id": rid, "text": f"{lead} story {i}. It says {marker} here."})
                labels.append({"id": rid, "split": split, "kind": cat, **{c: int(c == cat) for c in MARKERS}})
        for i in range(clean):
            rid = f"{split}-clean-{i:03d}"
            corpus.append({"id": rid, "text": f"{lead} had {i} boats. Nothing else happened."})
            labels.append({"id": rid, "split": split, "kind": "clean" if i % 2 else "clean-neg",
                           **{c: 0 for c in MARKERS}})
    c, lab = folder / "corpus.jsonl", folder / "labels.jsonl"
    c.write_text("".join(json.dumps(r) + "\n" for r in corpus))
    lab.write_text("".join(json.dumps(r) + "\n" for r in labels))
    return c, lab


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Fake plugins installed on sys.path and a tiny labelled corpus; yields the corpus folder."""
    root = install_fakes(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    write_probe_corpus(tmp_path / "data")
    yield tmp_path / "data"
    sys.modules.pop("evofakes", None)


def probe_evaluator(data: Path, **kw):
    from ufarsap_engine.evolution import ProbeEvaluator, load_probe_set
    from ufarsap_engine.plugin_host import installed_plugins

    c = data / "corpus.jsonl"
    return ProbeEvaluator(load_probe_set("dev", corpus=c, per_category=6), load_probe_set("test", corpus=c, per_category=6),
                          installed=installed_plugins(), **kw)


def test_fake_corpus_is_balanced(fakes):
    from ufarsap_engine.evolution import load_probe_set

    probe = load_probe_set("dev", corpus=fakes / "corpus.jsonl", per_category=6)
    assert len(probe) == 60 and probe.labels.sum() == 30 and probe.bad.sum() == 30
    assert load_probe_set("test", corpus=fakes / "corpus.jsonl").key != probe.key
