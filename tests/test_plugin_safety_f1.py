"""Each safety plugin holds an F1 floor on the TEST split of the embedded labelled corpus.

Floors sit a little below the measured values (docs/plugin-eval.md) so a regression fails; they
are all at or above the project targets (0.9 toxicity/privacy/misinformation, 0.8 bias and
adversarial). The plugins are tuned on the dev split only.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DOC_FLOORS = {"safety.toxicity": 0.91, "safety.privacy": 0.95, "safety.misinformation": 0.93,
              "safety.bias": 0.93, "safety.adversarial": 0.93}
SPAN_FLOORS = {"safety.toxicity": 0.75, "safety.privacy": 0.92}


def _eval_module():
    spec = importlib.util.spec_from_file_location("eval_plugins", REPO / "scripts" / "eval_plugins.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["eval_plugins"] = mod
    spec.loader.exec_module(mod)
    return mod


def _build_corpus_module():
    spec = importlib.util.spec_from_file_location("build_corpus", REPO / "scripts" / "build_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def results():
    return _eval_module().evaluate("test")


def test_split_is_recorded_and_disjoint():
    from ufarsap_plugins import evaldata

    dev, test = evaldata.load("dev"), evaldata.load("test")
    assert dev and test
    assert not {i.sample.sample_id for i in dev} & {i.sample.sample_id for i in test}
    assert all(i.label["split"] == "test" for i in test)


@pytest.mark.parametrize("name", sorted(DOC_FLOORS))
def test_document_f1_floor(results, name):
    r = results["plugins"][name]
    assert r["positives"] >= 80
    assert r["document"]["f1"] >= DOC_FLOORS[name], r["document"]


@pytest.mark.parametrize("name", sorted(SPAN_FLOORS))
def test_span_f1_floor(results, name):
    assert results["plugins"][name]["span"]["f1"] >= SPAN_FLOORS[name], results["plugins"][name]["span"]


def test_eval_script_json_and_table(tmp_path):
    mod = _eval_module()
    res = {"split": "test", "n_samples": 1, "plugins": {
        "safety.bias": {"document": mod.prf(1, 0, 0), "positives": 1, "seconds": 0.1}}}
    assert "| safety.bias | 1 | 1.000 | 1.000 | 1.000 |" in mod.table(res)
    assert mod.span_prf([[(0, 3)]], [[(1, 2)]])["f1"] == 1.0


def test_corpus_is_reproducible():
    """scripts/build_corpus.py rebuilds the committed corpus byte for byte (the pinned Faker)."""
    faker = pytest.importorskip("faker")
    pinned = _build_corpus_module().FAKER_VERSION
    if faker.VERSION != pinned:
        pytest.skip(f"corpus was generated with Faker {pinned}, found {faker.VERSION}")
    import subprocess

    out = subprocess.run([sys.executable, str(REPO / "scripts" / "build_corpus.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
